//! The process of one container (`containerd-wasmedge-init init`) or of an exec process inside a
//! running container (`containerd-wasmedge-init exec`), or the node's zygote that forks them
//! (`containerd-wasmedge-init zygote`), started by the shim; or it compiles a container's AOT
//! cache miss for the shim (`compile`), or fills the cache ahead of a module's first start
//! (`containerd-wasmedge-init precompile`). It is the only binary that links WasmEdge.
use containerd_shim_wasmedge::protocol::{COMPILE_ARG, EXEC_ARG, INIT_ARG, RUNNER_BIN, ZYGOTE_ARG};
use containerd_shim_wasmedge::{engine, process, version};

fn main() {
    match std::env::args_os().nth(1) {
        Some(a) if a == INIT_ARG => process::init::main(),
        Some(a) if a == EXEC_ARG => process::exec::main(),
        Some(a) if a == ZYGOTE_ARG => process::zygote::main(),
        Some(a) if a == "--version" => {
            print!("{}", version::text(RUNNER_BIN, Some(&engine::linked_version())));
        }
        Some(a) if a == COMPILE_ARG => process::compile::compile_main(&std::env::args().skip(2).collect::<Vec<_>>()),
        Some(a) if a == engine::PRECOMPILE_ARG => process::compile::precompile_main(&std::env::args().skip(2).collect::<Vec<_>>()),
        _ => {
            eprintln!("{}: started by containerd-shim-wasmedge-v1, not by hand", RUNNER_BIN);
            std::process::exit(2)
        }
    }
}
