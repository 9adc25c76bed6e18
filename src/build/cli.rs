//! The `build`, `run`, `inspect` and `toolchains` subcommands of `wasmedge-image`: arguments
//! and their mapping onto the build helper.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use containerd_shim_wasmedge::image::writer::Format;

use super::ctr::{self, Ctr};
use super::util::{human_size, progress};
use super::{cache, inspect as inspector, precompile, toolchains as tc, BuildOptions, Dirs, Lang};

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
    /// Language: rust, c, c++, go, javascript, typescript, python, wasm (default: detected from
    /// the file extension or the project's manifest).
    #[arg(long)]
    lang: Option<String>,
    /// Extra argument for the compiler (clang, rustc/cargo, go build, esbuild); repeat for several.
    #[arg(long = "compiler-arg", value_name = "X", allow_hyphen_values = true)]
    compiler_args: Vec<String>,
    /// Compile even if the cache has the result (which is then replaced).
    #[arg(long)]
    no_cache: bool,
    /// The compile cache (default $WASMEDGE_IMAGE_CACHE, else ~/.cache/wasmedge-image/builds).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Bound of the compile cache in MiB; least recently used entries go first.
    #[arg(long, default_value_t = cache::DEFAULT_MAX_BYTES >> 20)]
    cache_max_mb: u64,
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
            cache_max_bytes: self.cache_max_mb << 20,
            ..Default::default()
        };
        Ok((opts, Dirs::from_env(self.cache_dir.clone())))
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
}

pub fn build(a: BuildArgs) -> Result<()> {
    if a.out.is_none() && !a.import && !a.load && !a.precompile {
        bail!("nothing to do with the image: give --out FILE, --import, --load or --precompile");
    }
    let (mut opts, dirs) = a.compile.options()?;
    opts.entrypoint = (!a.entrypoint.is_empty()).then(|| a.entrypoint.clone());
    opts.args = a.config.args.clone();
    opts.env = a.config.env.clone();
    opts.workdir = a.config.workdir.clone();
    opts.annotations = a.config.annotations()?;
    let built = super::build(&a.src, &opts, &dirs)?;
    let image = &built.image;
    let size: u64 = image.layers().iter().map(|l| l.data.len() as u64).sum();
    progress(&format!(
        "image {} ({}, {} layer{}, {})",
        image.reference,
        built.lang,
        image.layers().len(),
        if image.layers().len() == 1 { "" } else { "s" },
        human_size(size)
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
    if a.precompile {
        precompile::precompile_built(&built, a.aot_dir.as_deref())?;
    }
    println!("{} {}", image.reference, image.manifest.digest);
    Ok(())
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
    let report = inspector::inspect(reference, ctr)?;
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
    /// An image file (OCI tarball, docker-archive, layout directory) or an image in containerd.
    target: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    containerd: ContainerdArgs,
}

pub fn inspect(a: InspectArgs) -> Result<()> {
    let report = inspector::inspect(&a.target, &a.containerd.ctr())?;
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
    /// Languages (default: all): rust, c, c++, go, javascript, typescript, python.
    langs: Vec<String>,
}

pub fn toolchains(a: ToolchainsArgs) -> Result<()> {
    let langs = a.langs.iter().map(|l| l.parse::<Lang>()).collect::<Result<Vec<_>>>()?;
    tc::install(&langs, &Dirs::from_env(None))
}
