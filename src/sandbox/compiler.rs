//! From code to a program ready to run: the compile cache (by language and code hash), the
//! build sandbox, and the image it builds unpacked into committed snapshots.
//!
//! A program's snapshots stay while the cache holds it or an execution runs it; then the
//! collector ([`Compiler::collect_forever`]) removes those no other such program shares.
//!
//! Untrusted code is compiled by `wasmedge-image build` (the build helper, the only interface
//! to `src/build`) in the build sandbox (`crate::build_sandbox`), a runc container through the
//! same containerd, with a writable build directory only and a wall-clock bound. Its
//! diagnostics come back as they were written.
use super::container::{self, Run};
use super::containerd::Containerd;
use super::metrics::Metrics;
use super::{hex_sha256, json_lines};
use anyhow::{bail, Context, Result};
use crate::build_sandbox::{self, BuildSandbox, Toolchains};
use crate::image::content::{parse_manifest, select_manifest};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const RUNC: &str = "io.containerd.runc.v2";
/// The build helper's path inside the build sandbox.
const TOOL_IN_SANDBOX: &str = "/opt/wasmedge-image";
/// Diagnostics a compile may return.
const MAX_DIAGNOSTICS: usize = 1 << 20;
/// The names of the committed snapshots of programs' layers.
const LAYER_PREFIX: &str = "wsbx/layer/";
/// How often expired programs are looked for, at most.
const COLLECT_PERIOD: Duration = Duration::from_secs(60);

/// A language of the build helper, as `wasmedge-image languages` lists it.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
pub struct Language {
    pub name: String,
    pub aliases: Vec<String>,
    pub extension: String,
}

/// The languages code can be given in: the build helper's, less `wasm` (a binary module is
/// not code in a JSON string).
pub async fn languages(tool: &Path) -> Result<Vec<Language>> {
    let out = tokio::process::Command::new(tool)
        .arg("languages")
        .output()
        .await
        .with_context(|| format!("running {} languages", tool.display()))?;
    if !out.status.success() {
        bail!("{} languages failed: {}", tool.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let all: Vec<Language> = json_lines(&out.stdout).context("reading the build helper's languages")?;
    Ok(all.into_iter().filter(|l| l.name != "wasm").collect())
}

/// A compiled program: the top of its committed snapshot chain and how to start it.
#[derive(Clone, Debug)]
pub struct Program {
    pub snapshot: String,
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
}

/// A program an execution holds: its snapshots stay until this drops.
pub struct InUse<'a> {
    compiler: &'a Compiler,
    program: Program,
}

impl std::ops::Deref for InUse<'_> {
    type Target = Program;
    fn deref(&self) -> &Program {
        &self.program
    }
}

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        let mut programs = self.compiler.programs();
        let top = &self.program.snapshot;
        let users = programs.in_use.get_mut(top).expect("a program in use is counted");
        *users -= 1;
        if *users == 0 {
            programs.in_use.remove(top);
            if self.compiler.cache_ttl.is_none() {
                self.compiler.collect.notify_one();
            }
        }
    }
}

/// The cache and the programs executions hold (by the top of their snapshot chain).
#[derive(Default)]
struct Programs {
    cached: HashMap<String, (Program, Instant)>,
    in_use: HashMap<String, usize>,
}

pub enum Compiled<'a> {
    Ready { program: InUse<'a>, cache_hit: bool, compile: Duration },
    /// The compiler refused the code: its exit code and diagnostics.
    Failed { exit_code: i32, diagnostics: String, compile: Duration },
}

/// Bounds of one compile.
#[derive(Clone, Debug)]
pub struct BuildLimits {
    pub memory_bytes: u64,
    pub timeout: Duration,
}

