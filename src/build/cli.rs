//! The `build`, `run`, `inspect` and `toolchains` subcommands of `wasmedge-image`: arguments
//! and their mapping onto the build helper.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use containerd_shim_wasmedge::image::writer::{self, Format, Platform};

use super::ctr::{self, Ctr};
use super::util::progress;
use containerd_shim_wasmedge::progress::human;
use super::registry::RegistryArgs;
use super::{cache, inspect as inspector, precompile, toolchains as tc, transfer, BuildOptions, Dirs, Lang, Sandbox, Source};

/// Where containerd is.
#[derive(Args, Clone)]
pub struct ContainerdArgs {
    /// containerd's socket.
    #[arg(long, default_value = ctr::DEFAULT_ADDRESS, global = true)]
    address: String,
    /// containerd namespace.
    #[arg(long, default_value = ctr::DEFAULT_NAMESPACE)]
    namespace: String,
}

impl ContainerdArgs {
    fn ctr(&self) -> Ctr {
        Ctr { address: self.address.clone(), namespace: self.namespace.clone() }
    }
}

/// How to compile, shared by `build` and `run`.
#[derive(Args, Clone)]
pub struct CompileArgs {
    /// Language: rust, c, c++, go, javascript, typescript, assemblyscript, python, wasm (default: detected from
    /// the file extension or the project's manifest).
    #[arg(long)]
    lang: Option<String>,
    /// Extra argument for the compiler (clang, rustc/cargo, go build, esbuild); repeat for several.
    #[arg(long = "compiler-arg", value_name = "X", allow_hyphen_values = true)]
    compiler_args: Vec<String>,
    /// Compile even if the cache has the result (which is then replaced).
    #[arg(long)]
    no_cache: bool,
    /// Run Rust's build scripts and proc macros on this host (offline, as you) instead of in the
    /// build sandbox, a runc container that needs root.
    #[arg(long)]
    no_sandbox: bool,
    /// Run the whole compile in the build sandbox (root and runc): the compiler sees the sources,
    /// the toolchains and the fetched dependencies only, and no network.
    #[arg(long, conflicts_with = "no_sandbox")]
    sandbox: bool,
    #[command(flatten)]
    cache: CacheArgs,
    /// Extra file for the image.
    #[arg(long = "file", value_name = "HOSTPATH:IMAGEPATH")]
    files: Vec<String>,
    /// Image reference (default localhost/wasmedge-build/NAME:HASH).
    #[arg(long)]
    tag: Option<String>,
}

impl CompileArgs {
    fn options(&self) -> Result<(BuildOptions, Dirs)> {
        let lang = match &self.lang {
            Some(l) => Some(l.parse::<Lang>()?),
            None => None,
        };
        let mut files = Vec::new();
        for f in &self.files {
            let (host, path) = f.rsplit_once(':').with_context(|| format!("--file {f:?} is not HOSTPATH:IMAGEPATH"))?;
            files.push((PathBuf::from(host), path.to_string()));
        }
        let opts = BuildOptions {
            lang,
            reference: self.tag.clone().unwrap_or_default(),
            compiler_args: self.compiler_args.clone(),
            files,
            no_cache: self.no_cache,
            sandbox: match (self.sandbox, self.no_sandbox) {
                (true, _) => Sandbox::Compile,
                (_, true) => Sandbox::Off,
                _ => Sandbox::PackageCode,
            },
            cache_max_bytes: self.cache.cache_max_mb << 20,
            cache_ttl: Some(self.cache.ttl()?),
            ..Default::default()
        };
        Ok((opts, Dirs::from_env(self.cache.cache_dir.clone())))
    }
}

#[derive(Args)]
pub struct BuildArgs {
    /// Source: a file (main.rs, app.c, main.go, app.js, app.ts, app.py, x.wasm) or a project
    /// directory (Cargo.toml, go.mod, package.json, main.py, C/C++ sources).
    src: PathBuf,
    #[command(flatten)]
    compile: CompileArgs,
    /// Output tarball, or directory for --format layout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// oci: OCI-layout tarball (ctr image import); docker: also docker-archive manifest.json
    /// (docker load); layout: OCI layout directory.
    #[arg(long, default_value = "oci")]
    format: Format,
    /// Import the image into containerd (with ctr).
    #[arg(long = "import")]
    import: bool,
    /// Load the image into Docker (docker load).
    #[arg(long)]
    load: bool,
    /// Push the image to a registry as REF (e.g. registry.example.com/team/hello:v1).
    #[arg(long, value_name = "REF")]
    push: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Also compile the image's module into this node's AOT cache, so that its first container
    /// starts from compiled code (needs the runner, containerd-wasmedge-init, and root).
    #[arg(long)]
    precompile: bool,
    /// The AOT cache for --precompile (default: the shim's, /var/lib/containerd-shim-wasmedge/aot).
    #[arg(long, requires = "precompile")]
    aot_dir: Option<PathBuf>,
    #[command(flatten)]
    containerd: ContainerdArgs,
    /// Entrypoint of the image, replacing the language's (repeat for several words).
    #[arg(long = "entrypoint", value_name = "X")]
    entrypoint: Vec<String>,
    #[command(flatten)]
    config: ImageConfigArgs,
}

