//! The zygote process itself: it accepts requests and forks container processes that go on as
//! `init` or `exec` of the same binary, so it exists only in the binary that links WasmEdge.
use super::{Request, SOCKET};
use crate::container::{exec, init, INIT_ARG};
use anyhow::{Context, Result};
use nix::cmsg_space;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use std::collections::HashMap;
use std::io::{IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long the zygote stays without containers before it exits.
const IDLE: Duration = Duration::from_secs(120);

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
