//! AssemblyScript → wasm32 WASI with `asc` and `@assemblyscript/wasi-shim`, both from npm at the
//! pinned versions ([`super::pins`]), run by the host's node. The shim's configuration is the
//! helper's: a project's `asconfig.json` gives its `entries` (else `assembly/index.ts`), and
//! `--compiler-arg` adds asc options.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::util::{run_tool, stdout_of, which};
use super::{module_at_app_wasm, pins, Compiled, Dirs, Source, Toolchain};
use containerd_shim_wasmedge::progress::Progress;

/// The pinned asc and shim, and node's version.
pub fn toolchain(dirs: &Dirs) -> Result<Toolchain> {
    if which("node").is_none() || pins::npm_tools(dirs).is_none() {
        bail!("AssemblyScript needs node and the pinned asc: run `wasmedge-image toolchains assemblyscript`");
    }
    let node = stdout_of(Command::new("node").arg("--version"))?;
    Ok(Toolchain {
        version: format!(
            "assemblyscript {}, wasi-shim {}, node {node}",
            pins::npm_version("assemblyscript")?,
            pins::npm_version("@assemblyscript/wasi-shim")?
        ),
        base_layers: vec![],
    })
}

/// The entry files of a project: its asconfig.json's `entries`, else `assembly/index.ts`.
fn entries(dir: &Path) -> Result<Vec<String>> {
    let config = dir.join("asconfig.json");
    if config.exists() {
        let text = fs::read_to_string(&config).context("reading asconfig.json")?;
        let json: serde_json::Value = serde_json::from_str(&text).context("parsing asconfig.json")?;
        let listed: Vec<String> =
            json["entries"].as_array().into_iter().flatten().filter_map(|e| e.as_str().map(String::from)).collect();
        if !listed.is_empty() {
            return Ok(listed);
        }
    }
    if dir.join("assembly/index.ts").is_file() {
        return Ok(vec!["assembly/index.ts".into()]);
    }
    bail!("{}: no entry (asconfig.json entries, or assembly/index.ts)", dir.display())
}

pub fn compile(src: &Source, args: &[String], dirs: &Dirs, work: &Path) -> Result<Compiled> {
    let modules = pins::npm_tools(dirs).context("run `wasmedge-image toolchains assemblyscript`")?;
    let entries = if src.is_file { vec![src.path.clone()] } else { entries(&src.path)?.iter().map(|e| src.path.join(e)).collect() };
    for entry in &entries {
        if !entry.is_file() {
            bail!("{}: no such entry file", entry.display());
        }
    }
    let out = work.join("app.wasm");
    let compiling = Progress::step("asc (AssemblyScript → wasm32 WASI, optimized)");
    // asc joins library paths to its base directory even when absolute: run it from `/`, with
    // every path absolute.
    run_tool(
        Command::new("node")
            .arg(modules.join("assemblyscript/bin/asc.js"))
            .args(&entries)
            .arg("--config")
            .arg(modules.join("@assemblyscript/wasi-shim/asconfig.json"))
            .args(["--optimize", "--noColors", "-o"])
            .arg(&out)
            .args(args)
            .current_dir("/"),
        "asc",
    )?;
    compiling.finish();
    Ok(module_at_app_wasm(fs::read(&out).with_context(|| format!("asc wrote no {}", out.display()))?))
}