pub struct Compiler {
    pub cd: Containerd,
    pub metrics: Arc<Metrics>,
    pub state_dir: PathBuf,
    pub tool: PathBuf,
    pub limits: BuildLimits,
    pub toolchains: Toolchains,
    /// `None`: the cache is off. Entries older than the TTL are compiled again.
    pub cache_ttl: Option<Duration>,
    programs: Mutex<Programs>,
    /// Unpacking (shared) and removing snapshots (exclusive) exclude each other.
    unpacking: tokio::sync::RwLock<()>,
    /// One layer is unpacked at a time: programs share their runtime's layers, and two
    /// unpacks of one layer would race for its blob and snapshot.
    one_layer: tokio::sync::Mutex<()>,
    /// Wakes the collector: a program left the cache (the cache is off).
    collect: tokio::sync::Notify,
    /// One compile per key at a time: concurrent misses of the same code wait for the first.
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Compiler {
    pub fn new(
        cd: Containerd,
        metrics: Arc<Metrics>,
        state_dir: PathBuf,
        tool: PathBuf,
        limits: BuildLimits,
        toolchains: Toolchains,
        cache_ttl: Option<Duration>,
    ) -> Result<Compiler> {
        let compiler = Compiler {
            cd,
            metrics,
            state_dir,
            tool,
            limits,
            toolchains,
            cache_ttl,
            programs: Mutex::default(),
            unpacking: tokio::sync::RwLock::new(()),
            one_layer: tokio::sync::Mutex::new(()),
            collect: tokio::sync::Notify::new(),
            inflight: Mutex::default(),
        };
        compiler.make_build_root()?;
        Ok(compiler)
    }

    fn build_root(&self) -> PathBuf {
        self.state_dir.join("build-root")
    }

    /// The build sandbox's root, with the mount point of the build helper.
    fn make_build_root(&self) -> Result<()> {
        build_sandbox::prepare_root(&self.build_root(), &[TOOL_IN_SANDBOX.trim_start_matches('/')])
    }

    fn programs(&self) -> std::sync::MutexGuard<'_, Programs> {
        self.programs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A program taken for an execution.
    fn hold(&self, programs: &mut Programs, program: Program) -> InUse<'_> {
        *programs.in_use.entry(program.snapshot.clone()).or_default() += 1;
        InUse { compiler: self, program }
    }

