//! The zygote: one process per node that has WasmEdge (and LLVM, which it links) loaded and
//! relocated once, and forks every container process from that warm image.
//!
//! Executing the runner costs each container about 45 ms of dynamic loading and ~25 MiB of pages
//! of its own; a fork of the zygote starts in about a millisecond and shares those pages
//! copy-on-write with every other container on the node. Shims reach the zygote on a unix socket;
//! the first shim that finds none starts it, and it leaves by itself when it has been idle.
//!
//! This is the shim's side; the zygote itself is [`crate::process::zygote`], their messages are
//! in [`crate::protocol`]. On connect the zygote says its protocol version and build. The shim
//! goes on only with a zygote of its own build; another one is sent SIGTERM, which makes any
//! zygote retire (give up its socket, serve its containers to their end), and a fresh one is
//! started. A request
//! carries the runner argument (`init`/`exec`), the namespaces to create or the PID namespace to
//! enter, and the process's fds (stdio, plan, log pipe, compile socket). The zygote answers the container's
//! pid with a pidfd, and, when the container exits (it is the zygote's child), its exit status;
//! the shim feeds that to the same exit path as its own children's. Should the zygote die first,
//! the shim kills the container through the pidfd and reports [`LOST_EXIT`].
use super::runner::{self, Runner};
use crate::protocol::{recv_frame, recv_i32, root_peer, send_frame, Hello, Request, LOST_EXIT, PROCESS_FDS, SOCKET, TIMEOUT, ZYGOTE_ARG};
use anyhow::{bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::unistd::Pid;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Starts a container process through the zygote; `None` when no zygote can be reached (the
/// caller then executes the runner itself). A process that gets into a user namespace (a new
/// one in `flags`, or the one at `user_ns`) waits on `sync` (see [`super::userns`]).
pub fn spawn(
    arg: &str,
    fds: [BorrowedFd; PROCESS_FDS],
    sync: Option<BorrowedFd>,
    flags: CloneFlags,
    pid_ns: Option<&Path>,
    user_ns: Option<&Path>,
    runner: &Runner,
) -> Option<Result<Pid>> {
    let conn = connect(runner, Path::new(SOCKET))?;
    let request = Request {
        arg: arg.into(),
        new_namespaces: flags.bits(),
        pid_ns: pid_ns.map(|p| p.display().to_string()),
        user_ns: user_ns.map(|p| p.display().to_string()),
        sync: sync.is_some(),
    };
    let fds: Vec<BorrowedFd> = fds.into_iter().chain(sync).collect();
    Some(send_request(&conn, &request, &fds).map(|(pid, pidfd)| {
        std::thread::spawn(move || {
            let code = match recv_i32(&conn) {
                Ok((code, _)) => code,
                Err(e) => {
                    log::error!("lost the zygote while process {pid} ran ({e:#}): killing it");
                    kill_and_wait(&pidfd);
                    LOST_EXIT
                }
            };
            let _ = containerd_shim::monitor::monitor_notify_by_pid(pid.as_raw(), code);
        });
        pid
    }))
}

/// A connection to a zygote of this build at `socket`, starting one when there is none and
/// replacing one of another build.
fn connect(runner: &Runner, socket: &Path) -> Option<UnixStream> {
    let deadline = Instant::now() + TIMEOUT;
    let mut started: Option<Instant> = None;
    while Instant::now() < deadline {
        match UnixStream::connect(socket) {
            Ok(conn) => match greet(&conn) {
                Ok(Greeting::Ours) => return Some(conn),
                Ok(Greeting::Other(pid, what)) => {
                    log::info!("replacing the zygote {pid}: {what}");
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                }
                Err(e) => {
                    log::warn!("not using the zygote at {}: {e:#}", socket.display());
                    return None;
                }
            },
            // Starting one again after a while covers one that lost the race for the lock to a
            // zygote that was retiring.
            Err(_) if started.is_none_or(|at| at.elapsed() > Duration::from_secs(1)) => {
                let child = runner
                    .command([ZYGOTE_ARG])
                    .env_clear()
                    .envs(runner::environment())
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn();
                if let Err(e) = child {
                    log::warn!("cannot start the zygote {}: {e}", runner.program.display());
                    return None;
                }
                started = Some(Instant::now());
            }
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    log::warn!("no zygote of this build came up at {}", socket.display());
    None
}

enum Greeting {
    Ours,
    /// A zygote of another protocol or build (or none that says hello): its pid, and why.
    Other(Pid, String),
}

fn greet(conn: &UnixStream) -> Result<Greeting> {
    let pid = root_peer(conn)?;
    conn.set_read_timeout(Some(TIMEOUT))?;
    let hello = recv_frame(conn).and_then(|(body, _)| Ok(serde_json::from_slice::<Hello>(&body)?));
    Ok(match hello {
        Ok(hello) if hello == Hello::ours() => Greeting::Ours,
        Ok(hello) => Greeting::Other(pid, format!("it is {hello:?}, this shim is {:?}", Hello::ours())),
        Err(e) => Greeting::Other(pid, format!("no hello from it: {e:#}")),
    })
}

fn send_request(conn: &UnixStream, request: &Request, fds: &[BorrowedFd]) -> Result<(Pid, OwnedFd)> {
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    send_frame(conn, &serde_json::to_vec(request)?, &raw).context("sending the request to the zygote")?;
    let (pid, mut fds) = recv_i32(conn).context("reading the pid from the zygote")?;
    if pid <= 0 {
        bail!("the zygote could not start the process: {}", std::io::Error::from_raw_os_error(-pid));
    }
    let pidfd = fds.pop().context("the zygote sent no pidfd")?;
    // From here on the container may run for ever: only the exit (or the zygote's end) comes.
    conn.set_read_timeout(None)?;
    Ok((Pid::from_raw(pid), pidfd))
}

/// SIGKILL through the pidfd (the pid may have been reaped and reused; the pidfd cannot be),
/// then a bounded wait for the process to be gone.
fn kill_and_wait(pidfd: &OwnedFd) {
    unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), libc::SIGKILL, std::ptr::null::<libc::siginfo_t>(), 0) };
    let _ = poll(&mut [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)], PollTimeout::from(10_000u16));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the shim makes of a zygote that says `hello` (nothing, when `None`) on connect.
    fn greeting_from(hello: Option<&Hello>) -> Greeting {
        let (shim, zygote) = UnixStream::pair().unwrap();
        if let Some(hello) = hello {
            send_frame(&zygote, &serde_json::to_vec(hello).unwrap(), &[]).unwrap();
        }
        drop(zygote);
        greet(&shim).unwrap()
    }

    use crate::protocol::PROTOCOL;

    #[test]
    fn only_a_zygote_of_this_protocol_and_build_is_used() {
        assert!(matches!(greeting_from(Some(&Hello::ours())), Greeting::Ours));
        let other_build = Hello { build: "0.0.0 another".into(), ..Hello::ours() };
        let other_protocol = Hello { protocol: PROTOCOL + 1, ..Hello::ours() };
        for hello in [Some(&other_build), Some(&other_protocol), None] {
            assert!(matches!(greeting_from(hello), Greeting::Other(pid, _) if pid == nix::unistd::getpid()), "{hello:?}");
        }
    }
}
