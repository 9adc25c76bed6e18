//! Inside a container: the code of the container-process binary (`containerd-wasmedge-init`),
//! the only one that links WasmEdge.
//!
//! Each process confines itself before it touches its module, in this order: namespaces, mounts
//! by fd ([`mounts`]), the cgroup, pivot_root, then rlimits, user, capabilities, no_new_privs and
//! seccomp ([`security`]), and the time limit; only then is the module read, compiled (a cache
//! miss by the sandbox of [`compile`]) and run ([`module`]). [`init`] is a container's first
//! process, [`exec`] one started into it, [`zygote`] forks both from a warm image. [`report`]
//! sends log lines and spans to the shim.
use crate::engine::{self, ExitCode, Failure};
use std::io::Write;
use std::path::PathBuf;

pub mod compile;
pub mod exec;
pub mod init;
pub mod module;
pub mod mounts;
pub mod report;
pub mod security;
pub mod zygote;

/// Why a container process ends without its module's own exit code.
pub enum ProcessError {
    Setup(anyhow::Error),
    NotFound(PathBuf),
    Unreadable(PathBuf, std::io::Error),
    Module(Failure),
}

impl ProcessError {
    fn exit_code(&self) -> ExitCode {
        match self {
            ProcessError::Setup(_) => ExitCode::SETUP_ERROR,
            ProcessError::NotFound(_) => ExitCode::NOT_FOUND,
            ProcessError::Unreadable(..) => ExitCode::LOAD_ERROR,
            ProcessError::Module(f) => f.exit_code(),
        }
    }

    /// `kind` names the process in setup failures: `container` or `exec`.
    fn message(&self, kind: &str) -> String {
        match self {
            ProcessError::Setup(e) => format!("{kind} setup failed: {e:#}"),
            ProcessError::NotFound(p) => format!("entrypoint {} not found in the container", p.display()),
            ProcessError::Unreadable(p, e) => format!("cannot read entrypoint {}: {e}", p.display()),
            ProcessError::Module(e) => e.to_string(),
        }
    }
}

/// Ends the process with the outcome of its run: the module's exit code, or one of the
/// documented codes with a one-line reason on the process's stderr.
pub fn finish(kind: &str, outcome: Result<ExitCode, ProcessError>) -> ! {
    let code = outcome.unwrap_or_else(|e| {
        let _ = writeln!(std::io::stderr(), "wasmedge: {}", e.message(kind).replace('\n', " "));
        e.exit_code()
    });
    engine::exit_now(code)
}
