//! WasmEdge itself: a module loaded (from the AOT cache when it can) and run to its exit code.
use super::{depth, ExitCode, Limits, WasiContext, OUT_OF_MEMORY_NOTICE};
use crate::trace::{self, Span};
use std::collections::HashMap;
use std::time::SystemTime;
use wasmedge_sdk::{
    config::{CommonConfigOptions, Config, ConfigBuilder, RuntimeConfigOptions},
    error::{CoreCommonError, CoreError, CoreExecutionError, WasmEdgeError},
    params, vm::SyncInst, AsInstance, LogManager, Module, RunMode, Store, Vm,
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

fn load_error(e: impl std::fmt::Display) -> Failure {
    Failure::Load(e.to_string())
}

/// A module loaded and ready to instantiate.
pub struct Prepared {
    module: Module,
    config: Config,
    aot: &'static str,
}

impl Prepared {
    /// Where its code comes from: `hit` or `compiled` (AOT cache), `off` or `failed` (the
    /// interpreter).
    pub fn aot(&self) -> &'static str {
        self.aot
    }
}

/// Loads a module: its compiled form from the AOT cache when there is one (`aot` is `hit` or
/// `compiled`), else in the interpreter (`aot` is `off`, or `failed` when the compile failed).
/// Invalid modules fail here. Parsing the module starts here: the process must be confined.
pub fn prepare(module: &[u8], compiled: Option<&[u8]>, aot: &'static str, limits: &Limits) -> Result<Prepared, Failure> {
    quiet_wasmedge_log();
    let mut aot = aot;
    if let Some(compiled) = compiled {
        // Since WasmEdge 0.17 compiled code runs only in AOT mode; other modes ignore it.
        let config = config(limits, RunMode::Aot)?;
        match Module::from_bytes(Some(&config), compiled) {
            Ok(module) => return Ok(Prepared { module, config, aot }),
            Err(e) => {
                log::warn!("cannot load the compiled module, running in the interpreter: {e}");
                aot = "failed";
            }
        }
    }
    let config = config(limits, RunMode::Interpreter)?;
    // What the bound cannot parse goes to WasmEdge as it is, whose loader says what is wrong.
    let bounded = depth::bound(module).inspect_err(|e| log::warn!("running the module unbounded: {e:#}"));
    let module = Module::from_bytes(Some(&config), bounded.as_deref().unwrap_or(module)).map_err(load_error)?;
    Ok(Prepared { module, config, aot })
}

fn config(limits: &Limits, mode: RunMode) -> Result<Config, Failure> {
    let mut runtime = RuntimeConfigOptions::default();
    if let Some(pages) = limits.max_memory_pages {
        runtime = runtime.max_memory_pages(pages);
    }
    ConfigBuilder::new(CommonConfigOptions::default().run_mode(mode))
        .with_runtime_config(runtime)
        .build()
        .map_err(load_error)
}

/// WasmEdge logs errors over several lines on the container's stderr; the caller prints one
/// line instead. RUST_LOG=debug brings WasmEdge's own log back for debugging.
pub(super) fn quiet_wasmedge_log() {
    if std::env::var("RUST_LOG").is_ok_and(|v| v.contains("debug")) {
        LogManager::log_debug_info();
    } else {
        LogManager::log_off();
    }
}

