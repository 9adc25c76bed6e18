//! The build helper: source code in Rust, C, C++, Go, JavaScript, TypeScript, AssemblyScript or
//! Python in, a
//! `wasi/wasm` OCI image out.
//!
//! The way of one build: detect the language ([`detect`]) → make sure its toolchain is there
//! and prepared (a language's `toolchain()`: versions, and the shared runtime layers of
//! JavaScript and Python) → look the compile up in the [`cache`] under the sha256 of the
//! sources, the language, the toolchain version and the compile options → on a miss, compile
//! in a scratch directory with the compiler's diagnostics passed through unchanged → assemble
//! the image (shared runtime layers + one layer of the program's own files) with
//! [`containerd_shim_wasmedge::image::writer`].
//!
//! Compiled languages (Rust, C, C++, Go) give one module at `/app.wasm`. JavaScript and
//! TypeScript run on one QuickJS module built once per machine (`js.rs`) and Python on the
//! CPython 3.11 WASI interpreter (`python.rs`): their images are the runtime's shared layer plus
//! the program's files under `/app`, with the runtime as the entrypoint and the script as its
//! first argument.

pub mod assemblyscript;
pub mod c;
pub mod cache;
pub mod cli;
pub mod ctr;
pub mod deps;
pub mod go;
pub mod inspect;
pub mod js;
pub mod pins;
pub mod precompile;
pub mod python;
pub mod registry;
pub mod rust;
mod sandbox;
pub mod store;
pub mod toolchains;
pub mod transfer;
mod util;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};

use containerd_shim_wasmedge::image::writer::{self, Image, ImageSpec, Layer, LayerFile, Platform};
pub use util::progress;

/// The languages the helper builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lang {
    Rust,
    C,
    Cpp,
    Go,
    JavaScript,
    TypeScript,
    AssemblyScript,
    Python,
    /// An already compiled module: packed as it is.
    Wasm,
}

impl Lang {
    pub const ALL: [Lang; 9] = [
        Lang::Rust,
        Lang::C,
        Lang::Cpp,
        Lang::Go,
        Lang::JavaScript,
        Lang::TypeScript,
        Lang::AssemblyScript,
        Lang::Python,
        Lang::Wasm,
    ];

