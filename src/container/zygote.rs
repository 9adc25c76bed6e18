//! The zygote: one process per node that has WasmEdge (and LLVM, which it links) loaded and
//! relocated once, and forks every container process from that warm image.
//!
//! Executing the runner costs each container about 45 ms of dynamic loading and ~25 MiB of pages
//! of its own; a fork of the zygote starts in about a millisecond and shares those pages
//! copy-on-write with every other container on the node. Shims reach the zygote on a unix socket;
//! the first shim that finds none starts it, and it leaves by itself when it has been idle.
//!
//! A request carries the runner argument (`init`/`exec`), the namespaces to create or the PID
//! namespace to enter, and five fds (stdin, stdout, stderr, plan, log pipe) by SCM_RIGHTS. The
//! zygote answers the container's pid, and, when the container exits (it is the zygote's child),
//! its exit status; the shim feeds that to the same exit path as its own children's.
use super::{exec, init, INIT_ARG};
use anyhow::{bail, Context, Result};
use nix::cmsg_space;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// The first argument that makes the runner the zygote.
pub const ZYGOTE_ARG: &str = "zygote";
pub const SOCKET: &str = "/run/containerd-wasmedge/zygote.sock";
/// How long the zygote stays without containers before it exits.
const IDLE: Duration = Duration::from_secs(120);

#[derive(Serialize, Deserialize)]
struct Request {
    arg: String,
    /// The namespaces to create, as clone flags.
    new_namespaces: i32,
    pid_ns: Option<String>,
}

// ---- shim side ----

/// Starts a container process through the zygote; `None` when no zygote can be reached (the
/// caller then executes the runner itself).
pub fn spawn(arg: &str, fds: [BorrowedFd; 5], flags: CloneFlags, pid_ns: Option<&Path>, runner: &Path) -> Option<Result<Pid>> {
    let mut conn = connect(runner)?;
    let request = Request { arg: arg.into(), new_namespaces: flags.bits(), pid_ns: pid_ns.map(|p| p.display().to_string()) };
    Some(send_request(&mut conn, &request, fds).map(|pid| {
        std::thread::spawn(move || {
            let code = read_i32(&mut conn).unwrap_or_else(|e| {
                log::error!("lost the zygote before process {pid} exited: {e}");
                255
            });
            let _ = containerd_shim::monitor::monitor_notify_by_pid(pid.as_raw(), code);
        });
        pid
    }))
}

fn connect(runner: &Path) -> Option<UnixStream> {
    if let Ok(conn) = UnixStream::connect(SOCKET) {
        return Some(conn);
    }
    // Start one (detached: it outlives this shim) and wait for its socket.
    let started = std::process::Command::new(runner)
        .arg(ZYGOTE_ARG)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = started {
        log::warn!("cannot start the zygote {}: {e}", runner.display());
        return None;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(conn) = UnixStream::connect(SOCKET) {
            return Some(conn);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    log::warn!("the zygote did not come up at {SOCKET}");
    None
}

fn send_request(conn: &mut UnixStream, request: &Request, fds: [BorrowedFd; 5]) -> Result<Pid> {
    let body = serde_json::to_vec(request)?;
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let len = (body.len() as u32).to_le_bytes();
    let iov = [IoSlice::new(&len), IoSlice::new(&body)];
    sendmsg::<()>(conn.as_raw_fd(), &iov, &[ControlMessage::ScmRights(&raw)], MsgFlags::empty(), None)
        .context("sending the request to the zygote")?;
    let pid = read_i32(conn).context("reading the pid from the zygote")?;
    if pid <= 0 {
        bail!("the zygote could not start the process (errno {})", -pid);
    }
    Ok(Pid::from_raw(pid))
}

fn read_i32(conn: &mut UnixStream) -> std::io::Result<i32> {
    let mut b = [0u8; 4];
    conn.read_exact(&mut b)?;
    Ok(i32::from_le_bytes(b))
}

// ---- zygote side ----

/// The zygote's loop: one thread, polling its socket and a signalfd for exits.
pub fn main() -> ! {
    match serve() {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("zygote: {e:#}");
            std::process::exit(1)
        }
    }
}

fn serve() -> Result<()> {
    let _ = nix::unistd::setsid();
    let dir = Path::new(SOCKET).parent().unwrap();
    std::fs::create_dir_all(dir)?;
    // One zygote per node: the lock decides races between shims starting one at once.
    let lock = std::fs::File::create(dir.join("zygote.lock"))?;
    let Ok(_held) = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock) else { return Ok(()) };
    let _ = std::fs::remove_file(SOCKET);
    let listener = UnixListener::bind(SOCKET).context("binding the zygote socket")?;
    std::fs::set_permissions(SOCKET, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;

    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block()?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
    let own_pid_ns = std::fs::File::open("/proc/self/ns/pid")?;
    let mut waiting: HashMap<i32, UnixStream> = HashMap::new();
    let mut idle_since = Instant::now();
    loop {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN), PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(1000u16))?;
        let (accept, reap) = (fds[0].any().unwrap_or(false), fds[1].any().unwrap_or(false));
        if accept {
            if let Ok((mut conn, _)) = listener.accept() {
                let pid = match handle(&mut conn, &own_pid_ns) {
                    Ok(pid) => pid.as_raw(),
                    Err(e) => -(e.raw_os_error().unwrap_or(libc::EIO)),
                };
                if conn.write_all(&pid.to_le_bytes()).is_ok() && pid > 0 {
                    waiting.insert(pid, conn);
                }
            }
        }
        if reap {
            while signals.read_signal()?.is_some() {}
            reap_children(&mut waiting);
        }
        if !waiting.is_empty() || accept {
            idle_since = Instant::now();
        } else if idle_since.elapsed() > IDLE {
            let _ = std::fs::remove_file(SOCKET);
            return Ok(());
        }
    }
}