/// Runs a prepared WASI command module to completion in this process; returns its exit code.
/// Reports the `instantiate` and `run` spans.
pub fn run(prepared: Prepared, wasi: &WasiContext) -> Result<ExitCode, Failure> {
    let start = SystemTime::now();
    let Prepared { module, config, .. } = prepared;
    if module.get_export("_start").is_none() {
        return Err(Failure::Load("the module exports no `_start` function".into()));
    }
    let mut wasi_module = wasi.create_module().map_err(|e| Failure::Load(format!("{e:#}")))?;
    let (outcome, calls) = {
        let mut instances: HashMap<String, &mut dyn SyncInst> = HashMap::new();
        instances.insert(wasi_module.name().to_string(), wasi_module.as_mut());
        let store = Store::new(Some(&config), instances).map_err(load_error)?;
        let mut vm = Vm::new(store);
        vm.register_module(None, module).map_err(load_error)?;
        trace::report(Span::since("instantiate", start));
        // What loading left free on the heap (the module's bytes, its compiled form, the
        // loader's tables) goes back to the kernel: a container's own pages are its memory cost.
        #[cfg(target_env = "gnu")]
        unsafe {
            libc::malloc_trim(0)
        };
        let start = SystemTime::now();
        let outcome = vm.run_func(None, "_start", params!());
        trace::report(Span::since("run", start));
        let global = |name: &str| vm.active_module().and_then(|m| m.get_global(name).ok()).map(|g| g.get_value().to_i32());
        if global(depth::REFUSED_EXPORT) == Some(1) {
            let notice = format!("{OUT_OF_MEMORY_NOTICE}the module's memory may not grow past its limit\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), notice.as_bytes());
        }
        (outcome, global(depth::EXPORT))
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
        // `unreachable` with the counter at the bound is the bound's trap (see depth.rs).
        Err(e) if *e == WasmEdgeError::Core(CoreError::Execution(CoreExecutionError::Unreachable))
            && calls == Some(depth::MAX_DEPTH) =>
        {
            Err(Failure::Trap(format!("call stack exhausted: more than {} nested calls", depth::MAX_DEPTH)))
        }
        Err(e) => Err(Failure::Trap(e.to_string())),
    }
}

/// The version of the libwasmedge this process loaded.
pub fn linked_version() -> String {
    wasmedge_sdk::utils::CoreVersion::version_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `module` in AOT code and in the interpreter, on a thread with a container's 8 MiB
    /// stack (test threads have 2 MiB).
    fn run_both(module: &[u8]) -> Vec<String> {
        let scratch = tempfile::tempdir().unwrap();
        let module = module.to_vec();
        let scratch_path = scratch.path().to_path_buf();
        std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn(move || {
                let compiled = super::super::aot::compile(&module, &scratch_path).unwrap();
                [Some(compiled), None]
                    .into_iter()
                    .map(|compiled| {
                        let how = if compiled.is_some() { "compiled" } else { "off" };
                        let wasi = WasiContext { args: vec!["m".into()], env: vec![], preopens: vec![] };
                        let prepared = prepare(&module, compiled.as_deref(), how, &Limits::default());
                        match prepared.inspect(|p| assert_eq!(p.aot(), how, "not loaded as {how}")).and_then(|p| run(p, &wasi)) {
                            Ok(code) => format!("exit {}", code.0),
                            Err(e) => format!("{} {e}", e.exit_code().0),
                        }
                    })
                    .collect()
            })
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn unbounded_recursion_traps_in_aot_code_and_the_interpreter() {
        let exhausted = format!("134 module trapped: call stack exhausted: more than {} nested calls", depth::MAX_DEPTH);
        // A self tail call, which LLVM would otherwise turn into a jump, and real recursion.
        let tail = wat::parse_str(r#"(module (func $f (export "_start") call $f))"#).unwrap();
        assert_eq!(run_both(&tail), [exhausted.clone(), exhausted.clone()]);
        let deep = wat::parse_str(
            r#"(module (global $g (mut i32) (i32.const 0))
                 (func $f (param i32) (call $f (i32.add (local.get 0) (i32.const 1))) (global.set $g (local.get 0)))
                 (func (export "_start") (call $f (i32.const 0))))"#,
        )
        .unwrap();
        assert_eq!(run_both(&deep), [exhausted.clone(), exhausted]);
    }

    #[test]
    fn recursion_within_the_bound_runs() {
        let module = format!(
            r#"(module (func $f (param i32) (br_if 0 (i32.eqz (local.get 0))) (call $f (i32.sub (local.get 0) (i32.const 1))))
                 (func (export "_start") (call $f (i32.const {}))))"#,
            depth::MAX_DEPTH - 1
        );
        assert_eq!(run_both(&wat::parse_str(module).unwrap()), ["exit 0", "exit 0"]);
    }
}
