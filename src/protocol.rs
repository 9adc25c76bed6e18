//! The wire between the shim and the container-process binary (`containerd-wasmedge-init`): how
//! it is called, which fds carry what, and the zygote's messages. The shim's side is
//! [`crate::launch`], the container's [`crate::process`]; both speak only through this module.
//!
//! A zygote message is a frame: a little-endian u32 length, then the body, and fds by
//! SCM_RIGHTS. Only root talks to the zygote, and the zygote only to root (SO_PEERCRED on both
//! ends). On connect the zygote says [`Hello`]; a [`Request`] carries the [`PROCESS_FDS`] fds
//! of a container process; the answer is the process's pid with a pidfd, then, when it exits,
//! its status.
use anyhow::{ensure, Context, Result};
use nix::sys::socket::{getsockopt, recvmsg, sendmsg, sockopt, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// The binary that runs containers, installed next to the shim.
pub const RUNNER_BIN: &str = "containerd-wasmedge-init";
/// The first argument that makes the runner a container's init process.
pub const INIT_ARG: &str = "init";
/// The first argument that makes the runner an exec process.
pub const EXEC_ARG: &str = "exec";
/// The first argument that makes the runner the zygote.
pub const ZYGOTE_ARG: &str = "zygote";
/// The first argument that makes the runner compile one AOT cache miss (through the sandbox),
/// asked on its stdin, answered on its stdout: the shim's answer to a container's request.
pub const COMPILE_ARG: &str = "compile";

/// The fd on which a container process finds its plan (a launch plan or an exec plan).
pub const LAUNCH_FD: i32 = 3;
/// The fd a container process writes its log lines and spans to.
pub const REPORT_FD: i32 = 4;
/// The fd of a container process's socket to the shim for an AOT compile of a cache miss: the
/// module's length (u64, little-endian) and bytes go out; one of the `COMPILE_*` bytes comes
/// back, after [`COMPILE_FAILED`] the reason (its length as u32, little-endian, then UTF-8).
/// The socket stays open for the next request, so nothing is framed by its end.
pub const COMPILE_FD: i32 = 5;
/// A container process's fds: stdio on 0-2, then [`LAUNCH_FD`], [`REPORT_FD`], [`COMPILE_FD`].
pub const PROCESS_FDS: usize = 6;
/// The bind mount trees the shim made for an init process in a user namespace (see
/// `Launch::shim_binds`) follow its fds from here, in the order of its plan's mounts.
pub const FIRST_MOUNT_FD: i32 = PROCESS_FDS as i32;
/// The most bind mount trees the shim makes for a container.
pub const MAX_MOUNT_FDS: usize = 64;
/// The compiled module is in the cache: compiled for this request.
pub const COMPILE_DONE: u8 = 0;
/// The compiled module is in the cache: another process compiled it meanwhile.
pub const COMPILE_FOUND: u8 = 1;
/// No compiled module; the reason follows.
pub const COMPILE_FAILED: u8 = 2;
/// The longest reason a compile answer carries.
pub const MAX_COMPILE_REASON: usize = 4096;

pub const SOCKET: &str = "/run/containerd-wasmedge/zygote.sock";
/// Raised whenever a message changes; a zygote of another protocol or build is replaced.
pub const PROTOCOL: u32 = 4;
/// The exit status reported for a container whose zygote died: the shim killed it (SIGKILL).
pub const LOST_EXIT: i32 = 128 + libc::SIGKILL;
/// How long either end waits for the other's next message while a container is being started.
pub const TIMEOUT: Duration = Duration::from_secs(5);
const MAX_FRAME: usize = 64 * 1024;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Hello {
    pub protocol: u32,
    /// The release and commit of the binary ([`crate::version::BUILD`]).
    pub build: String,
}

impl Hello {
    pub fn ours() -> Hello {
        Hello { protocol: PROTOCOL, build: crate::version::BUILD.into() }
    }
}

#[derive(Serialize, Deserialize)]
pub struct Request {
    pub arg: String,
    /// The namespaces to create, as clone flags.
    pub new_namespaces: i32,
    pub pid_ns: Option<String>,
    /// The user namespace to join (a new one is `CLONE_NEWUSER` in `new_namespaces`).
    pub user_ns: Option<String>,
    /// A sync socket follows the process's fds: the process, once in its user namespace, sends
    /// a byte on it and waits for the shim's, which brings the bind mount trees the shim made
    /// for it (at most [`MAX_MOUNT_FDS`], by SCM_RIGHTS); it takes them from [`FIRST_MOUNT_FD`] on.
    pub sync: bool,
}

pub fn send_frame(conn: &UnixStream, body: &[u8], fds: &[RawFd]) -> Result<()> {
    let len = (body.len() as u32).to_le_bytes();
    let iov = [IoSlice::new(&len), IoSlice::new(body)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs = if fds.is_empty() { &[][..] } else { &rights[..] };
    let sent = sendmsg::<()>(conn.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    ensure!(sent == len.len() + body.len(), "a short write ({sent} bytes)");
    Ok(())
}

/// One frame and the fds that came with it. A frame is one sendmsg, so it arrives in one piece.
pub fn recv_frame(conn: &UnixStream) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut len = [0u8; 4];
    let mut body = vec![0u8; MAX_FRAME];
    let mut space = nix::cmsg_space!([RawFd; PROCESS_FDS + 1]);
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
    let bytes = msg.bytes;
    ensure!(bytes > 0, "the connection was closed");
    let n = u32::from_le_bytes(len) as usize;
    ensure!(bytes == n + 4, "a malformed frame ({bytes} bytes)");
    body.truncate(n);
    Ok((body, fds))
}

pub fn send_i32(conn: &UnixStream, value: i32, fds: &[RawFd]) -> Result<()> {
    send_frame(conn, &value.to_le_bytes(), fds)
}

pub fn recv_i32(conn: &UnixStream) -> Result<(i32, Vec<OwnedFd>)> {
    let (body, fds) = recv_frame(conn)?;
    let bytes = body.try_into().map_err(|_| anyhow::anyhow!("a malformed number"))?;
    Ok((i32::from_le_bytes(bytes), fds))
}

/// The peer's pid, when it runs as root; the socket is root-equivalent, so nobody else may use
/// it from either end.
pub fn root_peer(conn: &UnixStream) -> Result<Pid> {
    let cred = getsockopt(conn, sockopt::PeerCredentials).context("reading the peer's credentials")?;
    ensure!(cred.uid() == 0, "the peer (pid {}) runs as uid {}, not root", cred.pid(), cred.uid());
    Ok(Pid::from_raw(cred.pid()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_carries_its_body_and_fds() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        send_i32(&a, -7, &[file.as_raw_fd()]).unwrap();
        let (value, fds) = recv_i32(&b).unwrap();
        assert_eq!((value, fds.len()), (-7, 1));
        send_frame(&a, &[1, 2, 3], &[]).unwrap();
        assert_eq!(recv_frame(&b).unwrap().0, [1, 2, 3]);
        drop(a);
        assert!(recv_frame(&b).is_err(), "a closed connection is no frame");
    }}
