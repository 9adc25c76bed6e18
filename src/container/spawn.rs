//! Starts a container process: clone(2) into the new namespaces the spec asks for, then exec this
//! binary as `init` with the container's stdio on fds 0-2, its launch plan on fd 3 and the pipe
//! for its log lines on fd 4.
use super::{report, runner::{self, Runner}, stdio::Stdio, zygote, Launch, INIT_ARG, RUNNER_BIN};
use crate::trace::Trace;
use anyhow::{Context, Result};
use nix::fcntl::{fcntl, FcntlArg};
use nix::sched::{setns, CloneFlags};
use nix::unistd::Pid;
use std::ffi::CString;
use std::io::{Seek, Write};
use std::path::Path;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// Namespaces created by clone. The cgroup namespace is made by init after it joins its cgroup,
/// so that the namespace's root is the container's cgroup, not the shim's.
const CLONE_NAMESPACES: &[(&str, CloneFlags)] = &[
    ("mnt", CloneFlags::CLONE_NEWNS),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("net", CloneFlags::CLONE_NEWNET),
];

/// Creates the container process without starting it: it exists, with its new namespaces (Docker
/// configures a container's network between create and start), and waits for its launch plan on
/// fd 3, a pipe, until [`PlanSender::send`] at Task.Start. Dropping the sender unsent ends it.
pub fn create(launch: &Launch, stdio: &Stdio, trace: &Trace) -> Result<(Pid, PlanSender)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating the plan pipe")?;
    let flags = CLONE_NAMESPACES
        .iter()
        .filter(|(kind, _)| launch.new_namespace(kind))
        .fold(CloneFlags::empty(), |acc, (_, f)| acc | *f)
        // The process always gets its own mount namespace: it pivots into the rootfs.
        | CloneFlags::CLONE_NEWNS;
    // A PID namespace given by path (a pod's shared one) is entered at clone time.
    let pid_ns = launch.namespaces.iter().find(|ns| ns.kind == "pid").and_then(|ns| ns.path.as_deref());
    let pid = clone_self(INIT_ARG, &launch.id, read, stdio, flags, pid_ns, trace)?;
    Ok((pid, PlanSender(std::fs::File::from(write))))
}

/// The write end of a created process's plan pipe.
pub struct PlanSender(std::fs::File);

impl PlanSender {
    /// Starts the process: it reads the plan to its end and goes on.
    pub fn send(mut self, launch: &Launch) -> Result<()> {
        serde_json::to_writer(&mut self.0, launch).context("sending the launch plan")?;
        self.0.flush().context("sending the launch plan")
    }
}

/// Clones a process that re-executes this binary as `arg` with `stdio` on fds 0-2, `plan` on
/// fd 3 and a log pipe to the shim on fd 4 (its lines are logged, its spans go to `trace`).
/// With `pid_ns`, the process is born in that PID namespace: a thread of the shim enters it for
/// its children only, clones, and ends.
pub(crate) fn clone_self(
    arg: &str,
    id: &str,
    plan: OwnedFd,
    stdio: &Stdio,
    flags: CloneFlags,
    pid_ns: Option<&Path>,
    trace: &Trace,
) -> Result<Pid> {
    let (log_read, log_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating the log pipe")?;

    // Everything the child touches is prepared here: after clone in a threaded process only
    // async-signal-safe calls are allowed until exec. Sources are first copied above fd 9 so
    // that dup2 onto 0-3 cannot clobber one another.
    let sources = [stdio.stdin.as_fd(), stdio.stdout.as_fd(), stdio.stderr.as_fd(), plan.as_fd(), log_write.as_fd()];
    let high: Vec<OwnedFd> = sources
        .iter()
        .map(|fd| fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(10)).map(|raw| unsafe { std::os::fd::FromRawFd::from_raw_fd(raw) }))
        .collect::<nix::Result<_>>()
        .context("duplicating stdio")?;
    let runner = Runner::beside_self()?;
    if let Some(pid) = zygote::spawn(arg, sources, flags, pid_ns, &runner) {
        let pid = pid?;
        report::forward(id.to_string(), log_read.into(), trace.clone());
        return Ok(pid);
    }
    let high_raw: Vec<i32> = high.iter().map(|fd| fd.as_raw_fd()).collect();
    let exe = CString::new(runner.program.into_os_string().into_encoded_bytes())?;
    let argv: Vec<CString> = std::iter::once(RUNNER_BIN.into())
        .chain(runner.prefix_args.into_iter().map(|a| a.into_encoded_bytes()))
        .chain([arg.into()])
        .map(CString::new)
        .collect::<Result<_, _>>()?;
    let env: Vec<CString> = runner::environment().into_iter().map(|(k, v)| CString::new(format!("{k}={v}"))).collect::<Result<_, _>>()?;

    let clone = || -> Result<Pid> {
        let argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
        let env_ptrs: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).chain([std::ptr::null()]).collect();
        let mut stack = vec![0u8; 64 * 1024];
        let child = Box::new(|| -> isize {
            unsafe {
                for (target, &src) in high_raw.iter().enumerate() {
                    if libc::dup2(src, target as i32) < 0 {
                        return 125;
                    }
                }
                libc::syscall(libc::SYS_close_range, report::REPORT_FD + 1, u32::MAX, 0);
                let empty: libc::sigset_t = std::mem::zeroed();
                libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                libc::execve(exe.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr());
                125
            }
        });
        unsafe { nix::sched::clone(child, &mut stack, flags, Some(libc::SIGCHLD)) }
            .with_context(|| format!("cloning the container process with {flags:?}"))
    };
    let pid = match pid_ns {
        None => clone()?,
        Some(path) => {
            let ns = std::fs::File::open(path).with_context(|| format!("opening pid namespace {}", path.display()))?;
            // The namespace for children is per thread: this thread's change ends with it.
            std::thread::scope(|s| {
                s.spawn(|| {
                    setns(&ns, CloneFlags::CLONE_NEWPID).with_context(|| format!("entering pid namespace {}", path.display()))?;
                    clone()
                })
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the thread entering {} panicked", path.display())))
            })?
        }
    };
    report::forward(id.to_string(), log_read.into(), trace.clone());
    Ok(pid)
}

/// The launch plan in an anonymous memory file: no size limit, and nothing to clean up.
pub(crate) fn plan_fd(plan: &impl serde::Serialize) -> Result<OwnedFd> {
    let fd = nix::sys::memfd::memfd_create(c"launch", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).context("memfd_create")?;
    let mut file = std::fs::File::from(fd);
    serde_json::to_writer(&mut file, plan)?;
    file.flush()?;
    file.rewind()?;
    Ok(file.into())
}
