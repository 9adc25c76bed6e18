//! A Linux container, run by runc (see [`crate::launch::runc`]).
use super::{Runc, Runtime};
use crate::launch::{stdio::Stdio, Launch};
use crate::trace::{Span, Trace};
use anyhow::Result;
use std::path::Path;
use std::time::SystemTime;

/// `runc create`: the container's init exists and waits for its start; returns its pid too.
pub fn create(bundle: &Path, launch: &Launch, stdio: &Stdio, trace: &Trace) -> Result<(Runc, i32)> {
    let runc = Runc::new(&launch.id, bundle, launch.systemd_cgroup);
    trace.add(&launch.id, Span::since("prepare", trace.created()).with("kind", "linux"));
    let spawned_at = SystemTime::now();
    let pid = runc.create(stdio).inspect_err(|_| {
        let _ = runc.delete();
    })?;
    trace.add(&launch.id, Span::since("spawn", spawned_at).with("runtime", "runc"));
    Ok((runc, pid))
}

impl Runtime for Runc {
    fn start(&self, _launch: &Launch) -> Result<()> {
        Runc::start(self)
    }

    fn exec(&self, _launch: &Launch, _trace: &Trace, exec_id: &str, spec: &[u8], _init_pid: i32, stdio: &Stdio) -> Result<i32> {
        Runc::exec(self, exec_id, spec, stdio)
    }

    fn idle_until_started(&self) -> bool {
        false
    }

    fn kill_all(&self, signal: u32) -> Option<Result<()>> {
        Some(self.kill(signal, true))
    }

    fn pids(&self, _init_pid: i32) -> Result<Vec<i32>> {
        self.ps()
    }

    fn cleanup(&self, _launch: &Launch) -> Result<()> {
        self.delete()
    }
}
