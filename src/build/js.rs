//! JavaScript and TypeScript: every script runs on one QuickJS runtime module.
//!
//! The runtime (`js-runtime/`, a small Rust crate on rquickjs) is compiled to wasm32-wasip1 on
//! first use and kept in the toolchains directory, keyed by its sources and the compilers; its
//! layer is shared by every JavaScript image. A script is a file of its own layer under `/app`,
//! and the entrypoint is `[/js/quickjs.wasm, /app/SCRIPT]`: building a script compiles nothing.
//! A single `.js` file is shipped as written (esbuild, when present, checks its syntax first);
//! TypeScript and project directories (`package.json`) are bundled by esbuild into one ES module.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::util::{self, run_tool, stdout_of, which, Hasher};
use super::pins;
use super::{deps, ext_of, Compiled, Dirs, Lang, Source, Toolchain};
use containerd_shim_wasmedge::image::writer::{Blob, Layer, LayerFile};
use containerd_shim_wasmedge::progress::Progress;
use oci_spec::image::MediaType;

/// Where the runtime module is in an image.
pub const RUNTIME_PATH: &str = "/js/quickjs.wasm";
/// Where the program's files are in an image.
pub const APP_DIR: &str = "/app";

/// The runtime crate's sources, compiled by the helper on first use.
const RUNTIME_SOURCES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("js-runtime/Cargo.toml")),
    ("Cargo.lock", include_str!("js-runtime/Cargo.lock")),
    ("src/main.rs", include_str!("js-runtime/src/main.rs")),
    ("src/prelude.js", include_str!("js-runtime/src/prelude.js")),
];

const JS_EXTS: &[&str] = &["js", "mjs", "cjs"];
const TS_EXTS: &[&str] = &["ts", "mts", "cts"];

/// The runtime layer (built if need be) and the versions of runtime and esbuild.
pub fn toolchain(lang: Lang, dirs: &Dirs) -> Result<Toolchain> {
    let runtime = runtime_layer(dirs)?;
    let esbuild = esbuild(dirs);
    if lang == Lang::TypeScript && esbuild.is_none() {
        bail!("TypeScript needs esbuild: run `wasmedge-image toolchains typescript`");
    }
    let esbuild_version = match &esbuild {
        Some(e) => stdout_of(Command::new(e).arg("--version")).unwrap_or_default(),
        None => "none".into(),
    };
    Ok(Toolchain {
        version: format!("quickjs runtime {}\nesbuild {esbuild_version}", runtime.diff_id),
        base_layers: vec![runtime],
    })
}

/// The pinned esbuild, which `toolchains javascript` installs with the other npm tools; never
/// another one on PATH, whose version the pins do not fix.
pub fn esbuild(dirs: &Dirs) -> Option<PathBuf> {
    let esbuild = pins::npm_tools(dirs)?.join(".bin/esbuild");
    (esbuild.exists() && which("node").is_some()).then_some(esbuild)
}

/// The key of the runtime: its sources and the compilers that build it.
fn runtime_key() -> Result<String> {
    let mut h = Hasher::new("wasmedge-image js runtime v1");
    for (name, text) in RUNTIME_SOURCES {
        h.field(name);
        h.field(text);
    }
    h.field(&stdout_of(Command::new("rustc").arg("-vV")).unwrap_or_default());
    h.field(&stdout_of(Command::new("clang").arg("--version")).unwrap_or_default());
    Ok(h.hex())
}