    fn cached(&self, key: &str) -> Option<InUse<'_>> {
        let ttl = self.cache_ttl?;
        let mut programs = self.programs();
        let program = programs.cached.get(key).filter(|(_, at)| at.elapsed() < ttl)?.0.clone();
        Some(self.hold(&mut programs, program))
    }

    /// Collects now, then whenever a program may have left: every TTL (at most
    /// [`COLLECT_PERIOD`]) and when an uncached program's last execution ends.
    pub async fn collect_forever(&self) {
        let period = self.cache_ttl.map_or(COLLECT_PERIOD, |ttl| ttl.min(COLLECT_PERIOD));
        loop {
            if let Err(e) = self.collect_garbage().await {
                log::warn!("removing the snapshots of unused programs: {e:#}");
            }
            tokio::select! {
                _ = self.collect.notified() => {}
                _ = tokio::time::sleep(period) => {}
            }
        }
    }

    /// Drops expired programs from the cache and removes the layer snapshots that no cached or
    /// running program uses (left by expired ones, or by an earlier run of the service).
    pub async fn collect_garbage(&self) -> Result<()> {
        let _exclusive = self.unpacking.write().await;
        let keep: HashSet<String> = {
            let mut programs = self.programs();
            let ttl = self.cache_ttl.unwrap_or_default();
            programs.cached.retain(|_, (_, at)| at.elapsed() < ttl);
            programs.cached.values().map(|(p, _)| p.snapshot.clone()).chain(programs.in_use.keys().cloned()).collect()
        };
        let removed = self.cd.remove_unused_snapshots(LAYER_PREFIX, &keep).await?;
        if removed > 0 {
            log::info!("removed {removed} layer snapshots no cached or running program uses");
        }
        Ok(())
    }

    /// The program of `code` in `language`, from the cache or compiled in the build sandbox.
    pub async fn compile(&self, language: &Language, code: &str, cancel: watch::Receiver<()>) -> Result<Compiled<'_>> {
        let key = hex_sha256(format!("v1\0{}\0{code}", language.name).as_bytes());
        if let Some(program) = self.cached(&key) {
            self.metrics.cache_hits.inc();
            return Ok(Compiled::Ready { program, cache_hit: true, compile: Duration::ZERO });
        }
        let gate = self.inflight.lock().unwrap_or_else(|e| e.into_inner()).entry(key.clone()).or_default().clone();
        let _one = gate.lock().await;
        if let Some(program) = self.cached(&key) {
            self.metrics.cache_hits.inc();
            return Ok(Compiled::Ready { program, cache_hit: true, compile: Duration::ZERO });
        }
        self.metrics.cache_misses.inc();
        let started = Instant::now();
        let result = self.build(language, code, &key, cancel).await;
        let compile = started.elapsed();
        self.inflight.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
        let compiled = match result? {
            Ok(program) => Compiled::Ready { program, cache_hit: false, compile },
            Err((exit_code, diagnostics)) => Compiled::Failed { exit_code, diagnostics, compile },
        };
        self.metrics.compile_seconds.get_or_create(&Metrics::language(&language.name)).observe(compile.as_secs_f64());
        Ok(compiled)
    }

    /// One compile in the build sandbox: the program, or the compiler's exit code and stderr.
    async fn build(
        &self,
        language: &Language,
        code: &str,
        key: &str,
        cancel: watch::Receiver<()>,
    ) -> Result<std::result::Result<InUse<'_>, (i32, String)>> {
        let id = format!("wsbx-build-{}-{}", &key[..12], super::unique_suffix());
        let work = self.state_dir.join("builds").join(&id);
        let result = async {
            let source = format!("main.{}", language.extension);
            for dir in ["src", "out", "home", "tmp"] {
                std::fs::create_dir_all(work.join(dir)).with_context(|| format!("creating {}", work.display()))?;
            }
            std::fs::write(work.join("src").join(&source), code)?;
            let args = [
                TOOL_IN_SANDBOX,
                "build",
                &format!("/build/src/{source}"),
                "--lang",
                &language.name,
                "--out",
                "/build/out/image",
                "--format",
                "layout",
                "--no-cache",
                "--cache-dir",
                "/build/home/cache",
            ];
            let spec = self.build_spec(&id, &work, &args);
            let run = Run {
                id: id.clone(),
                runtime: RUNC,
                spec,
                parent_snapshot: None,
                stdin: None,
                deadline: self.limits.timeout,
                output_bound: MAX_DIAGNOSTICS,
                cancel,
            };
            let ended = container::run(&self.cd, &self.metrics, &self.state_dir.join("runs"), run).await?;
            if ended.cancelled {
                bail!("the client went away during the compile");
            }
            if ended.exit_code != 0 || ended.killed_at_deadline {
                let mut diagnostics = diagnostics(&ended.stderr.data);
                if ended.killed_at_deadline {
                    diagnostics.push_str(&format!("compile stopped: over its time limit of {:?}\n", self.limits.timeout));
                } else if ended.oom_killed {
                    diagnostics.push_str(&format!("compile stopped: over its memory limit of {} MiB\n", self.limits.memory_bytes >> 20));
                }
                return Ok(Err((if ended.exit_code == 0 { 1 } else { ended.exit_code }, diagnostics)));
            }
            Ok(Ok(self.unpack(&work.join("out/image"), key).await?))
        }
        .await;
        let _ = std::fs::remove_dir_all(&work);
        result
    }

    /// The runc spec of a compile: the build helper and the toolchains read-only, the build
    /// directory writable.
    fn build_spec(&self, id: &str, work: &Path, args: &[&str]) -> serde_json::Value {
        let t = &self.toolchains;
        let mut read_only = vec![(PathBuf::from(TOOL_IN_SANDBOX), self.tool.clone())];
        read_only.extend(Toolchains::binds(&[&t.rustup_home, &t.cargo_home, &t.prepared]));
        let mut env = t.env();
        env.extend(["HOME=/build/home", "TMPDIR=/build/tmp", "GOCACHE=/build/home/go-build", "GOPATH=/build/home/go"].map(String::from));
        BuildSandbox {
            args: args.iter().map(|a| a.to_string()).collect(),
            env,
            cwd: "/build".into(),
            read_only,
            writable: vec![("/build".into(), work.to_path_buf())],
            memory_bytes: self.limits.memory_bytes,
            cgroups_path: container::cgroup_path(id),
        }
        .spec(&self.build_root())
    }

    /// The OCI layout the build wrote, its layers unpacked into a chain of committed snapshots
    /// (named by the chain's digests, so programs share their runtime's layers); the program
    /// is cached under `key` and held before the collector may run again.
    async fn unpack(&self, layout: &Path, key: &str) -> Result<InUse<'_>> {
        let _shared = self.unpacking.read().await;
        let blob = |digest: &str| -> Result<Vec<u8>> {
            let hex = digest.strip_prefix("sha256:").with_context(|| format!("unsupported digest {digest}"))?;
            std::fs::read(layout.join("blobs/sha256").join(hex)).with_context(|| format!("reading blob {digest}"))
        };
        let index = std::fs::read(layout.join("index.json")).context("reading the build's index.json")?;
        // index.json names the tag's image index (one manifest per platform), or a manifest.
        let mut top = blob(&select_manifest(&index)?.digest)?;
        if serde_json::from_slice::<serde_json::Value>(&top).is_ok_and(|v| v["manifests"].is_array()) {
            top = blob(&select_manifest(&top)?.digest)?;
        }
        let manifest = parse_manifest(&top)?;
        let config: ImageConfig = serde_json::from_slice(&blob(&manifest.config.digest)?).context("reading the image config")?;
        let mut parent = String::new();
        for layer in &manifest.layers {
            let name = format!("{LAYER_PREFIX}{}", hex_sha256(format!("{parent}\0{}", layer.digest).as_bytes()));
            let _one = self.one_layer.lock().await;
            self.cd.unpack_layer(&name, &parent, &layer.media_type, &blob(&layer.digest)?).await?;
            parent = name;
        }
        let mut entrypoint = config.config.entrypoint.unwrap_or_default();
        entrypoint.extend(config.config.cmd.unwrap_or_default());
        let program = Program { snapshot: parent, entrypoint, env: config.config.env.unwrap_or_default() };
        let mut programs = self.programs();
        if self.cache_ttl.is_some() {
            programs.cached.insert(key.to_string(), (program.clone(), Instant::now()));
        }
        Ok(self.hold(&mut programs, program))
    }
}

#[derive(Deserialize)]
struct ImageConfig {
    #[serde(default)]
    config: ProcessConfig,
}

#[derive(Default, Deserialize)]
struct ProcessConfig {
    #[serde(rename = "Entrypoint")]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd")]
    cmd: Option<Vec<String>>,
    #[serde(rename = "Env")]
    env: Option<Vec<String>>,
}

/// The compiler's stderr as it wrote it, less the build helper's own progress lines.
fn diagnostics(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .split_inclusive('\n')
        .filter(|line| !line.starts_with("wasmedge-image: "))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_keep_the_compilers_lines_verbatim() {
        let stderr = b"wasmedge-image: cache miss: c 1234: compiling /build/src/main.c\nmain.c:1:1: error: x\n    1 | y\n      | ^\nError: clang failed (exit status: 1)\n";
        assert_eq!(diagnostics(stderr), "main.c:1:1: error: x\n    1 | y\n      | ^\nError: clang failed (exit status: 1)\n");
    }
}