fn reap_children(waiting: &mut HashMap<i32, UnixStream>) {
    loop {
        let (pid, code) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, code),
            Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, 128 + signal as i32),
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        };
        if let Some(mut conn) = waiting.remove(&pid.as_raw()) {
            let _ = conn.write_all(&code.to_le_bytes());
        }
    }
}

/// Reads one request and forks the process it asks for.
fn handle(conn: &mut UnixStream, own_pid_ns: &std::fs::File) -> std::io::Result<Pid> {
    let (request, fds) = receive(conn)?;
    let flags = CloneFlags::from_bits_truncate(request.new_namespaces);
    // A new or a given PID namespace applies to the next child only; the zygote's own is put
    // back right after the fork.
    if let Some(path) = &request.pid_ns {
        setns(std::fs::File::open(path)?, CloneFlags::CLONE_NEWPID)?;
    } else if flags.contains(CloneFlags::CLONE_NEWPID) {
        unshare(CloneFlags::CLONE_NEWPID)?;
    }
    let forked = unsafe { nix::unistd::fork() };
    if request.pid_ns.is_some() || flags.contains(CloneFlags::CLONE_NEWPID) {
        if let Ok(ForkResult::Parent { .. }) | Err(_) = forked {
            setns(own_pid_ns, CloneFlags::CLONE_NEWPID)?;
        }
    }
    match forked? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => become_container(&request, fds, flags - CloneFlags::CLONE_NEWPID),
    }
}

fn receive(conn: &mut UnixStream) -> std::io::Result<(Request, Vec<OwnedFd>)> {
    let mut len = [0u8; 4];
    let mut body = vec![0u8; 64 * 1024];
    let mut space = cmsg_space!([RawFd; 5]);
    let (bytes, fds) = {
        let mut iov = [IoSliceMut::new(&mut len), IoSliceMut::new(&mut body)];
        let msg = recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
        let fds: Vec<OwnedFd> = msg
            .cmsgs()?
            .filter_map(|c| match c {
                ControlMessageOwned::ScmRights(fds) => Some(fds),
                _ => None,
            })
            .flatten()
            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
            .collect();
        (msg.bytes, fds)
    };
    let n = u32::from_le_bytes(len) as usize;
    if fds.len() != 5 || bytes != n + 4 {
        return Err(std::io::Error::from_raw_os_error(libc::EPROTO));
    }
    let request = serde_json::from_slice(&body[..n]).map_err(|_| std::io::Error::from_raw_os_error(libc::EPROTO))?;
    Ok((request, fds))
}

/// In the forked child: the container's namespaces and fds, then the runner's own code, as if
/// it had been executed.
fn become_container(request: &Request, fds: Vec<OwnedFd>, flags: CloneFlags) -> ! {
    // Received fds are numbered above the zygote's own (socket, signalfd...), never 0-4, so
    // the dup2s below cannot clobber one another.
    let raw: Vec<RawFd> = fds.into_iter().map(std::os::fd::IntoRawFd::into_raw_fd).collect();
    let setup = || -> nix::Result<()> {
        SigSet::all().thread_unblock()?;
        unshare(flags)?;
        for (target, fd) in raw.iter().enumerate() {
            nix::errno::Errno::result(unsafe { libc::dup2(*fd, target as RawFd) })?;
        }
        unsafe { libc::syscall(libc::SYS_close_range, raw.len() as u32, u32::MAX, 0) };
        Ok(())
    };
    if let Err(e) = setup() {
        eprintln!("wasmedge: container setup failed: {e}");
        std::process::exit(125);
    }
    if request.arg == INIT_ARG {
        init::main()
    } else {
        exec::main()
    }
}
