//! The process of one container (`containerd-wasmedge-init init`) or of an exec process inside a
//! running container (`containerd-wasmedge-init exec`), or the node's zygote that forks them
//! (`containerd-wasmedge-init zygote`), started by the shim. It is the only binary that links
//! WasmEdge.
use containerd_shim_wasmedge::container;

fn main() {
    match std::env::args_os().nth(1) {
        Some(a) if a == container::INIT_ARG => container::init::main(),
        Some(a) if a == container::exec::EXEC_ARG => container::exec::main(),
        Some(a) if a == container::zygote::ZYGOTE_ARG => container::zygote::main(),
        _ => {
            eprintln!("{}: started by containerd-shim-wasmedge-v1, not by hand", container::RUNNER_BIN);
            std::process::exit(2)
        }
    }
}
