//! Dependencies of a program, fetched from the package registries by their own clients and
//! never run on the host: Python's pure wheels (a layer of their own), JavaScript's npm packages
//! (installed without their scripts, then bundled). Each set is kept in the toolchains directory
//! under the sha256 of its lock (the requirements, or package.json and package-lock.json), so
//! images with the same lock share one download and, for Python, one layer. Rust's crates are
//! `rust.rs`'s; Go takes vendored modules only.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::js::{load_layer, store_layer};
use super::util::{self, Hasher};
use super::{pins, Dirs, Source};
use containerd_shim_wasmedge::image::writer::{Layer, LayerFile};
use containerd_shim_wasmedge::progress::Progress;

/// Where a Python program's dependencies are in the image (on `PYTHONPATH`).
pub const PYTHON_DEPS_DIR: &str = "/python/deps";
/// The Python the wheels must be for: the WASI interpreter's.
const PYTHON_VERSION: &str = "3.11";

/// The requirements of a Python project: `requirements.txt`, else `pyproject.toml`'s
/// `[project] dependencies`; `None` when it has none. Only names and version specifiers are
/// taken: options (another index, `-e`, `-r`) and direct URLs or paths would fetch from
/// elsewhere than the registry.
pub fn python_requirements(src: &Source) -> Result<Option<Vec<String>>> {
    if src.is_file {
        return Ok(None);
    }
    let dir = &src.path;
    let lines: Vec<String> = if dir.join("requirements.txt").is_file() {
        fs::read_to_string(dir.join("requirements.txt"))
            .context("reading requirements.txt")?
            .lines()
            .map(|l| l.split(" #").next().unwrap_or("").trim().to_string())
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    } else if dir.join("pyproject.toml").is_file() {
        let text = fs::read_to_string(dir.join("pyproject.toml")).context("reading pyproject.toml")?;
        let doc: toml::Table = toml::from_str(&text).context("parsing pyproject.toml")?;
        let deps = doc.get("project").and_then(|p| p.get("dependencies")).and_then(|d| d.as_array());
        deps.into_iter().flatten().filter_map(|d| d.as_str().map(|s| s.trim().to_string())).collect()
    } else {
        vec![]
    };
    for line in &lines {
        if line.starts_with('-') || line.contains("://") || line.contains(" @ ") || line.starts_with(['.', '/']) {
            bail!("requirement {line:?}: only package names with versions are taken (from the package index), no options, URLs or paths");
        }
    }
    Ok((!lines.is_empty()).then_some(lines))
}

/// The layer of a Python project's dependencies, made once per set of requirements.
pub fn python_layer(requirements: &[String], dirs: &Dirs) -> Result<Layer> {
    let mut key = Hasher::new("wasmedge-image python deps v1");
    key.field(PYTHON_VERSION);
    key.field(&pins::digest());
    for r in requirements {
        key.field(r);
    }
    let key = key.hex();
    let home = dirs.toolchains.join("python-deps");
    let dir = home.join(&key[..16]);
    if let Some(layer) = load_layer(&dir) {
        return Ok(layer);
    }
    let _lock = util::lock(&home.join(".lock"))?;
    if let Some(layer) = load_layer(&dir) {
        return Ok(layer);
    }
    let work = tempfile::Builder::new().prefix("wasmedge-pydeps-").tempdir()?;
    let wheels = work.path().join("wheels");
    let list = work.path().join("requirements.txt");
    fs::write(&list, requirements.join("\n") + "\n")?;
    let progress = Progress::step(&format!("pip download of {} requirement(s), pure wheels only", requirements.len()));
    // Wheels only (no sdist is built, so no package code runs), and only pure ones: the tags
    // of any platform, no ABI, any Python implementation.
    let out = Command::new("python3")
        .args(["-m", "pip", "download", "--only-binary=:all:", "--platform", "any", "--abi", "none"])
        .args(["--implementation", "py", "--python-version", PYTHON_VERSION, "--disable-pip-version-check"])
        .arg("-d")
        .arg(&wheels)
        .arg("-r")
        .arg(&list)
        .stdin(Stdio::null())
        .output()
        .context("cannot run python3 -m pip: run `wasmedge-image toolchains python`")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprint!("{stderr}");
        if let Some(name) = stderr.lines().find_map(|l| l.split("No matching distribution found for ").nth(1)) {
            bail!(
                "{}: no pure-Python wheel (py3-none-any) on the package index; it has native code or only a source \
                 distribution, and only pure Python runs on the WASI interpreter",
                name.trim()
            );
        }
        bail!("pip download failed ({})", out.status);
    }
    progress.finish();
    let mut files = Vec::new();
    for wheel in fs::read_dir(&wheels)?.flatten().map(|e| e.path()) {
        let name = wheel.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if !name.ends_with("-none-any.whl") {
            bail!("{name}: not a pure-Python wheel (its tag is not none-any); only pure Python runs on the WASI interpreter");
        }
        files.extend(unpack_wheel(&wheel, &name, work.path())?);
    }
    let layer = Layer::from_files(&files)?;
    store_layer(&dir, &layer)?;
    Ok(layer)
}

