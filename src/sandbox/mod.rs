//! The execute service, `wasmedge-sandbox serve`: an HTTP API that runs untrusted code, each
//! execution a container of its own through containerd and the WasmEdge shim, each compile a
//! runc container (the build sandbox).
//!
//! - [`api`]: routes and JSON errors; [`execute`]: one request's way; [`compiler`]: the compile
//!   cache, the build sandbox and unpacking; [`container`]: one container's life;
//!   [`pool`]: warm slots; [`spec`]: an execution's OCI spec; [`containerd`]: the gRPC client; [`capture`]: bounded stdio; [`limits`], [`tenants`]
//!   (keys, rate, concurrency, queue), [`metrics`] and [`telemetry`] (OpenTelemetry spans).
pub mod api;
pub mod capture;
pub mod compiler;
pub mod container;
pub mod containerd;
pub mod execute;
pub mod limits;
pub mod metrics;
pub mod pool;
pub mod spec;
pub mod telemetry;
pub mod tenants;

use anyhow::{bail, Context, Result};
use clap::Args;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The shim binary containerd runs for [`spec::WASMEDGE_RUNTIME`].
pub const SHIM_BINARY: &str = "containerd-shim-wasmedge-v1";

/// `wasmedge-sandbox serve` and its settings; limits also come from the seed's variables.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on. A non-loopback address needs --api-keys.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// containerd's gRPC socket.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    pub address: PathBuf,
    /// containerd namespace of the service's containers, snapshots and lease.
    #[arg(long, default_value = "wasmedge-sandbox")]
    pub namespace: String,
    /// containerd snapshotter.
    #[arg(long, default_value = "overlayfs")]
    pub snapshotter: String,
    /// Working state: FIFOs, scratch directories, builds, the build sandbox's root.
    #[arg(long, default_value = "/var/lib/wasmedge-sandbox")]
    pub state_dir: PathBuf,
    /// The build helper (default: wasmedge-image beside this binary, else on PATH).
    #[arg(long)]
    pub image_tool: Option<PathBuf>,
    /// File of API keys (bearer tokens), one a line.
    #[arg(long)]
    pub api_keys: Option<PathBuf>,
    /// Default memory limit of an execution, bytes.
    #[arg(long, env = "WASMEDGE_MEMORY_LIMIT", default_value_t = 128 << 20)]
    pub memory_limit: u64,
    /// Highest memory limit a request may ask for, bytes.
    #[arg(long, default_value_t = 1 << 30)]
    pub max_memory_limit: u64,
    /// Default time limit of an execution, ms.
    #[arg(long, env = "WASMEDGE_TIMEOUT", default_value_t = 30_000)]
    pub timeout: u64,
    /// Highest time limit a request may ask for, ms.
    #[arg(long, default_value_t = 120_000)]
    pub max_timeout: u64,
    /// Keep compiled programs (true/false).
    #[arg(long, env = "WASM_CACHE_ENABLED", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub cache: bool,
    /// How long a compiled program is kept, seconds.
    #[arg(long, env = "WASM_CACHE_TTL", default_value_t = 3600)]
    pub cache_ttl: u64,
    /// Executions at once (compiles included).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Requests that may wait for a slot; more get 503.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// Requests per second of one key (token bucket refill).
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Burst of one key's token bucket.
    #[arg(long, default_value_t = 40.0)]
    pub burst: f64,
    /// Executions of one key at once; more get 429.
    #[arg(long, default_value_t = 8)]
    pub key_concurrency: usize,
    /// Memory bound of a compile, bytes.
    #[arg(long, default_value_t = 2 << 30)]
    pub compile_memory_limit: u64,
    /// Time bound of a compile, ms.
    #[arg(long, default_value_t = 120_000)]
    pub compile_timeout: u64,
    /// Warm slots kept per language (Python, JavaScript): containers started ahead, their
    /// interpreter initialised; 0 turns the pool off.
    #[arg(long, default_value_t = 8)]
    pub pool: usize,
    /// What all warm slots together may hold, bytes: an equal share for each language.
    #[arg(long, default_value_t = 1 << 30)]
    pub pool_memory: u64,
}

/// What every request shares.
pub struct Service {
    pub cd: containerd::Containerd,
    pub compiler: compiler::Compiler,
    pub languages: Vec<compiler::Language>,
    pub policy: limits::Policy,
    pub tenants: tenants::Tenants,
    pub admission: tenants::Admission,
    pub metrics: Arc<metrics::Metrics>,
    pub state_dir: PathBuf,
    pub pool: pool::Pool,
}

