//! The shim binary containerd starts for `io.containerd.wasmedge.v1`. It does not link WasmEdge:
//! containerd starts it twice per shim, and loading WasmEdge (and LLVM) would cost each start
//! tens of milliseconds. Containers run in `containerd-wasmedge-init`.
use containerd_shim_wasmedge::{shim, version};

fn main() {
    if version::asked() {
        print!("{}", version::text("containerd-shim-wasmedge-v1", None));
        return;
    }
    shim::run();
}
