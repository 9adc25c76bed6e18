//! The zygote process itself: it accepts requests and forks container processes that go on as
//! `init` or `exec` of the same binary, so it exists only in the binary that links WasmEdge.
//!
//! Each connection gets a thread for its hello and its request, bounded by [`TIMEOUT`], so a
//! stuck client holds up no one else. Only the main thread forks: the connection threads take no
//! lock a child could need (they print nothing; malloc's locks are reset by glibc's fork), and
//! the main thread alone reaps, so the pidfd it opens right after a fork is the child's.
use super::{exec, init};
use crate::protocol::{recv_frame, root_peer, send_frame, send_i32, Hello, Request, INIT_ARG, MAX_MOUNT_FDS, PROCESS_FDS, SOCKET, TIMEOUT};
use anyhow::{ensure, Context, Result};
use nix::fcntl::{fcntl, FcntlArg, Flock, FlockArg};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the zygote stays without containers before it exits.
const IDLE: Duration = Duration::from_secs(120);

pub fn main() -> ! {
    match serve() {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("zygote: {e:#}");
            std::process::exit(1)
        }
    }
}

/// A request a connection thread read, for the main thread to fork.
struct Pending {
    conn: UnixStream,
    request: Request,
    fds: Vec<OwnedFd>,
}

fn serve() -> Result<()> {
    let _ = nix::unistd::setsid();
    std::fs::create_dir_all(Path::new(SOCKET).parent().unwrap())?;
    let Some(place) = Place::take()? else { return Ok(()) };
    let mut place = Some(place);

    // Blocked before any thread exists, so in all of them; the forked children unblock them.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.add(Signal::SIGTERM);
    mask.thread_block()?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
    let own_pid_ns = File::open("/proc/self/ns/pid")?;
    // Connection threads hand their requests over the channel and wake the poll below.
    let (wake_read, wake_write) = UnixStream::pair()?;
    wake_read.set_nonblocking(true)?;
    let (requests, pending) = mpsc::channel::<Option<Pending>>();
    let mut in_flight = 0usize;
    let mut waiting: HashMap<i32, UnixStream> = HashMap::new();
    let mut idle_since = Instant::now();
    loop {
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN), PollFd::new(wake_read.as_fd(), PollFlags::POLLIN)];
        if let Some(p) = &place {
            fds.push(PollFd::new(p.listener.as_fd(), PollFlags::POLLIN));
        }
        // The connections of running containers become readable only when their shim is gone:
        // a shim sends nothing after its request.
        let shims: Vec<i32> = waiting.keys().copied().collect();
        fds.extend(shims.iter().map(|pid| PollFd::new(waiting[pid].as_fd(), PollFlags::POLLIN)));
        poll(&mut fds, PollTimeout::from(1000u16))?;
        // Events nix has no name for (POLLRDHUP) leave `revents` unnamed: they count too.
        let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_none_or(|r| !r.is_empty())).collect();
        drop(fds);
        let listening = usize::from(place.is_some());
        for (pid, _) in shims.iter().zip(&ready[2 + listening..]).filter(|(_, hung_up)| **hung_up) {
            // Nobody would report this container's end, nor kill it: it ends with its shim.
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            waiting.remove(pid);
        }
        if ready[0] {
            while let Some(info) = signals.read_signal()? {
                if info.ssi_signo == Signal::SIGTERM as u32 {
                    retire(&mut place);
                }
            }
            reap_children(&mut waiting);
        }
        if ready[1] {
            let _ = (&wake_read).read(&mut [0u8; 64]);
            for request in pending.try_iter() {
                in_flight -= 1;
                if let Some(request) = request {
                    start(request, &own_pid_ns, &mut waiting);
                }
            }
        }
        if let (Some(p), true) = (&place, listening == 1 && ready[2]) {
            if let Ok((conn, _)) = p.listener.accept() {
                let (requests, mut wake) = (requests.clone(), wake_write.try_clone()?);
                in_flight += 1;
                idle_since = Instant::now();
                std::thread::spawn(move || {
                    let _ = requests.send(read_request(conn));
                    let _ = wake.write_all(&[1]);
                });
            }
        }
        // A zygote whose socket path was removed or taken over cannot be reached: it makes way.
        if place.as_ref().is_some_and(|p| !p.holds_socket()) {
            retire(&mut place);
        }
        if !waiting.is_empty() || in_flight > 0 {
            idle_since = Instant::now();
        } else if place.is_none() || idle_since.elapsed() > IDLE {
            retire(&mut place);
            return Ok(());
        }
    }
}

fn retire(place: &mut Option<Place>) {
    if let Some(place) = place.take() {
        place.retire();
    }
}

/// On a connection's own thread: the hello, then one request.
fn read_request(conn: UnixStream) -> Option<Pending> {
    let read = || -> Result<(Request, Vec<OwnedFd>)> {
        root_peer(&conn)?;
        conn.set_read_timeout(Some(TIMEOUT))?;
        conn.set_write_timeout(Some(TIMEOUT))?;
        send_frame(&conn, &serde_json::to_vec(&Hello::ours())?, &[])?;
        let (body, fds) = recv_frame(&conn)?;
        let request: Request = serde_json::from_slice(&body)?;
        let want = PROCESS_FDS + usize::from(request.sync);
        ensure!(fds.len() == want, "{} fds instead of {want}", fds.len());
        Ok((request, fds))
    };
    match read() {
        Ok((request, fds)) => Some(Pending { conn, request, fds }),
        Err(_) => {
            let _ = send_i32(&conn, -libc::EPROTO, &[]);
            None
        }
    }
}

