//! The side effects of the task state machine that are no runtime's: containerd's events and
//! signals to processes. A trait, so that the state machine is unit-tested with a fake.
use containerd_shim::{protos::protobuf::MessageDyn, publisher::RemotePublisher};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub trait Host: Send + Sync {
    fn publish(&self, topic: &str, event: Box<dyn MessageDyn>);

    /// A handle on the live process `pid` that never names another process, even once this one
    /// is reaped and its pid reused. `None` on a kernel without pidfds (before 5.3), or when the
    /// process is already gone.
    fn pidfd(&self, pid: i32) -> Option<OwnedFd>;

    /// Signals a process through its pidfd, or by pid when it has none.
    fn signal(&self, pid: i32, pidfd: Option<&OwnedFd>, signal: Signal) -> nix::Result<()>;
}

/// The real host: containerd's event service and the kernel.
pub struct Node {
    pub publisher: RemotePublisher,
    pub namespace: String,
}

impl Host for Node {
    fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        if let Err(e) = self.publisher.publish(Default::default(), topic, &self.namespace, event) {
            log::warn!("publishing {topic}: {e}");
        }
    }

    fn pidfd(&self, pid: i32) -> Option<OwnedFd> {
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        // SAFETY: a new descriptor that nothing else owns.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    fn signal(&self, pid: i32, pidfd: Option<&OwnedFd>, signal: Signal) -> nix::Result<()> {
        let Some(fd) = pidfd else {
            return nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        };
        let sent = unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), signal as libc::c_int, std::ptr::null::<libc::siginfo_t>(), 0)
        };
        if sent < 0 {
            return Err(Errno::last());
        }
        Ok(())
    }
}
