//! The shim's side of a container: what it prepares and starts, never what runs inside.
//!
//! At create time the shim makes a [`Launch`] plan from the bundle's `config.json` ([`plan`]),
//! mounts the rootfs ([`rootfs`]; [`idmap`] for a pod without host users), makes the cgroup ([`cgroup`]; a transient scope of [`systemd`]
//! where systemd runs the node) and opens the stdio ([`stdio`]);
//! [`spawn`] then creates the container process (through the [`zygote`], or by executing the
//! [`runner`] itself), which waits for its plan until Task.Start. An exec gets an [`exec`] plan.
//! A container with a user namespace waits in it until [`userns`] has mapped its IDs from outside.
//! [`relay`] carries the process's log lines and spans into the shim's, [`compile`] answers its
//! AOT cache misses. Linux containers are [`runc`]'s. What runs inside is [`crate::process`];
//! the wire between is [`crate::protocol`].
pub mod cgroup;
pub mod compile;
pub mod exec;
pub mod idmap;
pub mod plan;
pub mod relay;
pub mod rootfs;
pub mod runc;
pub mod runner;
pub mod spawn;
pub mod stdio;
pub mod systemd;
pub mod userns;
pub mod zygote;

pub use plan::Launch;