/// A wheel's files under [`PYTHON_DEPS_DIR`]. It is a zip: Python's own zipfile unpacks it
/// (keeping paths inside the directory), and a native extension in it is refused.
fn unpack_wheel(wheel: &Path, name: &str, work: &Path) -> Result<Vec<LayerFile>> {
    let into = work.join("unpacked").join(name);
    util::run_tool(
        Command::new("python3").args(["-m", "zipfile", "-e"]).arg(wheel).arg(&into),
        &format!("unpacking {name}"),
    )?;
    let mut files = Vec::new();
    for (rel, path) in util::walk(&into)? {
        if [".so", ".pyd", ".dylib", ".dll"].iter().any(|ext| rel.ends_with(ext)) {
            bail!("{name}: ships native code ({rel}); only pure Python runs on the WASI interpreter");
        }
        files.push(LayerFile { path: format!("{PYTHON_DEPS_DIR}/{rel}"), data: fs::read(&path)?, mode: 0o644 });
    }
    Ok(files)
}

/// Does a JavaScript project's package.json list dependencies?
pub fn has_npm_dependencies(dir: &Path) -> Result<bool> {
    let Ok(text) = fs::read_to_string(dir.join("package.json")) else { return Ok(false) };
    let json: serde_json::Value = serde_json::from_str(&text).context("parsing package.json")?;
    Ok(json["dependencies"].as_object().is_some_and(|d| !d.is_empty()))
}

/// The `node_modules` of a project's dependencies: `npm ci --ignore-scripts` when it has a
/// package-lock.json (versions and integrity as locked), else `npm install --ignore-scripts`.
/// No install script runs; esbuild then bundles what is used.
pub fn npm_modules(dir: &Path, dirs: &Dirs) -> Result<PathBuf> {
    let manifest = fs::read(dir.join("package.json")).context("reading package.json")?;
    let lock = fs::read(dir.join("package-lock.json")).ok();
    let mut key = Hasher::new("wasmedge-image npm deps v1");
    key.bytes(&manifest);
    key.bytes(lock.as_deref().unwrap_or_default());
    let key = key.hex();
    let home = dirs.toolchains.join("npm-deps");
    let keep = home.join(&key[..16]);
    let ready = keep.join(".ready");
    if ready.exists() {
        return Ok(keep.join("node_modules"));
    }
    let _lock = util::lock(&home.join(".lock"))?;
    if ready.exists() {
        return Ok(keep.join("node_modules"));
    }
    let _ = fs::remove_dir_all(&keep);
    fs::create_dir_all(&keep)?;
    fs::write(keep.join("package.json"), &manifest)?;
    match &lock {
        Some(lock) => {
            fs::write(keep.join("package-lock.json"), lock)?;
            pins::npm_ci(&keep, "the project's dependencies")?;
        }
        None => {
            let progress = Progress::step("npm install of the project's dependencies (no package-lock.json)");
            util::run_tool(
                Command::new("npm")
                    .args(["install", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"])
                    .current_dir(&keep),
                "npm install",
            )?;
            progress.finish();
        }
    }
    fs::write(&ready, "")?;
    Ok(keep.join("node_modules"))
}

/// The Node built-in modules the bundle still imports that the runtime does not offer
/// (it has `fs` and `process`), with who imports each: from esbuild's metafile.
pub fn missing_node_modules(metafile: &Path) -> Result<Vec<String>> {
    const OFFERED: &[&str] = &["fs", "node:fs", "process", "node:process"];
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(metafile).context("reading esbuild's metafile")?).context("parsing esbuild's metafile")?;
    let mut missing = Vec::new();
    for (input, info) in meta["inputs"].as_object().into_iter().flatten() {
        for import in info["imports"].as_array().into_iter().flatten() {
            let path = import["path"].as_str().unwrap_or("");
            if import["external"] == true && !OFFERED.contains(&path) {
                missing.push(format!("{path} (imported by {input})"));
            }
        }
    }
    missing.sort();
    missing.dedup();
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[(&str, &str)]) -> (tempfile::TempDir, Source) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            fs::write(dir.path().join(name), text).unwrap();
        }
        let src = Source::new(dir.path()).unwrap();
        (dir, src)
    }

    #[test]
    fn requirements_come_from_requirements_txt_or_pyproject() {
        let (_d, src) = project(&[("requirements.txt", "# pinned\ntabulate==0.9.0  # tables\n\nsix\n")]);
        assert_eq!(python_requirements(&src).unwrap(), Some(vec!["tabulate==0.9.0".into(), "six".into()]));
        let pyproject = "[project]\nname = \"x\"\ndependencies = [\"attrs>=23\", \"six\"]\n";
        let (_d, src) = project(&[("pyproject.toml", pyproject)]);
        assert_eq!(python_requirements(&src).unwrap(), Some(vec!["attrs>=23".into(), "six".into()]));
        let (_d, src) = project(&[("main.py", ""), ("pyproject.toml", "[project]\nname = \"x\"\n")]);
        assert_eq!(python_requirements(&src).unwrap(), None);
        for line in ["-e .", "--extra-index-url http://127.0.0.1/simple", "pkg @ http://127.0.0.1/p.whl", "./local"] {
            let (_d, src) = project(&[("requirements.txt", line)]);
            let err = python_requirements(&src).unwrap_err().to_string();
            assert!(err.contains("only package names with versions"), "{line}: {err}");
        }
    }

    #[test]
    fn node_modules_the_runtime_lacks_are_named_with_their_importer() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join("meta.json");
        let json = serde_json::json!({"inputs": {
            "main.js": {"imports": [{"path": "fs", "kind": "require-call", "external": true},
                                    {"path": "node_modules/dep/index.js", "kind": "require-call"}]},
            "node_modules/dep/index.js": {"imports": [{"path": "net", "kind": "require-call", "external": true},
                                                      {"path": "node:process", "kind": "import-statement", "external": true}]}
        }});
        fs::write(&meta, json.to_string()).unwrap();
        assert_eq!(missing_node_modules(&meta).unwrap(), ["net (imported by node_modules/dep/index.js)"]);
    }
}
