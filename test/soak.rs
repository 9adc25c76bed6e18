//! Soak: many `ctr run --rm` of the hello module through one private containerd, one after the
//! other, then several at a time, then many through one long-lived shim (the containers of a
//! pod), and afterwards nothing may be left: shim and container processes, mounts, cgroups,
//! containerd's task state directories, containers, tasks, snapshots, and file descriptors of
//! containerd, of the long-lived shim and of the zygote. Each figure is counted and printed.
//!
//! The counts come from the environment, so `make test` runs a short soak and `make soak` the
//! long one through the same code: SOAK_SEQUENTIAL (default 50), SOAK_CONCURRENT (40),
//! SOAK_PARALLEL (8 at a time), SOAK_POD (20). Needs containerd, ctr and root, like test/e2e.rs.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

const HELLO: &str = "Hello from WasmEdge!\n";
const SANDBOX_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

fn count(var: &str, default: usize) -> usize {
    match std::env::var(var) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{var}={v:?} is not a count")),
        Err(_) => default,
    }
}

/// Every run's id starts with this, so the counts below see only this soak's containers even
/// when other containerds on the machine use the same namespace.
fn prefix() -> String {
    format!("soak-{}-", std::process::id())
}

/// What one soak run may leave behind, counted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Residue {
    /// Shim processes of this containerd (their argv names its socket).
    shims: Vec<i32>,
    /// The containers' own processes: children of the shims, or members of a soak container's
    /// cgroup (which outlive their shim if it leaks them).
    container_processes: Vec<i32>,
    /// Mount points under this containerd's directory.
    mounts: Vec<String>,
    /// cgroup directories of the soak's containers, in every hierarchy.
    cgroups: Vec<PathBuf>,
    /// Entries of containerd's task state directory for the namespace.
    task_state: Vec<String>,
    /// `ctr container ls`, `ctr task ls`.
    containers: Vec<String>,
    tasks: Vec<String>,
}

impl Residue {
    fn take(containerd: &Containerd) -> Residue {
        let dir = containerd.dir.path().to_path_buf();
        let sock = containerd.sock().to_string_lossy().into_owned();
        let mut residue = Residue::default();
        let all = processes();
        for (pid, argv) in &all {
            if argv.iter().any(|a| *a == sock) && argv.first().is_some_and(|a| a.contains("containerd-shim")) {
                residue.shims.push(*pid);
            }
        }
        let zygotes = zygotes();
        let cgroup = format!(":/{NAMESPACE}/{}", prefix());
        for (pid, _) in &all {
            let in_soak_cgroup =
                fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.lines().any(|l| l.contains(&cgroup)));
            let parent = state_and_parent(*pid).map_or(0, |(_, parent)| parent);
            let forked_for_us = residue.shims.contains(&parent) || zygotes.contains(&parent);
            if !residue.shims.contains(pid) && (in_soak_cgroup || forked_for_us) {
                residue.container_processes.push(*pid);
            }
        }
        let under = format!("{}/", dir.display());
        residue.mounts = mount_points().into_iter().filter(|m| m.starts_with(&under)).collect();
        residue.cgroups = soak_cgroups();
        let task_dir = dir.join("state/io.containerd.runtime.v2.task").join(NAMESPACE);
        residue.task_state = list(&task_dir);
        let quiet = |args: &[&str]| containerd.quiet_ctr(args).lines().map(str::to_string).collect::<Vec<_>>();
        residue.containers = quiet(&["container", "ls", "-q"]);
        residue.tasks = quiet(&["task", "ls", "-q"]);
        residue
    }

    fn is_clean(&self) -> bool {
        *self == Residue::default()
    }

    fn summary(&self) -> String {
        format!(
            "{} shims, {} container processes, {} mounts, {} cgroups, {} task state dirs, {} containers, {} tasks",
            self.shims.len(),
            self.container_processes.len(),
            self.mounts.len(),
            self.cgroups.len(),
            self.task_state.len(),
            self.containers.len(),
            self.tasks.len()
        )
    }
}

fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// ctr gives a container the cgroup /NAMESPACE/ID: the soak's, in every hierarchy (v1 here, or
/// the unified v2 root).
fn soak_cgroups() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut parents = vec![root.join(NAMESPACE)];
    parents.extend(fs::read_dir(root).into_iter().flatten().flatten().map(|e| e.path().join(NAMESPACE)));
    let prefix = prefix();
    parents
        .iter()
        .flat_map(|p| list(p).into_iter().filter(|n| n.starts_with(&prefix)).map(move |n| p.join(n)))
        .collect()
}

fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn thread_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0)
}