    /// The canonical name, as `--lang` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::C => "c",
            Lang::Cpp => "c++",
            Lang::Go => "go",
            Lang::JavaScript => "javascript",
            Lang::TypeScript => "typescript",
            Lang::AssemblyScript => "assemblyscript",
            Lang::Python => "python",
            Lang::Wasm => "wasm",
        }
    }

    /// Other names `--lang` takes.
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Lang::Rust => &["rs"],
            Lang::C => &[],
            Lang::Cpp => &["cpp", "cxx", "cc"],
            Lang::Go => &["golang"],
            Lang::JavaScript => &["js", "node"],
            Lang::TypeScript => &["ts"],
            Lang::AssemblyScript => &["as"],
            Lang::Python => &["py", "python3"],
            Lang::Wasm => &[],
        }
    }

    /// The extension of a one-file program in this language; none for AssemblyScript, whose
    /// programs are projects (an `asconfig.json` or an `assembly/` directory).
    pub fn extension(self) -> Option<&'static str> {
        Some(match self {
            Lang::Rust => "rs",
            Lang::C => "c",
            Lang::Cpp => "cpp",
            Lang::Go => "go",
            Lang::JavaScript => "js",
            Lang::TypeScript => "ts",
            Lang::Python => "py",
            Lang::Wasm => "wasm",
            Lang::AssemblyScript => return None,
        })
    }

    /// `rust, c, c++ (cpp), ...`: what an error about an unknown language lists.
    pub fn known() -> String {
        Lang::ALL
            .iter()
            .map(|l| match l.aliases().first() {
                Some(alias) => format!("{} ({alias})", l.name()),
                None => l.name().to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn from_extension(ext: &str) -> Option<Lang> {
        Some(match ext {
            "rs" => Lang::Rust,
            "c" => Lang::C,
            "cc" | "cpp" | "cxx" | "c++" | "C" => Lang::Cpp,
            "go" => Lang::Go,
            "js" | "mjs" | "cjs" => Lang::JavaScript,
            "ts" | "mts" | "cts" => Lang::TypeScript,
            "py" => Lang::Python,
            "wasm" => Lang::Wasm,
            _ => return None,
        })
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Lang {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Lang> {
        let s = s.to_ascii_lowercase();
        Lang::ALL
            .into_iter()
            .find(|l| l.name() == s || l.aliases().contains(&s.as_str()))
            .with_context(|| format!("unknown language {s:?}; known languages: {}", Lang::known()))
    }
}

/// Directories never taken as sources: build output, dependencies, VCS data.
pub(crate) const IGNORED_DIRS: &[&str] =
    &["target", "node_modules", ".git", "__pycache__", ".venv", "venv", "zig-cache", ".cache"];

/// The language of `src`, a file (by extension) or a directory (by its manifest: `Cargo.toml`,
/// `go.mod`, `package.json`, `tsconfig.json`, `pyproject.toml`..., else by the extensions of its files).
pub fn detect(src: &Path) -> Result<Lang> {
    let meta = fs::metadata(src).with_context(|| format!("reading {}", src.display()))?;
    if meta.is_file() {
        let ext = src.extension().and_then(|e| e.to_str()).unwrap_or("");
        return Lang::from_extension(ext).with_context(|| {
            format!(
                "cannot tell the language of {} from its extension {ext:?}; pass --lang (known languages: {})",
                src.display(),
                Lang::known()
            )
        });
    }
    let has = |name: &str| src.join(name).exists();
    if has("Cargo.toml") {
        return Ok(Lang::Rust);
    }
    if has("go.mod") {
        return Ok(Lang::Go);
    }
    // Before package.json and tsconfig.json, which AssemblyScript projects have too.
    if has("asconfig.json") || src.join("assembly").is_dir() {
        return Ok(Lang::AssemblyScript);
    }
    if has("tsconfig.json") {
        return Ok(Lang::TypeScript);
    }
    if has("package.json") {
        let entry = js::package_entry(src).ok().flatten();
        let is_ts = entry.as_deref().is_some_and(|e| Lang::from_extension(ext_of(e)) == Some(Lang::TypeScript));
        return Ok(if is_ts { Lang::TypeScript } else { Lang::JavaScript });
    }
    if has("pyproject.toml") || has("requirements.txt") || has("__main__.py") || has("main.py") {
        return Ok(Lang::Python);
    }
    // Otherwise by what the source files are, C++ winning over C (C files may be part of it).
    let mut found = BTreeMap::new();
    for (rel, _) in util::walk(src)? {
        if let Some(lang) = Lang::from_extension(ext_of(&rel)) {
            *found.entry(lang).or_insert(0) += 1;
        }
    }
    if found.contains_key(&Lang::Cpp) {
        found.remove(&Lang::C);
    }
    match found.keys().collect::<Vec<_>>()[..] {
        [lang] => Ok(*lang),
        [] => bail!(
            "no source files in {}; pass --lang (known languages: {})",
            src.display(),
            Lang::known()
        ),
        ref several => bail!(
            "{} holds sources of several languages ({}); pass --lang",
            src.display(),
            several.iter().map(|l| l.name()).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn ext_of(path: &str) -> &str {
    Path::new(path).extension().and_then(|e| e.to_str()).unwrap_or("")
}

/// Where the helper keeps what it prepares and caches.
#[derive(Clone, Debug)]
pub struct Dirs {
    /// The compile cache (bounded, least recently used out first).
    pub cache: PathBuf,
    /// Prepared toolchains: the JavaScript runtime module, the Python interpreter layer, npm
    /// packages, cargo's target directory. Not bounded; `toolchains` fills it.
    pub toolchains: PathBuf,
}

impl Dirs {
    /// `$WASMEDGE_IMAGE_CACHE` (else `$XDG_CACHE_HOME/wasmedge-image/builds`, else
    /// `~/.cache/wasmedge-image/builds`), and `$WASMEDGE_IMAGE_TOOLCHAINS` (else `.../toolchains`).
    pub fn from_env(cache: Option<PathBuf>) -> Dirs {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from("/var/cache"))
            .join("wasmedge-image");
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        Dirs {
            cache: cache.or_else(|| env("WASMEDGE_IMAGE_CACHE")).unwrap_or_else(|| base.join("builds")),
            toolchains: env("WASMEDGE_IMAGE_TOOLCHAINS").unwrap_or_else(|| base.join("toolchains")),
        }
    }
}

/// What a language's toolchain contributes to every build: its version (part of the cache key)
/// and the layers its programs run on.
#[derive(Clone, Debug, Default)]
pub struct Toolchain {
    pub version: String,
    pub base_layers: Vec<Layer>,
}

/// What compiling gives: the program's own files and how to start it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compiled {
    pub files: Vec<LayerFile>,
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
}

/// The sources to build: a file, or a directory.
#[derive(Clone, Debug)]
pub struct Source {
    /// The file or directory as given (made absolute).
    pub path: PathBuf,
    pub is_file: bool,
}

impl Source {
    pub fn new(path: &Path) -> Result<Source> {
        let path = fs::canonicalize(path).with_context(|| format!("reading {}", path.display()))?;
        let is_file = fs::metadata(&path)?.is_file();
        Ok(Source { path, is_file })
    }

    /// The directory the sources are in.
    pub fn dir(&self) -> &Path {
        if self.is_file {
            self.path.parent().unwrap_or(Path::new("/"))
        } else {
            &self.path
        }
    }

    /// Relative path and content of every source file, sorted (the file itself for a file).
    pub fn files(&self) -> Result<Vec<(String, PathBuf)>> {
        if self.is_file {
            let name = self.path.file_name().unwrap().to_string_lossy().into_owned();
            return Ok(vec![(name, self.path.clone())]);
        }
        util::walk(&self.path)
    }

    /// sha256 over the relative paths, modes and contents of the files.
    pub fn digest(&self) -> Result<String> {
        let mut h = util::Hasher::new("sources");
        for (rel, path) in self.files()? {
            let data = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            h.field(&rel);
            h.field(&format!("{:o}", util::mode(&path)? & 0o111));
            h.bytes(&data);
        }
        Ok(h.hex())
    }
}

/// Options of a build.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// `None`: detect.
    pub lang: Option<Lang>,
    pub reference: String,
    /// Extra compiler arguments (clang, rustc/cargo, go build, esbuild); part of the cache key.
    pub compiler_args: Vec<String>,
    /// Replaces the entrypoint the language gives.
    pub entrypoint: Option<Vec<String>>,
    /// The image's Cmd: arguments after the entrypoint.
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    /// Extra files, `(host path, absolute image path)`.
    pub files: Vec<(PathBuf, String)>,
    pub annotations: BTreeMap<String, String>,
    /// Platforms of the image's manifests (empty: the default ones).
    pub platforms: Vec<Platform>,
    /// Do not look the compile up in the cache (the result is still stored).
    pub no_cache: bool,
    /// Which steps run in the build sandbox.
    pub sandbox: Sandbox,
    /// Bound of the compile cache in bytes.
    pub cache_max_bytes: u64,
    /// How long a compile is kept after its last use (default [`cache::DEFAULT_TTL`]).
    pub cache_ttl: Option<std::time::Duration>,
}

/// Which steps of a build run in the build sandbox (a runc container: the sources and the
/// toolchains read-only, no network; see `sandbox.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sandbox {
    /// The steps that run package code: Rust's build scripts and proc macros.
    #[default]
    PackageCode,
    /// The whole compile (`--sandbox`), so a compiler that reads what the sources name
    /// (`#include`, `include_str!`, an import) finds only them and the toolchains.
    Compile,
    /// None (`--no-sandbox`): on this host, offline where package code runs.
    Off,
    /// This process is the sandbox's (`wasmedge-image compile`): no fetch, nothing more to confine.
    Inside,
}

/// The result of [`build`].
pub struct Built {
    pub lang: Lang,
    pub image: Image,
    pub compiled: Compiled,
}

/// Builds the image of `src`. Diagnostics go to stderr as the compiler wrote them; progress
/// lines (`wasmedge-image: ...`) go to stderr too, so stdout stays the caller's.
pub fn build(src: &Path, opts: &BuildOptions, dirs: &Dirs) -> Result<Built> {
    let source = Source::new(src)?;
    let lang = match opts.lang {
        Some(lang) => lang,
        None => detect(&source.path)?,
    };
    let toolchain = toolchain(lang, dirs)?;
    let mut base_layers = toolchain.base_layers.clone();
    base_layers.extend(dependency_layers(lang, &source, dirs)?);

    let mut key = util::Hasher::new("wasmedge-image compile v1");
    key.field(lang.name());
    key.field(&toolchain.version);
    key.field(&pins::digest());
    for layer in &base_layers {
        key.field(&layer.diff_id);
    }
    for a in &opts.compiler_args {
        key.field(a);
    }
    key.field(&source.digest()?);
    let key = key.hex();

    let cache = cache::Cache::new(&dirs.cache, opts.cache_max_bytes, opts.cache_ttl.unwrap_or(cache::DEFAULT_TTL));
    let short = &key[..12];
    let cached = if opts.no_cache { None } else { cache.get(&key)? };
    let compiled = match cached {
        Some(compiled) => {
            progress(&format!("cache hit: {lang} {short} ({})", source.path.display()));
            compiled
        }
        None => {
            let why = if opts.no_cache { "--no-cache" } else { "cache miss" };
            progress(&format!("{why}: {lang} {short}: compiling {}", source.path.display()));
            let started = Instant::now();
            let compiled = if opts.sandbox == Sandbox::Compile {
                sandbox::compile(lang, &source, &opts.compiler_args, dirs)?
            } else {
                let work = tempfile::Builder::new().prefix("wasmedge-build-").tempdir()?;
                compile(lang, &source, opts.sandbox, &opts.compiler_args, dirs, work.path())?
            };
            progress(&format!("compiled {lang} in {:.1}s", started.elapsed().as_secs_f64()));
            if let Err(e) = cache.put(&key, &compiled) {
                progress(&format!("warning: not cached: {e:#}"));
            }
            compiled
        }
    };

    let mut files = compiled.files.clone();
    for (host, path) in &opts.files {
        ensure!(path.starts_with('/'), "--file: the image path {path:?} must be absolute");
        let data = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        files.push(LayerFile { path: path.clone(), data, mode: util::mode(host)? & 0o7777 });
    }
    let mut env = compiled.env.clone();
    env.extend(opts.env.iter().cloned());
    let reference =
        if opts.reference.is_empty() { default_reference(&source.path, Some(&key)) } else { opts.reference.clone() };
    let spec = ImageSpec {
        reference,
        files,
        entrypoint: opts.entrypoint.clone().unwrap_or_else(|| compiled.entrypoint.clone()),
        cmd: opts.args.clone(),
        env,
        working_dir: opts.workdir.clone(),
        annotations: opts.annotations.clone(),
        base_layers,
        platforms: opts.platforms.clone(),
        ..Default::default()
    };
    let image = writer::build(&spec)?;
    Ok(Built { lang, image, compiled })
}

/// The toolchain of `lang`, checked and prepared (first use builds or fetches runtimes).
pub fn toolchain(lang: Lang, dirs: &Dirs) -> Result<Toolchain> {
    match lang {
        Lang::Rust => rust::toolchain(),
        Lang::C | Lang::Cpp => c::toolchain(lang),
        Lang::Go => go::toolchain(),
        Lang::JavaScript | Lang::TypeScript => js::toolchain(lang, dirs),
        Lang::AssemblyScript => assemblyscript::toolchain(dirs),
        Lang::Python => python::toolchain(dirs),
        Lang::Wasm => Ok(Toolchain { version: "none".into(), base_layers: vec![] }),
    }
}

/// The layers of a program's dependencies: a Python project's pure wheels (shared by every
/// image with the same requirements). Other languages compile theirs into the program.
fn dependency_layers(lang: Lang, src: &Source, dirs: &Dirs) -> Result<Vec<Layer>> {
    if lang != Lang::Python {
        return Ok(vec![]);
    }
    match deps::python_requirements(src)? {
        Some(requirements) => Ok(vec![deps::python_layer(&requirements, dirs)?]),
        None => Ok(vec![]),
    }
}

/// Compiles `src` in this process (`sandbox` says which of its steps go to the build sandbox).
pub fn compile(lang: Lang, src: &Source, sandbox: Sandbox, compiler_args: &[String], dirs: &Dirs, work: &Path) -> Result<Compiled> {
    match lang {
        Lang::Rust => rust::compile(src, compiler_args, sandbox, dirs, work),
        Lang::C | Lang::Cpp => c::compile(lang, src, compiler_args, work),
        Lang::Go => go::compile(src, compiler_args, work),
        Lang::JavaScript | Lang::TypeScript => js::compile(lang, src, compiler_args, dirs, work),
        Lang::AssemblyScript => assemblyscript::compile(src, compiler_args, dirs, work),
        Lang::Python => python::compile(src),
        Lang::Wasm => {
            ensure!(src.is_file, "--lang wasm takes a .wasm file, not a directory");
            let data = fs::read(&src.path)?;
            ensure!(data.starts_with(b"\0asm"), "{} is not a WebAssembly module", src.path.display());
            Ok(module_at_app_wasm(data))
        }
    }
}

/// Where compiled languages put their module.
pub const APP_WASM: &str = "/app.wasm";

/// A compiled module as `/app.wasm`, the entrypoint.
pub(crate) fn module_at_app_wasm(module: Vec<u8>) -> Compiled {
    Compiled {
        files: vec![LayerFile { path: APP_WASM.into(), data: module, mode: 0o755 }],
        entrypoint: vec![APP_WASM.into()],
        env: vec![],
    }
}

/// An image name for a build without `--tag`: `localhost/wasmedge-build/NAME:KEY12`.
pub fn default_reference(src: &Path, key: Option<&str>) -> String {
    let stem = src
        .canonicalize()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let mut name: String = stem
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name = name.trim_matches('-').to_string();
    if name.is_empty() {
        name = "app".into();
    }
    format!("localhost/wasmedge-build/{name}:{}", key.map_or("latest", |k| &k[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_parse_by_name_and_alias() {
        for lang in Lang::ALL {
            assert_eq!(lang.name().parse::<Lang>().unwrap(), lang);
        }
        assert_eq!("JS".parse::<Lang>().unwrap(), Lang::JavaScript);
        assert_eq!("cpp".parse::<Lang>().unwrap(), Lang::Cpp);
        for lang in Lang::ALL {
            if let Some(ext) = lang.extension() {
                assert_eq!(Lang::from_extension(ext), Some(lang));
            }
        }
        let err = "cobol".parse::<Lang>().unwrap_err().to_string();
        assert!(err.contains("unknown language \"cobol\""), "{err}");
        assert!(err.contains("rust (rs), c, c++ (cpp), go (golang), javascript (js)"), "{err}");
    }

    #[test]
    fn detection_by_extension_and_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for (name, lang) in [
            ("a.rs", Lang::Rust),
            ("a.c", Lang::C),
            ("a.cpp", Lang::Cpp),
            ("a.go", Lang::Go),
            ("a.mjs", Lang::JavaScript),
            ("a.ts", Lang::TypeScript),
            ("a.py", Lang::Python),
        ] {
            fs::write(p.join(name), "").unwrap();
            assert_eq!(detect(&p.join(name)).unwrap(), lang, "{name}");
        }
        fs::write(p.join("a.txt"), "").unwrap();
        assert!(detect(&p.join("a.txt")).unwrap_err().to_string().contains("known languages"));
        assert!(detect(p).unwrap_err().to_string().contains("several languages"));

        let mk = |files: &[(&str, &str)]| {
            let d = tempfile::tempdir().unwrap();
            for (name, text) in files {
                fs::create_dir_all(d.path().join(name).parent().unwrap()).unwrap();
                fs::write(d.path().join(name), text).unwrap();
            }
            d
        };
        assert_eq!(detect(mk(&[("Cargo.toml", ""), ("src/main.rs", "")]).path()).unwrap(), Lang::Rust);
        assert_eq!(detect(mk(&[("go.mod", ""), ("x.py", "")]).path()).unwrap(), Lang::Go);
        assert_eq!(detect(mk(&[("package.json", "{}"), ("index.js", "")]).path()).unwrap(), Lang::JavaScript);
        assert_eq!(
            detect(mk(&[("package.json", r#"{"main": "src/app.ts"}"#)]).path()).unwrap(),
            Lang::TypeScript
        );
        assert_eq!(detect(mk(&[("main.c", ""), ("util.cpp", "")]).path()).unwrap(), Lang::Cpp);
        assert_eq!(detect(mk(&[("main.c", ""), ("target/x.rs", "")]).path()).unwrap(), Lang::C);
        assert_eq!(detect(mk(&[("main.py", ""), ("lib.js", "")]).path()).unwrap(), Lang::Python);
        let as_project = [("asconfig.json", "{}"), ("package.json", "{}"), ("assembly/index.ts", "")];
        assert_eq!(detect(mk(&as_project).path()).unwrap(), Lang::AssemblyScript);
        assert_eq!(detect(mk(&[("assembly/index.ts", ""), ("tsconfig.json", "")]).path()).unwrap(), Lang::AssemblyScript);
    }

    #[test]
    fn source_digest_follows_content_and_names() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.c"), "int main(){}").unwrap();
        let src = Source::new(dir.path()).unwrap();
        let d1 = src.digest().unwrap();
        assert_eq!(d1, src.digest().unwrap());
        fs::create_dir(dir.path().join("target")).unwrap();
        fs::write(dir.path().join("target/out"), "x").unwrap();
        assert_eq!(d1, src.digest().unwrap(), "build output is not a source");
        fs::write(dir.path().join("a.c"), "int main(){return 1;}").unwrap();
        assert_ne!(d1, src.digest().unwrap());
    }

    #[test]
    fn default_references_are_valid() {
        let r = default_reference(Path::new("/nonexistent/My App.py"), Some("0123456789abcdef"));
        assert_eq!(r, "localhost/wasmedge-build/app:0123456789ab");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("Hello World.py");
        fs::write(&f, "").unwrap();
        let r = default_reference(&f, Some("0123456789abcdef"));
        assert_eq!(r, "localhost/wasmedge-build/hello-world:0123456789ab");
        writer::normalize_reference(&r).unwrap();
    }
}
