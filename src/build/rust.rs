//! Rust → wasm32-wasip1: `cargo build --release` for a crate, `rustc` for a single file.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::util::{run_tool, stdout_of, which};
use super::{module_at_app_wasm, Compiled, Dirs, Source, Toolchain};

pub const TARGET: &str = "wasm32-wasip1";

/// `rustc -vV`, after checking that the wasm32-wasip1 standard library is installed.
pub fn toolchain() -> Result<Toolchain> {
    if which("rustc").is_none() || which("cargo").is_none() {
        bail!("rustc and cargo are not on PATH: run `wasmedge-image toolchains rust`");
    }
    if !target_installed()? {
        bail!("the Rust target {TARGET} is not installed: run `wasmedge-image toolchains rust` (or `rustup target add {TARGET}`)");
    }
    Ok(Toolchain { version: stdout_of(Command::new("rustc").arg("-vV"))?, base_layers: vec![] })
}

/// Does rustc have the standard library for wasm32-wasip1?
pub fn target_installed() -> Result<bool> {
    let libdir = stdout_of(Command::new("rustc").args(["--print", "target-libdir", "--target", TARGET]))?;
    Ok(fs::read_dir(&libdir).is_ok_and(|mut d| {
        d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libstd-")))
    }))
}

pub fn compile(src: &Source, args: &[String], dirs: &Dirs, work: &Path) -> Result<Compiled> {
    if src.is_file {
        return compile_file(src, args, work);
    }
    let manifest = src.path.join("Cargo.toml");
    if !manifest.exists() {
        bail!("{} has no Cargo.toml; give a crate directory or a .rs file", src.path.display());
    }
    // One target directory for every crate: dependencies compiled once serve every build.
    let target_dir = dirs.toolchains.join("cargo-target");
    let mut cmd = Command::new("cargo");
    cmd.args(["build", "--release", "--target", TARGET, "--message-format", "json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .args(args)
        .current_dir(&src.path)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // stdout is cargo's JSON (artifact paths); diagnostics are rendered on stderr as usual.
    let out = cmd.output().context("cannot run cargo")?;
    if !out.status.success() {
        bail!("cargo build failed ({})", out.status);
    }
    let mut modules = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        if let Some(exe) = msg["executable"].as_str().filter(|e| e.ends_with(".wasm")) {
            let name = msg["target"]["name"].as_str().unwrap_or("").to_string();
            modules.push((name, exe.to_string()));
        }
    }
    let module = match &modules[..] {
        [] => bail!("cargo built no binary for {TARGET} (does the crate have a main.rs or a [[bin]]?)"),
        [(_, exe)] => exe.clone(),
        several => bail!(
            "the crate has several binaries ({}); pick one with --compiler-arg=--bin=NAME",
            several.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
        ),
    };
    let data = fs::read(&module).with_context(|| format!("reading {module}"))?;
    Ok(module_at_app_wasm(data))
}

fn compile_file(src: &Source, args: &[String], work: &Path) -> Result<Compiled> {
    let out = work.join("app.wasm");
    let name = src.path.file_name().unwrap();
    run_tool(
        Command::new("rustc")
            .args(["--edition", "2021", "--target", TARGET, "-C", "opt-level=s", "-C", "strip=symbols"])
            .arg("--crate-name")
            .arg(crate_name(&src.path))
            .arg("-o")
            .arg(&out)
            .args(args)
            .arg(name)
            .current_dir(src.dir()),
        "rustc",
    )?;
    Ok(module_at_app_wasm(fs::read(&out)?))
}

/// A crate name rustc accepts, from the file name.
fn crate_name(path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("app_{name}")
    } else {
        name
    }
}
