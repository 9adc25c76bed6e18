//! WasmEdge: load a WASI module (from the AOT cache when it can), run its `_start`, and turn
//! the outcome into an exit code.
//!
//! Only the container-process binary links WasmEdge (feature `engine`): the shim and
//! `wasmedge-image` use the plan types here ([`EngineOptions`], [`Limits`], [`WasiContext`]) and
//! are built without it, as static binaries.
#[cfg(feature = "engine")]
pub mod aot;
#[cfg(feature = "engine")]
mod depth;
mod exit;
mod limits;
#[cfg(feature = "engine")]
mod vm;
mod wasi;

pub use exit::{exit_now, ExitCode, OUT_OF_MEMORY_NOTICE};
pub use limits::Limits;
#[cfg(feature = "engine")]
pub use vm::{linked_version, prepare, run, Failure, Prepared};
pub use wasi::WasiContext;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Where compiled modules are kept unless the runtime options say otherwise, and their bound.
pub const DEFAULT_AOT_DIR: &str = "/var/lib/containerd-shim-wasmedge/aot";
pub const DEFAULT_AOT_MAX_BYTES: u64 = 2 << 30;

/// The runner's argument for filling the AOT cache ahead of the first start:
/// `containerd-wasmedge-init precompile [--aot-dir DIR] MODULE...` (what `wasmedge-image
/// precompile` and `build --precompile` run).
pub const PRECOMPILE_ARG: &str = "precompile";

/// How the engine runs a container's module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineOptions {
    /// Where compiled modules are kept; `None` runs every module in the interpreter.
    pub aot_dir: Option<PathBuf>,
    pub aot_max_bytes: u64,
    pub compile: CompileOptions,
    pub limits: Limits,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            aot_dir: Some(DEFAULT_AOT_DIR.into()),
            aot_max_bytes: DEFAULT_AOT_MAX_BYTES,
            compile: CompileOptions::default(),
            limits: Limits::default(),
        }
    }
}

/// The compile sandbox's bounds, and what a compile that fails (or hits one) means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompileOptions {
    pub memory_bytes: u64,
    pub timeout: Duration,
    /// Run the module in the interpreter; otherwise the container fails (exit 126).
    pub interpret_on_failure: bool,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions { memory_bytes: 4 << 30, timeout: Duration::from_secs(900), interpret_on_failure: true }
    }
}