/// What goes into the image's config and manifest, for `build` and `pack` alike.
#[derive(Args)]
pub struct ImageConfigArgs {
    /// Argument passed to the program (the image's Cmd); repeat for several.
    #[arg(long = "arg", value_name = "X", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// Environment variable of the image config.
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory of the image config.
    #[arg(long)]
    pub workdir: Option<String>,
    /// Manifest annotation (overrides the default module.wasm.image/variant=compat-smart).
    #[arg(long = "annotation", value_name = "K=V")]
    pub annotations: Vec<String>,
    /// Platforms of the image's manifests, comma-separated (default: wasi/wasm,linux/amd64,
    /// linux/arm64: one tag for ctr, Docker and Kubernetes alike).
    #[arg(long, value_name = "OS/ARCH,...")]
    pub platforms: Option<String>,
}

impl ImageConfigArgs {
    pub fn annotations(&self) -> Result<BTreeMap<String, String>> {
        let mut annotations = BTreeMap::new();
        for kv in &self.annotations {
            match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => annotations.insert(k.to_string(), v.to_string()),
                _ => bail!("--annotation {kv:?} is not K=V"),
            };
        }
        Ok(annotations)
    }

    pub fn platforms(&self) -> Result<Vec<Platform>> {
        self.platforms.as_deref().map_or(Ok(Vec::new()), Platform::parse_list)
    }
}

pub fn build(a: BuildArgs) -> Result<()> {
    if a.out.is_none() && !a.import && !a.load && !a.precompile && a.push.is_none() {
        bail!("nothing to do with the image: give --out FILE, --import, --load, --push REF or --precompile");
    }
    let (mut opts, dirs) = a.compile.options()?;
    opts.entrypoint = (!a.entrypoint.is_empty()).then(|| a.entrypoint.clone());
    opts.args = a.config.args.clone();
    opts.env = a.config.env.clone();
    opts.workdir = a.config.workdir.clone();
    opts.annotations = a.config.annotations()?;
    opts.platforms = a.config.platforms()?;
    let built = super::build(&a.src, &opts, &dirs)?;
    let image = &built.image;
    let size: u64 = image.layers().iter().map(|l| l.data.len() as u64).sum();
    progress(&format!(
        "image {} ({}, {} layer{}, {})",
        image.reference,
        built.lang,
        image.layers().len(),
        if image.layers().len() == 1 { "" } else { "s" },
        human(size)
    ));
    if let Some(out) = &a.out {
        image.save(a.format, out)?;
        progress(&format!("wrote {}", out.display()));
    }
    if a.import {
        let tmp = tempfile::Builder::new().prefix("wasmedge-image-").suffix(".tar").tempfile()?;
        image.save(Format::Oci, tmp.path())?;
        a.containerd.ctr().import(tmp.path())?;
        progress(&format!("imported into containerd at {}", a.containerd.address));
    }
    if a.load {
        let tmp = tempfile::Builder::new().prefix("wasmedge-image-").suffix(".tar").tempfile()?;
        image.save(Format::Docker, tmp.path())?;
        ctr::docker_load(tmp.path())?;
        progress("loaded into Docker");
    }
    if let Some(reference) = &a.push {
        transfer::push(&transfer::upload_of_image(image), reference, &a.registry)?;
    }
    if a.precompile {
        precompile::precompile_built(&built, a.aot_dir.as_deref())?;
    }
    println!("{} {}", image.reference, image.target().digest);
    Ok(())
}

/// `compile`, which the build sandbox runs for `--sandbox`.
#[derive(Args)]
pub struct CompileInSandboxArgs {
    /// The sources, at their path on the host.
    src: PathBuf,
    #[arg(long)]
    lang: String,
    #[arg(long = "compiler-arg", value_name = "X", allow_hyphen_values = true)]
    compiler_args: Vec<String>,
    /// Where the result goes, as a compile-cache entry.
    #[arg(long)]
    out: PathBuf,
}

