//! The shim binary containerd starts for `io.containerd.wasmedge.v1`. The same binary, started as
//! `containerd-shim-wasmedge-v1 init`, is the process of one container.
fn main() {
    if std::env::args_os().nth(1).is_some_and(|a| a == containerd_shim_wasmedge::container::INIT_ARG) {
        containerd_shim_wasmedge::container::init::main();
    }
    containerd_shim_wasmedge::shim::run();
}
