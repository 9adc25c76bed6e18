//! One container's whole life through containerd, for an execution (WasmEdge shim) and for a
//! sandboxed compile (runc) alike: its own snapshot and state directory, stdio captured, a wall
//! clock bound, the cgroup's memory figures read at the exit, and everything deleted afterwards
//! — also when the caller goes away mid-run.
use super::capture::{Capture, Captured};
use super::containerd::{ContainerSpec, Containerd, Stdio};
use super::metrics::Metrics;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The parent of every container cgroup the service makes (`/wasmedge-sandbox/ID`).
pub const CGROUP_PARENT: &str = "wasmedge-sandbox";

/// What to run.
pub struct Run<'a> {
    pub id: String,
    pub runtime: &'a str,
    pub spec: serde_json::Value,
    /// The committed snapshot the container's own snapshot is made on; `None`: the spec's root.
    pub parent_snapshot: Option<&'a str>,
    /// A file given as stdin, or none (/dev/null).
    pub stdin: Option<PathBuf>,
    /// When the service kills the container, from its start: the execution's time limit is the
    /// shim's, so its deadline is a backstop; a compile's is its bound.
    pub deadline: Duration,
    pub output_bound: usize,
    /// Changes (or its sender drops) when the caller is gone: the container is killed.
    pub cancel: watch::Receiver<()>,
}

/// How it ended.
#[derive(Debug, Default)]
pub struct Ended {
    pub exit_code: i32,
    pub stdout: Captured,
    pub stderr: Captured,
    /// Killed by the service at its deadline.
    pub killed_at_deadline: bool,
    pub cancelled: bool,
    pub oom_killed: bool,
    pub memory_peak_bytes: u64,
    pub start: Duration,
    pub run: Duration,
}

pub fn cgroup_path(id: &str) -> String {
    format!("/{CGROUP_PARENT}/{id}")
}

/// Runs `run` in `state_dir/ID` (FIFOs), deleting container, task and snapshot at the end.
pub async fn run(cd: &Containerd, metrics: &Arc<Metrics>, state_dir: &Path, mut run: Run<'_>) -> Result<Ended> {
    let dir = state_dir.join(&run.id);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let snapshot_key = run.parent_snapshot.map(|_| format!("wsbx/run/{}", run.id));
    metrics.containers_in_flight.inc();
    let result = run_in(cd, &dir, &mut run, snapshot_key.as_deref()).await;
    // Always, whatever happened above: nothing of the container may stay.
    let deleted = cd.delete(&run.id, snapshot_key.as_deref()).await;
    metrics.containers_in_flight.dec();
    let _ = std::fs::remove_dir_all(&dir);
    let (mut ended, stdout, stderr) = result?;
    deleted.with_context(|| format!("cleaning up container {}", run.id))?;
    ended.stdout = stdout.finish().await;
    ended.stderr = stderr.finish().await;
    Ok(ended)
}

async fn run_in(
    cd: &Containerd,
    dir: &Path,
    run: &mut Run<'_>,
    snapshot_key: Option<&str>,
) -> Result<(Ended, Capture, Capture)> {
    let stdout = Capture::start(&dir.join("stdout"), run.output_bound)?;
    let stderr = Capture::start(&dir.join("stderr"), run.output_bound)?;
    let started = Instant::now();
    let rootfs = match (run.parent_snapshot, snapshot_key) {
        (Some(parent), Some(key)) => cd.prepare(key, parent).await?,
        _ => Vec::new(),
    };
    let stdin = run.stdin.as_deref().and_then(|p| p.to_str()).unwrap_or_default();
    let stdio = Stdio { stdin, stdout: stdout.path_str(), stderr: stderr.path_str() };
    let spec = ContainerSpec { id: &run.id, runtime: run.runtime, spec: &run.spec, snapshot_key };
    cd.create(&spec, rootfs, &stdio).await?;
    cd.start(&run.id).await?;
    // Tasks.Wait answers for a task that has exited already, too.
    let wait = cd.wait(&run.id);
    tokio::pin!(wait);
    let start = started.elapsed();
    let running = Instant::now();
    let mut ended = Ended { start, ..Default::default() };
    let status = tokio::select! {
        status = &mut wait => Some(status?),
        _ = tokio::time::sleep(run.deadline) => { ended.killed_at_deadline = true; None }
        _ = run.cancel.changed() => { ended.cancelled = true; None }
    };
    let status = match status {
        Some(status) => status,
        None => {
            cd.kill(&run.id).await?;
            wait.await?
        }
    };
    ended.run = running.elapsed();
    ended.exit_code = status as i32;
    let (peak, oom) = cgroup_memory(&cgroup_path(&run.id));
    ended.memory_peak_bytes = peak;
    ended.oom_killed = oom;
    Ok((ended, stdout, stderr))
}

/// Peak memory and whether the OOM killer struck, from the container's cgroup (v2 or v1's
/// memory controller), read after the exit and before the delete removes it.
fn cgroup_memory(path: &str) -> (u64, bool) {
    let read = |p: String| std::fs::read_to_string(p).unwrap_or_default();
    let field = |text: &str, name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0)
    };
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let dir = format!("/sys/fs/cgroup{path}");
        let peak = read(format!("{dir}/memory.peak")).trim().parse().unwrap_or(0);
        (peak, field(&read(format!("{dir}/memory.events")), "oom_kill ") > 0)
    } else {
        let dir = format!("/sys/fs/cgroup/memory{path}");
        let peak = read(format!("{dir}/memory.max_usage_in_bytes")).trim().parse().unwrap_or(0);
        (peak, field(&read(format!("{dir}/memory.oom_control")), "oom_kill ") > 0)
    }
}
