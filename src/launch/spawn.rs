//! Starts a container process: clone(2) into the new namespaces the spec asks for, then exec the
//! runner as `init` with the container's stdio on fds 0-2, its launch plan on fd 3, the pipe for
//! its log lines on fd 4 and its compile socket on fd 5 (see [`crate::protocol`]). A process in
//! a user namespace waits, before it executes the runner, for the shim to map its IDs and do what
//! only the host's root can (see [`userns`]).
use super::compile::CompileSocket;
use super::userns::{self, Outside, UserNamespace};
use super::idmap;
use super::{relay, runner::{self, Runner}, stdio::Stdio, zygote, Launch};
use crate::engine::EngineOptions;
use crate::protocol::{FIRST_MOUNT_FD, INIT_ARG, MAX_MOUNT_FDS, RUNNER_BIN};
use crate::trace::Trace;
use anyhow::{Context, Result};
use nix::fcntl::{fcntl, FcntlArg};
use nix::sched::{setns, CloneFlags};
use nix::unistd::Pid;
use std::ffi::CString;
use std::io::{Seek, Write};
use std::path::Path;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

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
    let user = launch.user.as_ref().map(|ns| IntoUserNs {
        ns,
        // The cgroup is the caller's to place: a systemd scope takes the pid when it starts.
        outside: Outside { mappings: ns.is_new().then_some(ns), cgroup: None, oom_score_adj: launch.security.oom_score_adj },
        binds: Some(launch),
    });
    let pid = clone_self(INIT_ARG, &launch.id, read, &launch.engine, stdio, flags, pid_ns, user, trace)?;
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

/// How a process gets into its user namespace (created with `flags`' others, or joined by path
/// before it creates them), and what the shim does for it there before it goes on.
pub(crate) struct IntoUserNs<'a> {
    pub ns: &'a UserNamespace,
    pub outside: Outside<'a>,
    /// The launch whose bind mounts the shim makes for the process (an init's).
    pub binds: Option<&'a Launch>,
}