/// The layer holding the runtime module, compiled on first use.
pub fn runtime_layer(dirs: &Dirs) -> Result<Layer> {
    let home = dirs.toolchains.join("js-runtime");
    let key = runtime_key()?;
    let dir = home.join(&key[..16]);
    if let Some(layer) = load_layer(&dir) {
        return Ok(layer);
    }
    let _lock = util::lock(&home.join(".lock"))?;
    if let Some(layer) = load_layer(&dir) {
        return Ok(layer); // another build made it while we waited
    }
    if !super::rust::target_installed().unwrap_or(false) || which("clang").is_none() {
        bail!("the JavaScript runtime is built with Rust (wasm32-wasip1) and clang: run `wasmedge-image toolchains javascript`");
    }
    let building = Progress::step("building the JavaScript runtime (QuickJS → wasm32-wasip1), once per machine, about a minute");
    let src = home.join("src");
    for (name, text) in RUNTIME_SOURCES {
        let path = src.join(name);
        fs::create_dir_all(path.parent().unwrap())?;
        if fs::read_to_string(&path).ok().as_deref() != Some(text) {
            fs::write(&path, text)?;
        }
    }
    let target = home.join("target");
    run_tool(
        Command::new("cargo")
            .args(["build", "--release", "--locked", "--target", super::rust::TARGET])
            .arg("--manifest-path")
            .arg(src.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .env_remove("CARGO_TARGET_DIR")
            // rquickjs-sys: compile QuickJS with the system clang and wasi-libc, no wasi-sdk download.
            .env("RQUICKJS_SYS_NO_WASI_SDK", "1")
            .env("CC_wasm32_wasip1", "clang"),
        "building the JavaScript runtime",
    )?;
    let module = fs::read(target.join("wasm32-wasip1/release/wasmedge-js-runtime.wasm"))?;
    let layer = Layer::from_files(&[LayerFile { path: RUNTIME_PATH.into(), data: module, mode: 0o755 }])?;
    store_layer(&dir, &layer)?;
    building.finish();
    Ok(layer)
}

/// A prepared layer kept as `layer.tar.gz` plus `diff_id` in `dir`.
pub(crate) fn load_layer(dir: &Path) -> Option<Layer> {
    let diff_id = fs::read_to_string(dir.join("diff_id")).ok()?;
    let data = fs::read(dir.join("layer.tar.gz")).ok()?;
    Some(Layer { blob: Blob::new(MediaType::ImageLayerGzip, data), diff_id: diff_id.trim().to_string() })
}

pub(crate) fn store_layer(dir: &Path, layer: &Layer) -> Result<()> {
    util::write_atomic(&dir.join("layer.tar.gz"), &layer.blob.data)?;
    // diff_id last: it marks the layer complete.
    util::write_atomic(&dir.join("diff_id"), layer.diff_id.as_bytes())
}

/// The entry file named by `package.json` (`main`, else `module`), if any.
pub fn package_entry(dir: &Path) -> Result<Option<String>> {
    let text = fs::read_to_string(dir.join("package.json")).context("reading package.json")?;
    let json: serde_json::Value = serde_json::from_str(&text).context("parsing package.json")?;
    Ok(["main", "module"]
        .iter()
        .find_map(|k| json[k].as_str())
        .map(|s| s.trim_start_matches("./").to_string()))
}

/// The entry of a project directory: package.json's, else index/main with a JS or TS extension.
fn dir_entry(dir: &Path) -> Result<String> {
    if dir.join("package.json").exists() {
        if let Some(entry) = package_entry(dir)? {
            if dir.join(&entry).is_file() {
                return Ok(entry);
            }
            bail!("package.json names {entry:?} as main, but there is no such file");
        }
    }
    for stem in ["index", "main", "src/index", "src/main"] {
        for ext in JS_EXTS.iter().chain(TS_EXTS) {
            let name = format!("{stem}.{ext}");
            if dir.join(&name).is_file() {
                return Ok(name);
            }
        }
    }
    bail!("{}: no entry point (package.json main, or index/main .js/.ts)", dir.display())
}

pub fn compile(lang: Lang, src: &Source, args: &[String], dirs: &Dirs, work: &Path) -> Result<Compiled> {
    let esbuild = esbuild(dirs);
    let mut files = Vec::new();
    let script = if src.is_file && lang == Lang::JavaScript {
        // Shipped as written; esbuild, when there, reports syntax errors now rather than at run time.
        let name = src.path.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(esbuild) = &esbuild {
            run_tool(
                Command::new(esbuild)
                    .arg(&name)
                    .args(["--log-level=warning", "--outfile=/dev/null"])
                    .args(args)
                    .current_dir(src.dir()),
                "esbuild (syntax check)",
            )?;
        }
        files.push(LayerFile { path: format!("{APP_DIR}/{name}"), data: fs::read(&src.path)?, mode: 0o644 });
        name
    } else {
        let Some(esbuild) = &esbuild else {
            bail!("bundling {} needs esbuild: run `wasmedge-image toolchains javascript`", src.path.display())
        };
        let entry = if src.is_file {
            src.path.file_name().unwrap().to_string_lossy().into_owned()
        } else {
            dir_entry(&src.path)?
        };
        let out = work.join("main.mjs");
        let metafile = work.join("meta.json");
        let mut cmd = Command::new(esbuild);
        cmd.arg(&entry)
            .args(["--bundle", "--format=esm", "--platform=node", "--target=es2022", "--log-level=warning"])
            .arg(format!("--outfile={}", out.display()))
            .arg(format!("--metafile={}", metafile.display()))
            .args(args)
            .current_dir(src.dir());
        if !src.is_file && deps::has_npm_dependencies(&src.path)? {
            // esbuild finds the packages through NODE_PATH, in their shared installation.
            cmd.env("NODE_PATH", deps::npm_modules(&src.path, dirs)?);
        }
        run_tool(&mut cmd, "esbuild")?;
        let missing = deps::missing_node_modules(&metafile)?;
        if !missing.is_empty() {
            bail!("the program needs Node modules the runtime does not offer (it has fs and process): {}", missing.join(", "));
        }
        files.push(LayerFile { path: format!("{APP_DIR}/main.mjs"), data: fs::read(&out)?, mode: 0o644 });
        if !src.is_file {
            files.extend(data_files(&src.path)?);
        }
        "main.mjs".to_string()
    };
    Ok(Compiled { files, entrypoint: vec![RUNTIME_PATH.into(), format!("{APP_DIR}/{script}")], env: vec![] })
}

/// The files of a project that are not code: they go to `/app` beside the bundle.
fn data_files(dir: &Path) -> Result<Vec<LayerFile>> {
    let mut files = Vec::new();
    for (rel, path) in util::walk(dir)? {
        let ext = ext_of(&rel);
        let name = rel.rsplit('/').next().unwrap_or(&rel);
        if JS_EXTS.contains(&ext)
            || TS_EXTS.contains(&ext)
            || ["package.json", "package-lock.json", "tsconfig.json"].contains(&name)
        {
            continue;
        }
        files.push(LayerFile { path: format!("{APP_DIR}/{rel}"), data: fs::read(&path)?, mode: 0o644 });
    }
    Ok(files)
}
