//! The process of one container (`containerd-wasmedge-init init`) or of an exec process inside a
//! running container (`containerd-wasmedge-init exec`), or the node's zygote that forks them
//! (`containerd-wasmedge-init zygote`), started by the shim; or it fills the AOT cache ahead of a
//! module's first start (`containerd-wasmedge-init precompile`). It is the only binary that
//! links WasmEdge.
use containerd_shim_wasmedge::{container, engine, version};

fn main() {
    match std::env::args_os().nth(1) {
        Some(a) if a == container::INIT_ARG => container::init::main(),
        Some(a) if a == container::exec::EXEC_ARG => container::exec::main(),
        Some(a) if a == container::zygote::ZYGOTE_ARG => container::zygote::main(),
        Some(a) if a == "--version" => {
            print!("{}", version::text(container::RUNNER_BIN, Some(&engine::linked_version())));
        }
        Some(a) if a == engine::PRECOMPILE_ARG => container::compile::precompile_main(&std::env::args().skip(2).collect::<Vec<_>>()),
        _ => {
            eprintln!("{}: started by containerd-shim-wasmedge-v1, not by hand", container::RUNNER_BIN);
            std::process::exit(2)
        }
    }
}
