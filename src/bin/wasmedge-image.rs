//! `wasmedge-image`: builds OCI images of WebAssembly modules. The logic lives in
//! `containerd_shim_wasmedge::image::writer` and, for building from source, in `src/build`
//! (compiled into this binary only); this is only argument handling.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use containerd_shim_wasmedge::image::writer::{self, ArtifactSpec, Format, ImageSpec, LayerFile};

/// The build helper: languages, toolchains, the compile cache, containerd through ctr.
#[path = "../build/mod.rs"]
mod build;

#[derive(Parser)]
#[command(
    name = "wasmedge-image",
    about = "Build OCI images of WebAssembly modules"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pack a wasm module (and extra files) into a one-layer wasi/wasm image.
    Pack(PackArgs),
    /// Build an image from source: Rust, C, C++, Go, JavaScript, TypeScript, AssemblyScript or Python.
    Build(build::cli::BuildArgs),
    /// Build (if given a source), import into containerd and run with the WasmEdge shim;
    /// exits with the module's exit code.
    Run(build::cli::RunArgs),
    /// Show an image's platform, layers, entrypoint, and whether it is wasm and why.
    Inspect(build::cli::InspectArgs),
    /// Push an image (a tarball, a layout or an image in containerd) to a registry.
    Push(build::cli::PushArgs),
    /// Pull one platform of an image from a registry into a tarball or layout.
    Pull(build::cli::PullArgs),
    /// Install what languages need to build (apt, npm, PyPI) and prepare their runtimes.
    Toolchains(build::cli::ToolchainsArgs),
    /// List or prune the compile cache.
    Cache(build::cli::CacheCommandArgs),
    /// Compile modules into this node's AOT cache, so their first containers start from
    /// compiled code.
    Precompile(build::cli::PrecompileArgs),
    /// List the languages `build` knows, one JSON object a line (name, aliases, extension).
    Languages,
    /// What `build --sandbox` runs in the build sandbox.
    #[command(hide = true)]
    Compile(build::cli::CompileInSandboxArgs),
}

#[derive(Args)]
struct PackArgs {
    /// The wasm module; it is stored at the entrypoint path.
    #[arg(long)]
    module: PathBuf,
    /// Image reference, e.g. docker.io/library/hello:latest (or just hello).
    #[arg(long)]
    tag: String,
    /// Output tarball, or directory for --format layout.
    #[arg(long)]
    out: PathBuf,
    /// oci: OCI-layout tarball (ctr image import); docker: also docker-archive manifest.json
    /// (docker load); layout: OCI layout directory.
    #[arg(long, default_value = "oci")]
    format: Format,
    /// Absolute path of the module inside the image.
    #[arg(long, default_value = "/app.wasm")]
    entrypoint: String,
    /// Extra file for the layer.
    #[arg(long = "file", value_name = "HOSTPATH:IMAGEPATH")]
    files: Vec<String>,
    #[command(flatten)]
    config: build::cli::ImageConfigArgs,
    /// Write the CNCF wasm artifact layout instead: the module alone as an application/wasm
    /// layer. It has no files, env, workdir or args; run it with its path as the command
    /// (`ctr run ... IMAGE ID /app.wasm`), where the shim puts the module.
    #[arg(long, conflicts_with_all = ["files", "env", "workdir", "args", "platforms"])]
    artifact: bool,
}

fn main() {
    if containerd_shim_wasmedge::version::asked() {
        print!("{}", containerd_shim_wasmedge::version::text("wasmedge-image", None));
        return;
    }
    // Errors on one line, their context first.
    if let Err(e) = run(Cli::parse().command) {
        eprintln!("wasmedge-image: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Pack(args) => pack(args),
        Command::Build(args) => build::cli::build(args),
        Command::Run(args) => std::process::exit(build::cli::run(args)?),
        Command::Inspect(args) => build::cli::inspect(args),
        Command::Push(args) => build::cli::push(args),
        Command::Pull(args) => build::cli::pull(args),
        Command::Toolchains(args) => build::cli::toolchains(args),
        Command::Precompile(args) => build::cli::precompile(args),
        Command::Cache(args) => build::cli::cache(args),
        Command::Languages => build::cli::languages(),
        Command::Compile(args) => build::cli::compile_in_sandbox(args),
    }
}

fn pack(a: PackArgs) -> Result<()> {
    if !a.entrypoint.starts_with('/') {
        bail!(
            "--entrypoint must be an absolute path, got {:?}",
            a.entrypoint
        );
    }
    let module =
        fs::read(&a.module).with_context(|| format!("reading module {}", a.module.display()))?;
    let mut files = vec![LayerFile {
        path: a.entrypoint.clone(),
        data: module,
        mode: 0o755,
    }];
    for f in &a.files {
        let (host, path) = f
            .rsplit_once(':')
            .with_context(|| format!("--file {f:?} is not HOSTPATH:IMAGEPATH"))?;
        let data = fs::read(host).with_context(|| format!("reading {host}"))?;
        let mode = fs::metadata(host)?.permissions().mode() & 0o7777;
        files.push(LayerFile {
            path: path.into(),
            data,
            mode,
        });
    }
    let annotations = a.config.annotations()?;
    let platforms = a.config.platforms()?;
    if a.artifact {
        let spec = ArtifactSpec {
            reference: a.tag,
            module: files.swap_remove(0).data, // the module alone: clap keeps --file out
            annotations,
            created: None,
        };
        let image = writer::build_artifact(&spec)?;
        image.save(a.format, &a.out)?;
        println!("{} {}", image.reference, image.target().digest);
        return Ok(());
    }
    let spec = ImageSpec {
        reference: a.tag,
        files,
        entrypoint: vec![a.entrypoint],
        cmd: a.config.args,
        env: a.config.env,
        working_dir: a.config.workdir,
        annotations,
        created: None,
        base_layers: Vec::new(),
        platforms,
    };
    let image = writer::build(&spec)?;
    image.save(a.format, &a.out)?;
    println!("{} {}", image.reference, image.target().digest);
    Ok(())
}
