//! A container process's module: read through the container's own root, its compiled form taken
//! from the AOT cache (or the compile sandbox on a miss), and loaded into WasmEdge.
use super::compile::Aot;
use super::ProcessError;
use crate::engine::aot::Outcome;
use crate::engine::{self, Failure, Limits, Prepared};
use crate::trace::{self, Span};
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::SystemTime;

/// Reads the module at `path` inside `root`, gets its compiled form (`aot`: the AOT cache, or
/// a compile in the sandbox on a miss) and loads it into WasmEdge: the `load` span. Only a
/// confined process calls this; `aot` was opened before.
pub fn load(root: &File, path: &Path, aot: Option<Aot>, limits: &Limits) -> Result<Prepared, ProcessError> {
    let start = SystemTime::now();
    let module = read_module(root, path)?;
    let (compiled, how) = match aot {
        None => (None, "off"),
        Some(mut aot) => match aot.compiled(&module) {
            Ok((bytes, Outcome::Hit)) => (Some(bytes), "hit"),
            Ok((bytes, Outcome::Compiled)) => (Some(bytes), "compiled"),
            // An invalid module fails to compile too: the interpreter's loader says why.
            Err(e) if aot.interpret_on_failure => {
                log::warn!("AOT compile failed, running in the interpreter: {e:#}");
                (None, "failed")
            }
            Err(e) => return Err(ProcessError::Module(Failure::Load(format!("AOT compile failed: {e:#}")))),
        },
    };
    let prepared = engine::prepare(&module, compiled.as_deref(), how, limits).map_err(ProcessError::Module)?;
    trace::report(Span::since("load", start).with("aot", prepared.aot()).with("bytes", module.len()));
    Ok(prepared)
}

/// Reads the module at `path` inside `root`: symlinks in the image resolve within it, never to a
/// host file.
fn read_module(root: &File, path: &Path) -> Result<Vec<u8>, ProcessError> {
    let how = OpenHow::new().flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC).resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let read = openat2(root, path.strip_prefix("/").unwrap_or(path), how).map_err(std::io::Error::from).and_then(|fd| {
        let mut bytes = Vec::new();
        File::from(fd).read_to_end(&mut bytes).map(|_| bytes)
    });
    read.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ProcessError::NotFound(path.to_path_buf()),
        _ => ProcessError::Unreadable(path.to_path_buf(), e),
    })
}