/// Compiles in this process, which is the build sandbox's: offline, with nothing left to confine.
pub fn compile_in_sandbox(a: CompileInSandboxArgs) -> Result<()> {
    let lang: Lang = a.lang.parse()?;
    let dirs = Dirs::from_env(None);
    let work = tempfile::Builder::new().prefix("wasmedge-build-").tempdir()?;
    let compiled = super::compile(lang, &Source::new(&a.src)?, Sandbox::Inside, &a.compiler_args, &dirs, work.path())?;
    cache::Cache::new(&a.out, 0, cache::DEFAULT_TTL).put(super::sandbox::COMPILED, &compiled)
}

#[derive(Args)]
pub struct RunArgs {
    /// Source to build (file or directory), or the name of an image already in containerd.
    target: String,
    /// Arguments for the program; options of `run` go before the source.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
    #[command(flatten)]
    compile: CompileArgs,
    #[command(flatten)]
    containerd: ContainerdArgs,
    /// Environment variable for the container.
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Container id (default: wasmedge-run-PID).
    #[arg(long)]
    name: Option<String>,
}

/// Builds and imports when the target is a source, runs it with the WasmEdge shim, and returns
/// the module's exit code. Only the module writes to stdout.
pub fn run(a: RunArgs) -> Result<i32> {
    let ctr = a.containerd.ctr();
    let (reference, entrypoint) = if Path::new(&a.target).exists() {
        let (opts, dirs) = a.compile.options()?;
        let built = super::build(Path::new(&a.target), &opts, &dirs)?;
        let tmp = tempfile::Builder::new().prefix("wasmedge-image-").suffix(".tar").tempfile()?;
        built.image.save(Format::Oci, tmp.path())?;
        ctr.import(tmp.path())?;
        let entrypoint =
            if built.compiled.entrypoint.is_empty() { vec![] } else { built.compiled.entrypoint.clone() };
        (built.image.reference.clone(), entrypoint)
    } else {
        let reference = containerd_shim_wasmedge::image::writer::normalize_reference(&a.target)
            .with_context(|| format!("{} is neither a file nor an image name", a.target))?;
        // ctr replaces the whole argv: arguments need the image's entrypoint in front.
        let entrypoint = if a.args.is_empty() { vec![] } else { image_entrypoint(&ctr, &reference)? };
        (reference, entrypoint)
    };
    let process_args: Vec<String> =
        if a.args.is_empty() { vec![] } else { entrypoint.into_iter().chain(a.args.iter().cloned()).collect() };
    let id = a.name.clone().unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("wasmedge-run-{}-{nanos:x}", std::process::id())
    });
    progress(&format!("running {reference} as {id}"));
    ctr.run(&reference, &id, &process_args, &a.env)
}

/// The entrypoint of an image in containerd, from its config.
fn image_entrypoint(ctr: &Ctr, reference: &str) -> Result<Vec<String>> {
    let report = inspector::inspect(reference, ctr, &RegistryArgs::default())?;
    let image = &report["images"][0];
    let list = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
    };
    let entrypoint = list(&image["entrypoint"]);
    if entrypoint.is_empty() {
        bail!("{reference} has no entrypoint to put before the arguments");
    }
    Ok(entrypoint)
}

#[derive(Args)]
pub struct InspectArgs {
    /// An image file (OCI tarball, docker-archive, layout directory), an image in containerd, or
    /// else an image in its registry.
    target: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    containerd: ContainerdArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn inspect(a: InspectArgs) -> Result<()> {
    let report = inspector::inspect(&a.target, &a.containerd.ctr(), &a.registry)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", inspector::render(&report));
    }
    Ok(())
}

#[derive(Args)]
pub struct PrecompileArgs {
    /// Wasm modules to compile.
    #[arg(required = true)]
    modules: Vec<PathBuf>,
    /// The AOT cache (default: the shim's, /var/lib/containerd-shim-wasmedge/aot).
    #[arg(long)]
    aot_dir: Option<PathBuf>,
}

pub fn precompile(a: PrecompileArgs) -> Result<()> {
    precompile::precompile(&a.modules, a.aot_dir.as_deref())
}

#[derive(Args)]
pub struct ToolchainsArgs {
    /// Languages (default: all): rust, c, c++, go, javascript, typescript, assemblyscript, python.
    langs: Vec<String>,
}

pub fn toolchains(a: ToolchainsArgs) -> Result<()> {
    let langs = a.langs.iter().map(|l| l.parse::<Lang>()).collect::<Result<Vec<_>>>()?;
    tc::install(&langs, &Dirs::from_env(None))
}

