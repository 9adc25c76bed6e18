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
use super::runner::Runner;
use anyhow::{bail, Context, Result};
use nix::sched::CloneFlags;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, Read};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// The first argument that makes the runner the zygote.
pub const ZYGOTE_ARG: &str = "zygote";
pub const SOCKET: &str = "/run/containerd-wasmedge/zygote.sock";

#[cfg(feature = "engine")]
mod server;
#[cfg(feature = "engine")]
pub use server::main;

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
pub fn spawn(arg: &str, fds: [BorrowedFd; 5], flags: CloneFlags, pid_ns: Option<&Path>, runner: &Runner) -> Option<Result<Pid>> {
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

fn connect(runner: &Runner) -> Option<UnixStream> {
    if let Ok(conn) = UnixStream::connect(SOCKET) {
        return Some(conn);
    }
    // Start one (detached: it outlives this shim) and wait for its socket.
    let started = runner
        .command([ZYGOTE_ARG])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = started {
        log::warn!("cannot start the zygote {}: {e}", runner.program.display());
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