fn rss_kib(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The containerd daemon of the fixture (its argv names its config file).
fn containerd_pid(containerd: &Containerd) -> i32 {
    let config = containerd.dir.path().join("config.toml").to_string_lossy().into_owned();
    processes()
        .into_iter()
        .find(|(_, argv)| argv.first().is_some_and(|a| a.ends_with("containerd")) && argv.contains(&config))
        .map(|(pid, _)| pid)
        .expect("the fixture's containerd is not running")
}

fn snapshot_count(containerd: &Containerd) -> usize {
    containerd.ctr_ok(&["snapshot", "ls"]).lines().skip(1).count()
}

/// One `ctr run --rm` of hello; `Err` describes what went wrong.
fn run_once(containerd: &Containerd, id: &str, opts: &[&str]) -> Result<Duration, String> {
    let started = Instant::now();
    let mut cmd = containerd.run_command(id, HELLO_IMAGE, &[&["--rm"], opts].concat(), &[]);
    match exec(&mut cmd, Some(""), CTR_TIMEOUT) {
        Ok(out) if out.code == 0 && out.stdout == HELLO => Ok(started.elapsed()),
        Ok(out) => Err(format!("{id}: {out:?}\n{}", log_of(containerd, id))),
        Err(out) => Err(format!("{id}: timed out after {CTR_TIMEOUT:?}: {out:?}\n{}", log_of(containerd, id))),
    }
}

/// containerd's (and the shims') log lines about container `id`, and its task's state.
fn log_of(containerd: &Containerd, id: &str) -> String {
    let lines: Vec<String> = containerd.log().lines().filter(|l| l.contains(id)).map(str::to_string).collect();
    let task = containerd.quiet_ctr(&["task", "ls"]).lines().filter(|l| l.contains(id)).collect::<Vec<_>>().join("\n");
    format!("  task: {task}\n  log:\n    {}", lines.join("\n    "))
}

/// Latencies of a phase: (p50, p99, max).
fn percentiles(mut times: Vec<Duration>) -> String {
    if times.is_empty() {
        return "no runs".into();
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    format!("p50 {:?}, p99 {:?}, max {:?}", at(0.5), at(0.99), at(1.0))
}

struct Phase {
    name: &'static str,
    runs: usize,
    took: Duration,
    latencies: Vec<Duration>,
    failures: Vec<String>,
}

impl Phase {
    fn report(&self) -> String {
        format!(
            "{}: {} runs in {:.1?} ({:.1} runs/s), {}, {} failed",
            self.name,
            self.runs,
            self.took,
            self.runs as f64 / self.took.as_secs_f64().max(1e-9),
            percentiles(self.latencies.clone()),
            self.failures.len()
        )
    }
}

/// `runs` runs of hello, `parallel` at a time, with `opts`.
fn phase(containerd: &Containerd, name: &'static str, runs: usize, parallel: usize, opts: &[&str]) -> Phase {
    let next = AtomicUsize::new(0);
    let results = Mutex::new((Vec::new(), Vec::new()));
    let started = Instant::now();
    thread::scope(|s| {
        for _ in 0..parallel.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= runs {
                    break;
                }
                let result = run_once(containerd, &format!("{}{name}-{i}", prefix()), opts);
                let mut results = results.lock().unwrap();
                match result {
                    Ok(latency) => results.0.push(latency),
                    Err(failure) => results.1.push(failure),
                }
            });
        }
    });
    let (latencies, failures) = results.into_inner().unwrap();
    let phase = Phase { name, runs, took: started.elapsed(), latencies, failures };
    eprintln!("soak: {}", phase.report());
    phase
}

