//! The container process. It runs as `containerd-wasmedge-init init`, already in its new
//! namespaces, with the fds of [`crate::protocol`] (stdio, plan, log pipe, compile socket). It
//! builds its filesystem view, opens the AOT cache directory (to read its entry later), joins
//! its cgroup, pivots into the rootfs, drops its privileges, arms its time limit, and only then
//! reads, loads and runs its module, and exits with its code. Each step is a span for the shim.
use super::compile::Aot;
use super::module::load;
use super::{finish, mounts, report, security, ProcessError};
use crate::launch::{cgroup, Launch};
use crate::protocol::{LAUNCH_FD, REPORT_FD};
use crate::engine::{self, ExitCode};
use crate::trace::{self, Span};
use anyhow::{Context, Result};
use nix::mount::{umount2, MntFlags};
use nix::sched::{setns, unshare, CloneFlags};
use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::Path;
use std::sync::OnceLock;
use std::time::SystemTime;

/// Never returns: the process ends with the module's exit code, or a documented code and a
/// one-line reason on the container's stderr.
pub fn main() -> ! {
    finish("container", run())
}

fn run() -> Result<ExitCode, ProcessError> {
    end_on_stop_signals();
    report::log_to_shim(unsafe { File::from_raw_fd(REPORT_FD) });
    let launch: Launch = serde_json::from_reader(unsafe { File::from_raw_fd(LAUNCH_FD) })
        .context("reading the launch plan")
        .map_err(ProcessError::Setup)?;
    let start = SystemTime::now();
    join_namespaces(&launch).map_err(ProcessError::Setup)?;
    mounts::build_rootfs(&launch).map_err(ProcessError::Setup)?;
    let aot = Aot::open(&launch.engine).map_err(ProcessError::Setup)?;
    trace::report(Span::since("setup", start));
    let start = SystemTime::now();
    confine(&launch).map_err(ProcessError::Setup)?;
    if let Some(limit) = launch.engine.limits.time_limit {
        arm_time_limit(limit);
    }
    trace::report(Span::since("confine", start));
    // Nothing of the module has been read yet: from here on it is read through the container's
    // own root, by a process with the container's cgroup, user, capabilities and seccomp filter.
    let root = File::open("/").context("opening the root").map_err(ProcessError::Setup)?;
    let prepared = load(&root, &launch.entrypoint, aot, &launch.engine.limits)?;
    engine::run(prepared, &launch.wasi).map_err(ProcessError::Module)
}

/// Stops the process when its time is up, with a line on its stderr: a wall-clock timer in the
/// process itself, so it holds in the interpreter and in AOT code alike, at no cost per
/// instruction.
pub(super) fn arm_time_limit(limit: std::time::Duration) {
    static MESSAGE: OnceLock<String> = OnceLock::new();
    extern "C" fn expired(_: libc::c_int) {
        if let Some(m) = MESSAGE.get() {
            unsafe { libc::write(2, m.as_ptr().cast(), m.len()) };
        }
        unsafe { libc::_exit(ExitCode::TIME_LIMIT.0) }
    }
    let _ = MESSAGE.set(format!("wasmedge: time limit of {limit:?} exceeded, module stopped\n"));
    let timer = libc::itimerval {
        it_interval: libc::timeval { tv_sec: 0, tv_usec: 0 },
        it_value: libc::timeval { tv_sec: limit.as_secs() as _, tv_usec: limit.subsec_micros().max(1) as _ },
    };
    unsafe {
        libc::signal(libc::SIGALRM, expired as *const () as libc::sighandler_t);
        libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut());
    }
}

/// A module cannot handle signals, and as PID 1 of its namespace the process would ignore them:
/// so a stop signal ends it with the status a killed process has.
fn end_on_stop_signals() {
    extern "C" fn stop(signal: libc::c_int) {
        unsafe { libc::_exit(ExitCode::from_signal(signal).0) }
    }
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        unsafe { libc::signal(signal, stop as *const () as libc::sighandler_t) };
    }
}

/// Puts the process in its cgroup and its own root, and takes away what it does not need. In a
/// user namespace the shim did the cgroup and the OOM score from outside: root in the namespace
/// owns neither the cgroup's files nor the host's /proc.
fn confine(launch: &Launch) -> Result<()> {
    if launch.user.is_none() {
        if let Some(path) = &launch.cgroup {
            cgroup::join(path)?;
        }
        security::adjust_oom_score(&launch.security)?;
    }
    if launch.new_namespace("cgroup") {
        unshare(CloneFlags::CLONE_NEWCGROUP).context("creating the cgroup namespace")?;
    }
    if let (Some(name), true) = (&launch.hostname, launch.new_namespace("uts")) {
        nix::unistd::sethostname(name).context("setting the hostname")?;
    }
    pivot_into(&launch.rootfs)?;
    std::env::set_current_dir(&launch.cwd)
        .with_context(|| format!("working directory {} does not exist", launch.cwd.display()))?;
    security::apply(&launch.security)?;
    if launch.user.is_some() {
        // The change of user left the process undumpable, which makes its /proc entries the
        // host root's: an exec, root only in the namespace, could not open its root and
        // namespaces. A process that executes its program becomes dumpable the same way (runc's).
        nix::sys::prctl::set_dumpable(true).context("making the process dumpable")?;
    }
    Ok(())
}

/// Joins the namespaces the spec names by path (a pod's, for instance).
fn join_namespaces(launch: &Launch) -> Result<()> {
    for ns in &launch.namespaces {
        let Some(path) = &ns.path else { continue };
        if ns.kind == "pid" || ns.kind == "user" {
            // Joining a PID namespace only applies to children: spawn cloned us into it. The
            // user namespace was joined before the process was cloned into its other ones.
            continue;
        }
        let file = File::open(path).with_context(|| format!("opening namespace {}", path.display()))?;
        setns(file, CloneFlags::empty()).with_context(|| format!("joining {} namespace {}", ns.kind, path.display()))?;
    }
    Ok(())
}

/// pivot_root with the old root stacked on the new one, then detached: no path to the host's
/// filesystem is left in the container.
fn pivot_into(root: &Path) -> Result<()> {
    std::env::set_current_dir(root).with_context(|| format!("entering {}", root.display()))?;
    nix::unistd::pivot_root(".", ".").context("pivot_root")?;
    umount2(".", MntFlags::MNT_DETACH).context("detaching the old root")?;
    std::env::set_current_dir("/").context("chdir /")?;
    Ok(())
}