pub async fn serve(args: ServeArgs) -> Result<()> {
    telemetry::init();
    let keys = args.api_keys.as_deref().map(tenants::read_keys).transpose()?;
    if keys.is_none() && !args.listen.ip().is_loopback() {
        bail!("refusing to listen on {} without --api-keys: only a loopback address may go without keys", args.listen);
    }
    let policy = limits::Policy {
        default_memory: args.memory_limit,
        max_memory: args.max_memory_limit.max(args.memory_limit),
        default_timeout: Duration::from_millis(args.timeout),
        max_timeout: Duration::from_millis(args.max_timeout.max(args.timeout)),
    };
    policy.limits(None).map_err(anyhow::Error::msg).context("the default limits")?;
    let tool = match args.image_tool {
        Some(tool) => tool,
        None => beside_self("wasmedge-image").context("wasmedge-image not found beside this binary or on PATH; pass --image-tool")?,
    };
    // Absolute: containerd and runc bind it into the build sandbox.
    let tool = std::fs::canonicalize(&tool).with_context(|| format!("finding {}", tool.display()))?;
    let languages = compiler::languages(&tool).await?;
    for dir in ["runs", "scratch", "builds"] {
        std::fs::create_dir_all(args.state_dir.join(dir)).with_context(|| format!("creating {}", args.state_dir.display()))?;
    }
    let cd = containerd::Containerd::connect(&args.address, &args.namespace, &args.snapshotter).await?;
    cd.ensure_lease().await?;
    sweep(&cd, &args.state_dir).await?;
    let metrics = Arc::new(metrics::Metrics::new());
    let compiler = compiler::Compiler::new(
        cd.clone(),
        metrics.clone(),
        args.state_dir.clone(),
        tool,
        compiler::BuildLimits { memory_bytes: args.compile_memory_limit, timeout: Duration::from_millis(args.compile_timeout) },
        crate::build_sandbox::Toolchains::from_env(),
        args.cache.then(|| Duration::from_secs(args.cache_ttl)),
    )?;
    let pool = pool::Pool::new(args.pool, args.pool_memory, &policy, metrics.clone());
    let service = Arc::new(Service {
        cd,
        compiler,
        languages,
        policy,
        tenants: tenants::Tenants::new(keys, tenants::Rate { per_second: args.rate, burst: args.burst }, args.key_concurrency),
        admission: tenants::Admission::new(args.concurrency, args.queue),
        metrics,
        state_dir: args.state_dir.clone(),
        pool,
    });
    // It first removes the layers an earlier run left: nothing is cached or running yet.
    tokio::spawn({
        let service = service.clone();
        async move { service.compiler.collect_forever().await }
    });
    tokio::spawn(pool::keep_filled(service.clone()));
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    log::info!(
        "listening on {} (containerd {}, namespace {}, {} languages)",
        listener.local_addr()?,
        args.address.display(),
        args.namespace,
        service.languages.len()
    );
    let served = axum::serve(listener, api::router(service.clone()))
        .with_graceful_shutdown(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("a SIGTERM handler");
            tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
            log::info!("shutting down: finishing the executions under way");
        })
        .await
        .context("serving HTTP");
    service.pool.close(Duration::from_secs(15)).await;
    served
}

/// What a previous run of the service left (it was killed mid-execution): its containers,
/// their snapshots, and its state directories.
async fn sweep(cd: &containerd::Containerd, state_dir: &Path) -> Result<()> {
    for (id, snapshot) in cd.own_containers().await? {
        log::warn!("removing container {id}, left by an earlier run");
        cd.delete(&id, (!snapshot.is_empty()).then_some(snapshot.as_str())).await?;
    }
    for dir in ["runs", "scratch", "builds"] {
        for entry in std::fs::read_dir(state_dir.join(dir))?.flatten() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

/// `name` beside this executable, else on PATH.
fn beside_self(name: &str) -> Option<PathBuf> {
    let beside = std::env::current_exe().ok()?.parent()?.join(name);
    if beside.is_file() {
        return Some(beside);
    }
    on_path(name)
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

/// The shim, where containerd (which runs with the same PATH on a node) finds it.
pub fn find_shim() -> Option<PathBuf> {
    on_path(SHIM_BINARY)
}

pub fn hex_sha256(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// A suffix that makes container ids unique within this process and across restarts.
pub fn unique_suffix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// One JSON value a line.
pub fn json_lines<T: serde::de::DeserializeOwned>(text: &[u8]) -> Result<Vec<T>> {
    String::from_utf8_lossy(text)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("malformed line {l:?}")))
        .collect()
}
