//! One container: its OCI bundle, the process that runs it, and what that process sets up.
//!
//! The shim prepares a [`Launch`] at create time; at start, [`spawn`] clones a process in new
//! namespaces that re-executes this binary as `init`; [`init`] reads the launch plan, joins the
//! cgroup, mounts, pivots into the rootfs and hands the module to the engine.
pub mod cgroup;
#[cfg(feature = "engine")]
pub mod compile;
pub mod exec;
#[cfg(feature = "engine")]
pub mod init;
pub mod launch;
#[cfg(feature = "engine")]
pub mod mounts;
#[cfg(feature = "engine")]
pub mod outcome;
pub mod report;
pub mod rootfs;
pub mod runc;
pub mod runner;
pub mod security;
pub mod spawn;
pub mod stdio;
pub mod zygote;

pub use launch::Launch;

/// The binary that runs containers, installed next to the shim.
pub const RUNNER_BIN: &str = "containerd-wasmedge-init";

/// The first argument that makes the runner a container's init process.
pub const INIT_ARG: &str = "init";

/// The file descriptor on which the init process finds its launch plan.
pub const LAUNCH_FD: i32 = 3;
