//! WasmEdge: load a WASI module, run its `_start`, and turn the outcome into an exit code.
mod exit;
mod wasi;

pub use exit::ExitCode;
pub use wasi::WasiContext;

use std::collections::HashMap;
use wasmedge_sdk::{
    config::{CommonConfigOptions, ConfigBuilder},
    error::{CoreCommonError, CoreError, WasmEdgeError},
    params, vm::SyncInst, LogManager, Module, Store, Vm,
};

/// Why a module did not run to its own exit; each maps to a documented exit code.
#[derive(Debug)]
pub enum Failure {
    /// The bytes are not a module WasmEdge accepts, or it cannot be instantiated.
    Load(String),
    /// The module trapped while running.
    Trap(String),
}

impl Failure {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Load(_) => ExitCode::LOAD_ERROR,
            Failure::Trap(_) => ExitCode::TRAP,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Load(e) => write!(f, "cannot load module: {e}"),
            Failure::Trap(e) => write!(f, "module trapped: {e}"),
        }
    }
}

/// Runs a WASI command module to completion in this process and returns its exit code.
pub fn run(module: &[u8], wasi: &WasiContext) -> Result<ExitCode, Failure> {
    // WasmEdge logs errors over several lines on the container's stderr; the caller prints one
    // line instead. RUST_LOG=debug brings WasmEdge's own log back for debugging.
    if std::env::var("RUST_LOG").is_ok_and(|v| v.contains("debug")) {
        LogManager::log_debug_info();
    } else {
        LogManager::log_off();
    }
    let config = ConfigBuilder::new(CommonConfigOptions::default())
        .build()
        .map_err(|e| Failure::Load(e.to_string()))?;
    let module = Module::from_bytes(Some(&config), module).map_err(|e| Failure::Load(e.to_string()))?;

    let mut wasi_module = wasi.create_module().map_err(|e| Failure::Load(format!("{e:#}")))?;
    let outcome = {
        let mut instances: HashMap<String, &mut dyn SyncInst> = HashMap::new();
        instances.insert(wasi_module.name().to_string(), wasi_module.as_mut());
        let store = Store::new(Some(&config), instances).map_err(|e| Failure::Load(e.to_string()))?;
        let mut vm = Vm::new(store);
        vm.register_module(None, module).map_err(|e| Failure::Load(e.to_string()))?;
        vm.run_func(None, "_start", params!())
    };
    // proc_exit ends `_start` early ("terminated", which WasmEdge may count as success); the
    // WASI module keeps the code, 0 when `_start` returned by itself.
    match outcome {
        Ok(_) => Ok(ExitCode::from_wasi(wasi_module.exit_code())),
        Err(e) if *e == WasmEdgeError::Core(CoreError::Common(CoreCommonError::Terminated)) => {
            Ok(ExitCode::from_wasi(wasi_module.exit_code()))
        }
        Err(e) if matches!(*e, WasmEdgeError::Core(CoreError::Common(CoreCommonError::FuncNotFound))) => {
            Err(Failure::Load("the module exports no `_start` function".into()))
        }
        Err(e) => Err(Failure::Trap(e.to_string())),
    }
}
