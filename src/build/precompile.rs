//! Filling the node's AOT cache ahead of a module's first start, so that the first container of
//! a large module (a Go program, the Python or JavaScript runtime) starts from compiled code
//! instead of compiling for seconds to minutes. The runner binary does the compiling: it links
//! WasmEdge (this one does not) and keys the cache as the shim does.
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use containerd_shim_wasmedge::engine::PRECOMPILE_ARG;
use containerd_shim_wasmedge::launch::runner::Runner;
use containerd_shim_wasmedge::protocol::RUNNER_BIN;

use super::Built;

/// Compiles `modules` into the AOT cache at `aot_dir` (default: the shim's).
pub fn precompile(modules: &[PathBuf], aot_dir: Option<&Path>) -> Result<()> {
    let runner = runner();
    let mut cmd = runner.command([PRECOMPILE_ARG]);
    if let Some(dir) = aot_dir {
        cmd.arg("--aot-dir").arg(dir);
    }
    let status = cmd.args(modules).status().with_context(|| format!("running {}", runner.program.display()))?;
    if !status.success() {
        bail!("precompiling failed ({status})");
    }
    Ok(())
}

/// Compiles the module a built image starts (its entrypoint's first word).
pub fn precompile_built(built: &Built, aot_dir: Option<&Path>) -> Result<()> {
    let entry = built.compiled.entrypoint.first().context("the image has no entrypoint to precompile")?;
    let module = match built.compiled.files.iter().find(|f| &f.path == entry) {
        Some(file) => file.data.clone(),
        None => from_layers(built, entry)?,
    };
    let tmp = tempfile::Builder::new().prefix("wasmedge-image-").suffix(".wasm").tempfile()?;
    std::fs::write(tmp.path(), module)?;
    precompile(&[tmp.path().to_path_buf()], aot_dir)
}

/// `path` from the image's base layers (a language runtime), the top one first.
fn from_layers(built: &Built, path: &str) -> Result<Vec<u8>> {
    let wanted = Path::new(path.trim_start_matches('/'));
    for layer in built.image.base_layers.iter().rev() {
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(layer.blob.data.as_slice()));
        for entry in tar.entries()? {
            let mut entry = entry?;
            if entry.path()?.as_ref() == wanted {
                let mut data = Vec::new();
                entry.read_to_end(&mut data)?;
                return Ok(data);
            }
        }
    }
    bail!("{path} is in none of the image's layers")
}

/// The runner next to this binary (as installed), else on PATH.
fn runner() -> Runner {
    Runner::beside_self().unwrap_or_else(|_| Runner { program: RUNNER_BIN.into(), prefix_args: Vec::new() })
}