/// Clones a process that executes the runner as `arg` with `stdio` on fds 0-2, `plan` on fd 3,
/// a log pipe to the shim on fd 4 (its lines are logged, its spans go to `trace`), its
/// compile socket on fd 5, served with `engine`'s AOT options. With `pid_ns`, the process is
/// born in that PID namespace: a thread of the shim enters it for its children only, clones,
/// and ends. With `user`, it gets into that user namespace first and waits on a sync socket
/// until [`userns::release`] lets it execute the runner.
#[allow(clippy::too_many_arguments)]
pub(crate) fn clone_self(
    arg: &str,
    id: &str,
    plan: OwnedFd,
    engine: &EngineOptions,
    stdio: &Stdio,
    flags: CloneFlags,
    pid_ns: Option<&Path>,
    user: Option<IntoUserNs>,
    trace: &Trace,
) -> Result<Pid> {
    let (log_read, log_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating the log pipe")?;
    let compile = CompileSocket::new()?;
    let sync = user.as_ref().map(|_| UnixStream::pair()).transpose().context("creating the user namespace's sync socket")?;
    let (ours, theirs) = sync.map_or((None, None), |(ours, theirs)| (Some(ours), Some(theirs)));
    let user_path = user.as_ref().and_then(|u| u.ns.path.as_deref());
    let flags = if user.as_ref().is_some_and(|u| u.ns.is_new()) { flags | CloneFlags::CLONE_NEWUSER } else { flags };
    if let (Some(_), Some(dir)) = (&user, &engine.aot_dir) {
        // Root in the namespace cannot create it; the compile process fills it as the host's root.
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Once the child has its end (ours is dropped, so that its death reads as the socket's end).
    let release = |pid: Pid, theirs: Option<UnixStream>| -> Result<()> {
        drop(theirs);
        let (Some(user), Some(ours)) = (&user, &ours) else { return Ok(()) };
        let trees = || user.binds.map_or(Ok(Vec::new()), |launch| idmap::mount_trees(pid, launch));
        userns::release(pid, ours, &user.outside, trees).inspect_err(|_| {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        })
    };

    // Everything the child touches is prepared here: after clone in a threaded process only
    // async-signal-safe calls are allowed until exec. Sources are first copied above fd 9 so
    // that dup2 onto 0-3 cannot clobber one another.
    let sources = [stdio.stdin.as_fd(), stdio.stdout.as_fd(), stdio.stderr.as_fd(), plan.as_fd(), log_write.as_fd(), compile.theirs.as_fd()];
    let high: Vec<OwnedFd> = sources
        .iter()
        .map(|fd| fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(10)).map(|raw| unsafe { std::os::fd::FromRawFd::from_raw_fd(raw) }))
        .collect::<nix::Result<_>>()
        .context("duplicating stdio")?;
    let runner = Runner::beside_self()?;
    if let Some(pid) = zygote::spawn(arg, sources, theirs.as_ref().map(|t| t.as_fd()), flags, pid_ns, user_path, &runner) {
        let pid = pid?;
        release(pid, theirs)?;
        relay::forward(id.to_string(), log_read.into(), trace.clone());
        compile.serve(id, engine, &runner)?;
        return Ok(pid);
    }
    let high_raw: Vec<i32> = high.iter().map(|fd| fd.as_raw_fd()).collect();
    let exe = CString::new(runner.program.clone().into_os_string().into_encoded_bytes())?;
    let argv: Vec<CString> = std::iter::once(RUNNER_BIN.into())
        .chain(runner.prefix_args.iter().map(|a| a.clone().into_encoded_bytes()))
        .chain([arg.into()])
        .map(CString::new)
        .collect::<Result<_, _>>()?;
    let env: Vec<CString> = runner::environment().into_iter().map(|(k, v)| CString::new(format!("{k}={v}"))).collect::<Result<_, _>>()?;
    let join = user_path.map(|p| std::fs::File::open(p).with_context(|| format!("opening user namespace {}", p.display()))).transpose()?;
    let join_raw = join.as_ref().map(|f| f.as_raw_fd());
    let sync_raw = theirs.as_ref().map(|t| t.as_raw_fd());
    // Joining a user namespace comes before creating the others, so that it owns them: the
    // clone makes only the PID namespace, the child unshares the rest once it is in.
    let (clone_flags, unshare_flags) = match join {
        Some(_) => (flags & CloneFlags::CLONE_NEWPID, (flags - CloneFlags::CLONE_NEWPID).bits()),
        None => (flags, 0),
    };

    let clone = || -> Result<Pid> {
        let argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
        let env_ptrs: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).chain([std::ptr::null()]).collect();
        let mut stack = vec![0u8; 64 * 1024];
        let child = Box::new(|| -> isize {
            unsafe {
                if let Some(ns) = join_raw {
                    if libc::setns(ns, libc::CLONE_NEWUSER) != 0 || libc::unshare(unshare_flags) != 0 {
                        return 125;
                    }
                }
                let mut trees = [-1; MAX_MOUNT_FDS];
                let mut count = 0;
                if let Some(sync) = sync_raw {
                    // In the namespace: say so, and wait until the shim has done its part.
                    let byte = 1u8;
                    if libc::write(sync, (&raw const byte).cast(), 1) != 1 {
                        return 125;
                    }
                    let Ok(n) = usize::try_from(receive_release(sync, &mut trees)) else { return 125 };
                    count = n;
                    // Still the host's root, whom the namespace does not map: become its root.
                    if !become_root_in_namespace() {
                        return 125;
                    }
                }
                // The trees above every target first, so that the dup2s cannot clobber one.
                for tree in &mut trees[..count] {
                    *tree = libc::fcntl(*tree, libc::F_DUPFD_CLOEXEC, FIRST_MOUNT_FD + MAX_MOUNT_FDS as i32);
                    if *tree < 0 {
                        return 125;
                    }
                }
                let targets = high_raw.iter().chain(&trees[..count]);
                for (target, &src) in targets.enumerate() {
                    if libc::dup2(src, target as i32) < 0 {
                        return 125;
                    }
                }
                libc::syscall(libc::SYS_close_range, (high_raw.len() + count) as u32, u32::MAX, 0);
                let empty: libc::sigset_t = std::mem::zeroed();
                libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                libc::execve(exe.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr());
                125
            }
        });
        unsafe { nix::sched::clone(child, &mut stack, clone_flags, Some(libc::SIGCHLD)) }
            .with_context(|| format!("cloning the container process with {clone_flags:?}"))
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
    release(pid, theirs)?;
    relay::forward(id.to_string(), log_read.into(), trace.clone());
    compile.serve(id, engine, &runner)?;
    Ok(pid)
}

/// Reads the shim's release on `sync` (see [`userns::release`]): one byte, and the fds of the
/// mount trees it made, put in `fds`. How many came, or -1. Raw system calls and no allocation:
/// safe after clone in a threaded process.
pub(crate) unsafe fn receive_release(sync: RawFd, fds: &mut [RawFd; MAX_MOUNT_FDS]) -> isize {
    let mut byte = 0u8;
    let mut iov = libc::iovec { iov_base: (&raw mut byte).cast(), iov_len: 1 };
    // Room for a full SCM_RIGHTS message of MAX_MOUNT_FDS fds, aligned for its header.
    let mut control = [0u64; 2 + MAX_MOUNT_FDS / 2 + 2];
    let mut msg: libc::msghdr = std::mem::zeroed();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    if libc::recvmsg(sync, &mut msg, libc::MSG_CMSG_CLOEXEC) != 1 || msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return -1;
    }
    let mut count = 0;
    let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
    while !cmsg.is_null() {
        if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
            let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
            let n = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
            for i in 0..n {
                if count == fds.len() {
                    return -1;
                }
                fds[count] = data.add(i).read_unaligned();
                count += 1;
            }
        }
        cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
    }
    count as isize
}

/// Takes uid and gid 0 of the user namespace the process just got into (mapped by then), with
/// no supplementary groups (where setgroups is allowed): its IDs were still the host root's,
/// which the namespace does not map, so it could create no file. Raw system calls: safe after
/// clone in a threaded process, and in a fork.
pub(crate) fn become_root_in_namespace() -> bool {
    unsafe {
        libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>());
        libc::syscall(libc::SYS_setresgid, 0, 0, 0) == 0 && libc::syscall(libc::SYS_setresuid, 0, 0, 0) == 0
    }
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
