//! Who runs a task's processes, the one place where a wasm container and a Linux one differ:
//! [`wasm::Wasm`], the shim's own container processes, or [`Runc`], for a pod's Linux containers
//! (the pause container, sidecars). The task state machine sees only [`Runtime`].
mod runc;
mod wasm;

use crate::launch::{stdio::Stdio, Launch};
use crate::trace::Trace;
use anyhow::Result;

pub use crate::launch::runc::Runc;
pub use runc::create as create_runc;
pub use wasm::create as create_wasm;

pub trait Runtime: Send + Sync {
    /// Starts the created init (Task.Start).
    fn start(&self, launch: &Launch) -> Result<()>;

    /// Starts exec `exec_id` (`spec`: its OCI process, JSON) in the running container whose init
    /// is `init_pid`; returns its pid.
    fn exec(&self, launch: &Launch, trace: &Trace, exec_id: &str, spec: &[u8], init_pid: i32, stdio: &Stdio) -> Result<i32>;

    /// Whether a created init runs nothing before its start: a signal then ends it as if it had
    /// killed it.
    fn idle_until_started(&self) -> bool;

    /// Signals every process of the container when the runtime does that itself; `None`: the
    /// shim signals the init and the execs.
    fn kill_all(&self, signal: u32) -> Option<Result<()>>;

    /// The pids of the running container's processes.
    fn pids(&self, init_pid: i32) -> Result<Vec<i32>>;

    /// Undoes create: the container's cgroup, or runc's container.
    fn cleanup(&self, launch: &Launch) -> Result<()>;
}
