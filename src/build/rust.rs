//! Rust → wasm32-wasip1: `cargo build --release` for a crate (in the build sandbox: it runs
//! build scripts and proc macros), `rustc` for a single file (which runs no package code, and
//! runs in the sandbox only with `--sandbox`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::sandbox::{self, Step};
use super::util::{progress, run_tool, stdout_of, which, Hasher};
use containerd_shim_wasmedge::progress::Progress;
use super::{module_at_app_wasm, Compiled, Dirs, Sandbox, Source, Toolchain};

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

pub fn compile(src: &Source, compiler_args: &[String], sandbox: Sandbox, dirs: &Dirs, work: &Path) -> Result<Compiled> {
    if src.is_file {
        return compile_file(src, compiler_args, work);
    }
    // Dependencies come from crates.io by `cargo fetch`, which runs no package code (inside the
    // sandbox it already ran, before). The build runs build scripts and proc macros: in the
    // build sandbox, which reads the crate and the toolchains and writes only the crate's
    // target directory, with no network; or, with --no-sandbox, on this host, offline and
    // without network where a namespace can be made.
    let manifest = manifest(src)?;
    if sandbox != Sandbox::Inside {
        fetch(&manifest)?;
    }
    let crate_dir = src.path.clone();
    let target_dir = target_dir(src, dirs)?;
    let mut args: Vec<String> = ["build", "--offline", "--locked", "--release", "--target", TARGET, "--message-format", "json-render-diagnostics"]
        .map(String::from)
        .to_vec();
    args.extend(["--manifest-path".into(), manifest.to_string_lossy().into_owned()]);
    args.extend(["--target-dir".into(), target_dir.to_string_lossy().into_owned()]);
    args.extend(compiler_args.iter().cloned());
    // stdout is cargo's JSON (artifact paths); diagnostics are rendered on stderr as usual.
    let out = match sandbox {
        Sandbox::PackageCode | Sandbox::Compile => {
            let building = Progress::step("cargo build (offline, in the build sandbox)");
            let step = Step {
                args: [vec!["cargo".to_string()], args].concat(),
                cwd: crate_dir.clone(),
                home: None,
                read_only: vec![crate_dir.clone()],
                writable: vec![target_dir.clone()],
            };
            let out = sandbox::output(step, dirs)?;
            building.finish();
            out
        }
        Sandbox::Off | Sandbox::Inside => {
            let building = Progress::step("cargo build (offline)");
            // Inside the sandbox there is no network to cut off.
            let mut cargo = if sandbox == Sandbox::Off { without_network("cargo") } else { Command::new("cargo") };
            let out = cargo
                .args(&args)
                .current_dir(&crate_dir)
                .env_remove("CARGO_TARGET_DIR")
                .env_remove("CARGO_BUILD_TARGET")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .output()
                .context("cannot run cargo")?;
            building.finish();
            out
        }
    };
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
    // The path comes from a process that ran package code: only a file in the target
    // directory is taken, never one a link or a forged message points at.
    let real = fs::canonicalize(&module).with_context(|| format!("reading {module}"))?;
    if !real.starts_with(fs::canonicalize(&target_dir)?) || !fs::symlink_metadata(&real)?.is_file() {
        bail!("cargo named {module} as the module, which is not a file of the target directory {}", target_dir.display());
    }
    let data = fs::read(&real).with_context(|| format!("reading {module}"))?;
    Ok(module_at_app_wasm(data))
}

/// A crate's `Cargo.toml`.
pub fn manifest(src: &Source) -> Result<PathBuf> {
    let manifest = src.path.join("Cargo.toml");
    if !manifest.exists() {
        bail!("{} has no Cargo.toml; give a crate directory or a .rs file", src.path.display());
    }
    Ok(manifest)
}

/// `cargo fetch` of a crate's dependencies, on this host: the build sandbox has no network.
pub fn fetch(manifest: &Path) -> Result<()> {
    let locked = manifest.with_file_name("Cargo.lock").exists();
    let fetching = Progress::step("cargo fetch (crates.io)");
    run_tool(
        Command::new("cargo").arg("fetch").args(locked.then_some("--locked")).arg("--manifest-path").arg(manifest),
        "cargo fetch",
    )?;
    fetching.finish();
    Ok(())
}

/// A target directory per crate: kept between builds, and never shared with another crate's
/// build scripts.
pub fn target_dir(src: &Source, dirs: &Dirs) -> Result<PathBuf> {
    let mut key = Hasher::new("cargo target");
    key.field(&src.path.to_string_lossy());
    let target_dir = dirs.toolchains.join("cargo-target").join(&key.hex()[..16]);
    fs::create_dir_all(&target_dir).with_context(|| format!("creating {}", target_dir.display()))?;
    Ok(target_dir)
}

/// `program` in a new network namespace with no interface up (`unshare --net`, as root, else
/// in a user namespace of its own); when neither can be made here, as it is, with a warning.
fn without_network(program: &str) -> Command {
    let root = nix::unistd::geteuid().is_root();
    let unshare: &[&str] = if root { &["--net"] } else { &["--user", "--map-current-user", "--net"] };
    let works = which("unshare").is_some()
        && Command::new("unshare").args(unshare).arg("true").stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !works {
        progress("warning: no network namespace can be made here: the build runs offline but not cut off");
        return Command::new(program);
    }
    let mut cmd = Command::new("unshare");
    cmd.args(unshare).arg("--").arg(program);
    cmd
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