/// Forks the process a request asks for and answers its pid with a pidfd; the connection then
/// waits for the exit.
fn start(Pending { conn, request, fds }: Pending, own_pid_ns: &File, waiting: &mut HashMap<i32, UnixStream>) {
    let started = fork_container(&request, fds, own_pid_ns).and_then(|child| {
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.as_raw(), 0) };
        if pidfd < 0 {
            let _ = kill(child, Signal::SIGKILL);
            return Err(std::io::Error::last_os_error());
        }
        Ok((child, unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) }))
    });
    match started {
        Ok((child, pidfd)) => {
            if send_i32(&conn, child.as_raw(), &[pidfd.as_raw_fd()]).is_ok() {
                waiting.insert(child.as_raw(), conn);
            } else {
                // Nobody would hear of it: the shim that asked gave up.
                let _ = kill(child, Signal::SIGKILL);
            }
        }
        Err(e) => {
            let _ = send_i32(&conn, -(e.raw_os_error().unwrap_or(libc::EIO)), &[]);
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
        if let Some(conn) = waiting.remove(&pid.as_raw()) {
            let _ = send_i32(&conn, code, &[]);
        }
    }
}

fn fork_container(request: &Request, fds: Vec<OwnedFd>, own_pid_ns: &File) -> std::io::Result<Pid> {
    let flags = CloneFlags::from_bits_truncate(request.new_namespaces);
    // A new or a given PID namespace applies to the next child only; the zygote's own is put
    // back right after the fork.
    if let Some(path) = &request.pid_ns {
        setns(File::open(path)?, CloneFlags::CLONE_NEWPID)?;
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
        ForkResult::Child => become_container(request, fds, flags - CloneFlags::CLONE_NEWPID),
    }
}

/// In the forked child: the container's namespaces and fds, then the runner's own code, as if
/// it had been executed. A user namespace to join comes first, so that it owns the new ones;
/// in a user namespace, the child waits for the shim (see [`crate::launch::userns`]).
fn become_container(request: &Request, mut fds: Vec<OwnedFd>, flags: CloneFlags) -> ! {
    let mut setup = || -> nix::Result<()> {
        SigSet::all().thread_unblock()?;
        // Should the zygote die, its containers die with it, even if their shim dies too.
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
        if let Some(path) = &request.user_ns {
            let ns = File::open(path).map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
            setns(ns, CloneFlags::CLONE_NEWUSER)?;
        }
        unshare(flags)?;
        if request.sync {
            let mut sync = UnixStream::from(fds.pop().ok_or(nix::errno::Errno::EBADF)?);
            sync.write_all(&[1u8]).map_err(|_| nix::errno::Errno::EPIPE)?;
            let mut trees = [-1; MAX_MOUNT_FDS];
            let count = unsafe { crate::launch::spawn::receive_release(sync.as_raw_fd(), &mut trees) };
            let count = usize::try_from(count).map_err(|_| nix::errno::Errno::EPIPE)?;
            // SAFETY: the fds just came in, owned by nobody else.
            fds.extend(trees[..count].iter().map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            if !crate::launch::spawn::become_root_in_namespace() {
                return Err(nix::errno::Errno::last());
            }
        }
        // Moved above the targets first, so that the dup2s onto them cannot clobber one another.
        let above = (PROCESS_FDS + MAX_MOUNT_FDS) as RawFd;
        let high: Vec<RawFd> = fds.iter().map(|fd| fcntl(fd, FcntlArg::F_DUPFD(above))).collect::<nix::Result<_>>()?;
        for (target, fd) in high.iter().enumerate() {
            nix::errno::Errno::result(unsafe { libc::dup2(*fd, target as RawFd) })?;
        }
        unsafe { libc::syscall(libc::SYS_close_range, high.len() as u32, u32::MAX, 0) };
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

/// The socket and the lock that make this process the node's zygote, while it holds them.
struct Place {
    listener: UnixListener,
    socket: FileId,
    _lock: Flock<File>,
    lock: FileId,
}

/// Device and inode: which file a path names now.
type FileId = (u64, u64);

fn file_id(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn lock_path() -> PathBuf {
    Path::new(SOCKET).with_file_name("zygote.lock")
}

impl Place {
    /// The lock and a fresh socket; `None` when another zygote holds the lock (one per node: the
    /// lock decides races between shims starting one at once).
    fn take() -> Result<Option<Place>> {
        loop {
            let file = File::create(lock_path()).context("creating the zygote lock")?;
            let Ok(held) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else { return Ok(None) };
            let meta = held.metadata()?;
            // A retiring zygote removes its lock file: holding that one is holding nothing.
            let lock = (meta.dev(), meta.ino());
            if file_id(&lock_path()) != Some(lock) {
                continue;
            }
            let _ = std::fs::remove_file(SOCKET);
            let listener = UnixListener::bind(SOCKET).context("binding the zygote socket")?;
            std::fs::set_permissions(SOCKET, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            let socket = file_id(Path::new(SOCKET)).context("the zygote socket vanished")?;
            return Ok(Some(Place { listener, socket, _lock: held, lock }));
        }
    }

    fn holds_socket(&self) -> bool {
        file_id(Path::new(SOCKET)) == Some(self.socket)
    }

    /// Gives up the socket and the lock, so that a fresh zygote can start while this one serves
    /// the containers it has to their end.
    fn retire(self) {
        if self.holds_socket() {
            let _ = std::fs::remove_file(SOCKET);
        }
        if file_id(&lock_path()) == Some(self.lock) {
            let _ = std::fs::remove_file(lock_path());
        }
    }
}
