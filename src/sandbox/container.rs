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
pub async fn run(cd: &Containerd, metrics: &Arc<Metrics>, state_dir: &Path, run: Run<'_>) -> Result<Ended> {
    let deadline = run.deadline;
    let mut cancel = run.cancel.clone();
    let mut started = start(cd, metrics, state_dir, &run).await?;
    let ended = started.wait(cd, deadline, &mut cancel).await;
    let removed = started.remove(cd, metrics).await;
    let ended = ended?;
    removed.with_context(|| format!("cleaning up container {}", run.id))?;
    Ok(ended)
}

/// A container created and started, until [`Started::remove`].
pub struct Started {
    pub id: String,
    dir: PathBuf,
    snapshot_key: Option<String>,
    stdout: Option<Capture>,
    stderr: Option<Capture>,
    /// containerd's answer to Tasks.Wait, asked at the start: it is there once the task exits.
    exit: tokio::task::JoinHandle<Result<u32>>,
    start: Duration,
}

/// Creates and starts `run`'s container in `state_dir/ID` (its FIFOs); what a failed start made
/// is removed before the error returns.
pub async fn start(cd: &Containerd, metrics: &Arc<Metrics>, state_dir: &Path, run: &Run<'_>) -> Result<Started> {
    let dir = state_dir.join(&run.id);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    metrics.containers_in_flight.inc();
    let snapshot_key = run.parent_snapshot.map(|_| format!("wsbx/run/{}", run.id));
    let began = Instant::now();
    let stdout = Capture::start(&dir.join("stdout"), run.output_bound);
    let stderr = Capture::start(&dir.join("stderr"), run.output_bound);
    let mut started = Started {
        id: run.id.clone(),
        dir,
        snapshot_key,
        stdout: None,
        stderr: None,
        exit: tokio::spawn(async { Ok(0) }),
        start: Duration::ZERO,
    };
    let result = async {
        let (stdout, stderr) = (stdout?, stderr?);
        let rootfs = match (run.parent_snapshot, started.snapshot_key.as_deref()) {
            (Some(parent), Some(key)) => cd.prepare(key, parent).await?,
            _ => Vec::new(),
        };
        let stdin = run.stdin.as_deref().and_then(|p| p.to_str()).unwrap_or_default();
        let (out, err) = (stdout.path_str().to_string(), stderr.path_str().to_string());
        let stdio = Stdio { stdin, stdout: &out, stderr: &err };
        started.stdout = Some(stdout);
        started.stderr = Some(stderr);
        let spec = ContainerSpec { id: &run.id, runtime: run.runtime, spec: &run.spec, snapshot_key: started.snapshot_key.as_deref() };
        cd.create(&spec, rootfs, &stdio).await?;
        cd.start(&run.id).await?;
        // Tasks.Wait answers for a task that has exited already, too.
        started.exit = tokio::spawn({
            let (cd, id) = (cd.clone(), run.id.clone());
            async move { cd.wait(&id).await }
        });
        Ok(())
    }
    .await;
    started.start = began.elapsed();
    match result {
        Ok(()) => Ok(started),
        Err(e) => {
            let _ = started.remove(cd, metrics).await;
            Err(e)
        }
    }
}

impl Started {
    /// The task has exited (or its wait failed): it will never run a request.
    pub fn exited(&self) -> bool {
        self.exit.is_finished()
    }

    /// Waits for the exit, killing the task at `deadline` (from now) or when `cancel` fires;
    /// then the output and the cgroup's memory figures. The container stays until
    /// [`Started::remove`].
    pub async fn wait(&mut self, cd: &Containerd, deadline: Duration, cancel: &mut watch::Receiver<()>) -> Result<Ended> {
        let running = Instant::now();
        let mut ended = Ended { start: self.start, ..Default::default() };
        let status = tokio::select! {
            status = &mut self.exit => Some(status.context("waiting for the task")??),
            _ = tokio::time::sleep(deadline) => { ended.killed_at_deadline = true; None }
            _ = cancel.changed() => { ended.cancelled = true; None }
        };
        let status = match status {
            Some(status) => status,
            None => {
                cd.kill(&self.id).await?;
                (&mut self.exit).await.context("waiting for the task")??
            }
        };
        ended.run = running.elapsed();
        ended.exit_code = status as i32;
        let (peak, oom) = cgroup_memory(&cgroup_path(&self.id));
        ended.memory_peak_bytes = peak;
        ended.oom_killed = oom;
        if let Some(stdout) = self.stdout.take() {
            ended.stdout = stdout.finish().await;
        }
        if let Some(stderr) = self.stderr.take() {
            ended.stderr = stderr.finish().await;
        }
        Ok(ended)
    }

    /// Deletes task, container and snapshot (killing a task that still runs) and the state
    /// directory: nothing of the container stays, whatever happened before.
    pub async fn remove(self, cd: &Containerd, metrics: &Arc<Metrics>) -> Result<()> {
        self.exit.abort();
        let deleted = cd.delete(&self.id, self.snapshot_key.as_deref()).await;
        metrics.containers_in_flight.dec();
        let _ = std::fs::remove_dir_all(&self.dir);
        deleted
    }
}

/// The memory the container's cgroup holds now.
pub fn memory_current(id: &str) -> u64 {
    let path = cgroup_path(id);
    let v2 = format!("/sys/fs/cgroup{path}/memory.current");
    let v1 = format!("/sys/fs/cgroup/memory{path}/memory.usage_in_bytes");
    let read = |p: &str| std::fs::read_to_string(p).ok().and_then(|t| t.trim().parse().ok());
    read(&v2).or_else(|| read(&v1)).unwrap_or(0)
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