/// The compile cache: where, how big, how long.
#[derive(Args, Clone)]
pub struct CacheArgs {
    /// The compile cache (default $WASMEDGE_IMAGE_CACHE, else ~/.cache/wasmedge-image/builds).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Bound of the compile cache in MiB; least recently used entries go first.
    #[arg(long, default_value_t = cache::DEFAULT_MAX_BYTES >> 20)]
    cache_max_mb: u64,
    /// Seconds an entry is kept after its last use (default $WASM_CACHE_TTL, else 3600).
    #[arg(long, value_name = "SECONDS")]
    cache_ttl: Option<u64>,
}

impl CacheArgs {
    fn ttl(&self) -> Result<std::time::Duration> {
        let secs = match (self.cache_ttl, std::env::var("WASM_CACHE_TTL")) {
            (Some(secs), _) => secs,
            (None, Ok(v)) if !v.is_empty() => {
                v.trim().parse().with_context(|| format!("WASM_CACHE_TTL={v:?} is not a number of seconds"))?
            }
            _ => return Ok(cache::DEFAULT_TTL),
        };
        Ok(std::time::Duration::from_secs(secs))
    }

    fn open(&self) -> Result<cache::Cache> {
        let dirs = Dirs::from_env(self.cache_dir.clone());
        Ok(cache::Cache::new(&dirs.cache, self.cache_max_mb << 20, self.ttl()?))
    }
}

#[derive(Args)]
pub struct CacheCommandArgs {
    #[command(subcommand)]
    action: CacheAction,
}

#[derive(clap::Subcommand)]
enum CacheAction {
    /// List the entries: key, size, last use, entrypoint; most recently used first.
    Ls {
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Remove the entries past the TTL or the size bound (every entry with --all).
    Prune {
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        cache: CacheArgs,
    },
}

pub fn cache(a: CacheCommandArgs) -> Result<()> {
    match a.action {
        CacheAction::Ls { cache } => {
            let cache = cache.open()?;
            let now = std::time::SystemTime::now();
            for e in cache.list() {
                let age = now.duration_since(e.last_use).unwrap_or_default().as_secs();
                println!("{}  {:>10}  {:>6}s ago  {}", e.key, human(e.bytes), age, e.entrypoint.join(" "));
            }
        }
        CacheAction::Prune { all, cache } => {
            let (count, bytes) = cache.open()?.evict_all(all);
            progress(&format!("removed {count} entr{} ({})", if count == 1 { "y" } else { "ies" }, human(bytes)));
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct PushArgs {
    /// The image: an OCI tarball, a layout directory or an image in containerd (`build --import`).
    src: String,
    /// Where to: REGISTRY/REPOSITORY:TAG.
    reference: String,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    containerd: ContainerdArgs,
}

pub fn push(a: PushArgs) -> Result<()> {
    let pushed = transfer::push_source(&a.src, &a.reference, &a.containerd.ctr(), &a.registry)?;
    println!("{} {}", writer::normalize_reference(&a.reference)?, pushed.digest);
    Ok(())
}

#[derive(Args)]
pub struct PullArgs {
    /// The image: REGISTRY/REPOSITORY:TAG.
    reference: String,
    /// The platform to take from a multi-platform image.
    #[arg(long, default_value = "wasi/wasm")]
    platform: Platform,
    /// Output tarball, or directory for --format layout.
    #[arg(long)]
    out: PathBuf,
    /// oci: OCI-layout tarball (ctr image import); layout: OCI layout directory.
    #[arg(long, default_value = "oci")]
    format: Format,
    /// Refuse images whose layers are larger than this, in MiB.
    #[arg(long, default_value_t = 1024)]
    max_size_mb: u64,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn pull(a: PullArgs) -> Result<()> {
    if a.format == Format::Docker {
        bail!("pull writes --format oci or layout");
    }
    let (index, blobs) = transfer::pull(&a.reference, &a.platform, a.max_size_mb << 20, &a.registry)?;
    let blobs: Vec<&writer::Blob> = blobs.iter().collect();
    writer::save_layout(&index, &blobs, a.format, &a.out)?;
    progress(&format!("wrote {}", a.out.display()));
    Ok(())
}

/// `languages`: one JSON object a line for each language: its name, aliases, and the extension
/// of a one-file program (how the execute service names the code it builds).
pub fn languages() -> Result<()> {
    // Only the languages a one-file program can be written in.
    for lang in Lang::ALL.into_iter().filter(|l| l.extension().is_some()) {
        let line = serde_json::json!({"name": lang.name(), "aliases": lang.aliases(), "extension": lang.extension()});
        println!("{line}");
    }
    Ok(())
}
