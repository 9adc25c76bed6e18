//! An exec process in a running wasm container: another module, or the same one with other
//! arguments, run inside the container.
//!
//! The shim clones the process straight into the container's PID namespace (see
//! [`crate::launch::exec`]); the process re-executes this binary as `exec`, reads its plan
//! from fd 3, opens the AOT cache, joins the container's cgroup and its other namespaces
//! (`/proc/PID/ns/*`), takes the container's root (`/proc/PID/root`) as its own, drops to the
//! exec's user and capabilities and arms the time limit as the init does, and only then reads,
//! loads and runs the module with its own argv, environment, stdio and exit code.
use super::compile::Aot;
use super::module::load;
use super::{finish, init, report, security, ProcessError};
use crate::engine::{self, ExitCode};
use crate::launch::{cgroup, exec::ExecPlan};
use crate::protocol::{LAUNCH_FD, REPORT_FD};
use anyhow::{Context, Result};
use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::PathBuf;

/// Namespaces an exec process joins besides the PID namespace (entered at clone) and the
/// mount namespace (entered last, see `enter`).
const JOINED: &[(&str, CloneFlags)] = &[
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
];

/// The exec process's main: never returns, exits like a container process (same exit codes,
/// one line of reason on its stderr).
pub fn main() -> ! {
    report::log_to_shim(unsafe { File::from_raw_fd(REPORT_FD) });
    finish("exec", run())
}

fn run() -> Result<ExitCode, ProcessError> {
    let plan: ExecPlan = serde_json::from_reader(unsafe { File::from_raw_fd(LAUNCH_FD) })
        .context("reading the exec plan")
        .map_err(ProcessError::Setup)?;
    let proc_dir = PathBuf::from(format!("/proc/{}", plan.pid));
    let setup = |e: anyhow::Error| ProcessError::Setup(e.context(format!("entering container process {}", plan.pid)));
    // Everything of the container is opened first: /proc is the host's only until we move.
    let root = File::open(proc_dir.join("root")).context("opening its root").map_err(setup)?;
    let namespaces = JOINED
        .iter()
        .map(|(kind, flag)| Ok((*kind, *flag, File::open(proc_dir.join("ns").join(kind)).with_context(|| format!("opening its {kind} namespace"))?)))
        .collect::<Result<Vec<_>>>()
        .map_err(setup)?;
    let mnt = File::open(proc_dir.join("ns/mnt")).context("opening its mount namespace").map_err(setup)?;
    let aot = Aot::open(&plan.engine).map_err(ProcessError::Setup)?;

    // In a user namespace the shim did both from outside, before the process was let go on.
    if let (Some(path), false) = (&plan.cgroup, plan.user_namespace) {
        cgroup::join(path).map_err(setup)?;
    }
    for (kind, flag, ns) in namespaces {
        // One it is in already (the container did not get a new one) is not entered again: in
        // a user namespace, entering one the host's owns is refused.
        if same_file(&ns, &format!("/proc/self/ns/{kind}")) {
            continue;
        }
        setns(ns, flag).with_context(|| format!("joining its {kind} namespace")).map_err(setup)?;
    }
    if !plan.user_namespace {
        security::adjust_oom_score(&plan.security).map_err(ProcessError::Setup)?;
    }
    enter(&root, mnt).map_err(setup)?;
    std::env::set_current_dir(&plan.cwd)
        .with_context(|| format!("working directory {} does not exist", plan.cwd.display()))
        .map_err(ProcessError::Setup)?;
    security::apply(&plan.security).map_err(ProcessError::Setup)?;
    if let Some(limit) = plan.engine.limits.time_limit {
        init::arm_time_limit(limit);
    }
    // As in init: the module is read only now, through the container's root.
    let root = File::open("/").context("opening the root").map_err(ProcessError::Setup)?;
    let prepared = load(&root, &plan.entrypoint, aot, &plan.engine.limits)?;
    engine::run(prepared, &plan.wasi).map_err(ProcessError::Module)
}

fn same_file(file: &File, path: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Takes the container's root (with the container's mounts on it) as this process's root. The
/// process enters the container's mount namespace too, unless the engine already started
/// threads, which setns(CLONE_NEWNS) refuses: the root alone gives the same view of files.
fn enter(root: &File, mnt: File) -> Result<()> {
    if let Err(e) = setns(mnt, CloneFlags::CLONE_NEWNS) {
        log::debug!("staying in the shim's mount namespace: {e}");
    }
    nix::unistd::fchdir(root).context("entering its root")?;
    nix::unistd::chroot(".").context("chroot into its root")?;
    std::env::set_current_dir("/").context("chdir /")?;
    Ok(())
}