#[test]
fn soak_leaves_nothing_behind() {
    let (sequential, concurrent, parallel, pod) =
        (count("SOAK_SEQUENTIAL", 50), count("SOAK_CONCURRENT", 40), count("SOAK_PARALLEL", 8), count("SOAK_POD", 20));
    let containerd = Containerd::with_hello();
    let daemon = containerd_pid(&containerd);
    // Warm up: the first run compiles the module into the AOT cache and loads what containerd
    // loads lazily, so the baseline below is containerd's steady state.
    for i in 0..3 {
        run_once(&containerd, &format!("{}warmup-{i}", prefix()), &[]).unwrap();
    }
    let settle = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let residue = Residue::take(&containerd);
            if residue.is_clean() || Instant::now() > deadline {
                eprintln!("soak: after {what}: {}", residue.summary());
                return residue;
            }
            thread::sleep(Duration::from_millis(200));
        }
    };
    assert!(settle("warm-up").is_clean(), "the warm-up runs left something behind");
    let (fds_before, threads_before, rss_before) = (fd_count(daemon), thread_count(daemon), rss_kib(daemon));
    let snapshots_before = snapshot_count(&containerd);
    let zygote = zygotes().first().copied();
    let zygote_before = zygote.map(|z| (fd_count(z), thread_count(z), rss_kib(z)));

    let mut phases = vec![
        phase(&containerd, "sequential", sequential, 1, &[]),
        phase(&containerd, "concurrent", concurrent, parallel, &[]),
    ];
    let after_runs = settle("sequential and concurrent runs");

    // Through one long-lived shim, as the containers of a pod: a sentinel keeps it alive and
    // its descriptors, threads and memory are compared before and after.
    let group = format!("{}pod", prefix());
    let sentinel = format!("{}sentinel", prefix());
    let annotation = format!("{SANDBOX_ANNOTATION}={group}");
    let started = exec_bounded(
        &mut containerd.run_command(&sentinel, HELLO_IMAGE, &["-d", "--annotation", &annotation], &["sleep", "3600"]),
        None,
        CTR_TIMEOUT,
    );
    assert_eq!(started.code, 0, "starting the sentinel failed: {started:?}");
    // The counters see a live container, so their zeros below mean something.
    let live = Residue::take(&containerd);
    eprintln!("soak: with the sentinel running: {}", live.summary());
    assert!(
        [live.shims.len(), live.container_processes.len(), live.mounts.len(), live.cgroups.len(), live.task_state.len()]
            .iter()
            .all(|n| *n >= 1)
            && live.containers == [sentinel.clone()]
            && live.tasks == [sentinel.clone()],
        "the leak counters do not see the running sentinel: {live:#?}"
    );
    let shim = live.shims[0];
    run_once(&containerd, &format!("{}pod-warmup", prefix()), &["--annotation", &annotation]).unwrap();
    let shim_before = (fd_count(shim), thread_count(shim), rss_kib(shim));
    phases.push(phase(&containerd, "pod", pod, parallel.min(4), &["--annotation", &annotation]));
    let shim_after = (fd_count(shim), thread_count(shim), rss_kib(shim));
    eprintln!(
        "soak: the pod's shim {shim}: fds {} -> {}, threads {} -> {}, RSS {} -> {} KiB",
        shim_before.0, shim_after.0, shim_before.1, shim_after.1, shim_before.2, shim_after.2
    );
    let shim_alive = Path::new(&format!("/proc/{shim}")).exists();
    containerd.ctr_ok(&["task", "kill", "-s", "SIGKILL", &sentinel]);
    wait_until("the sentinel to stop", Duration::from_secs(30), || {
        containerd.task(&sentinel).is_some_and(|(_, status)| status == "STOPPED")
    });
    containerd.delete_task(&sentinel);
    containerd.ctr_ok(&["container", "delete", &sentinel]);
    let residue = settle("the pod's runs");

    let (fds_after, threads_after, rss_after) = (fd_count(daemon), thread_count(daemon), rss_kib(daemon));
    let snapshots_after = snapshot_count(&containerd);
    let total: usize = phases.iter().map(|p| p.runs).sum();
    eprintln!(
        "soak: containerd {daemon}: fds {fds_before} -> {fds_after}, threads {threads_before} -> {threads_after}, \
         RSS {rss_before} -> {rss_after} KiB; snapshots {snapshots_before} -> {snapshots_after}; {total} runs"
    );

    let zygote_after = zygote.map(|z| (fd_count(z), thread_count(z), rss_kib(z)));
    if let (Some(z), Some(before), Some(after)) = (zygote, zygote_before, zygote_after) {
        eprintln!(
            "soak: the zygote {z}: fds {} -> {}, threads {} -> {}, RSS {} -> {} KiB",
            before.0, after.0, before.1, after.1, before.2, after.2
        );
    }

    let failures: Vec<&String> = phases.iter().flat_map(|p| &p.failures).collect();
    assert!(
        failures.is_empty(),
        "{} of {total} runs failed, first ones:\n{}",
        failures.len(),
        failures.iter().take(5).map(|f| f.as_str()).collect::<Vec<_>>().join("\n")
    );
    assert!(after_runs.is_clean(), "left behind after the sequential and concurrent runs: {after_runs:#?}");
    assert!(residue.is_clean(), "left behind after the pod's runs: {residue:#?}");
    assert_eq!(snapshots_after, snapshots_before, "snapshots were left behind");
    assert!(shim_alive, "the pod's shim died during its runs");
    // A leak grows with the number of runs; a handful of descriptors is containerd's own churn.
    let slack = 8;
    assert!(fds_after <= fds_before + slack, "containerd's descriptors grew from {fds_before} to {fds_after} over {total} runs");
    assert!(
        shim_after.0 <= shim_before.0 + slack,
        "the pod's shim's descriptors grew from {} to {} over {pod} runs",
        shim_before.0,
        shim_after.0
    );
    if let (Some(z), Some(before)) = (zygote, zygote_before) {
        assert!(Path::new(&format!("/proc/{z}")).exists(), "the zygote {z} died during the soak");
        let after = zygote_after.unwrap();
        assert!(after.0 <= before.0 + slack, "the zygote's descriptors grew from {} to {} over {total} runs", before.0, after.0);
    }
    assert!(
        shim_after.1 <= shim_before.1 + slack,
        "the pod's shim's threads grew from {} to {} over {pod} runs",
        shim_before.1,
        shim_after.1
    );
}
