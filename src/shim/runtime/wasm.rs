//! A wasm container: a container process of the shim's own (see [`crate::container::spawn`]),
//! created at Task.Create and started by sending it its plan.
use super::Runtime;
use crate::container::{cgroup, exec::ExecPlan, launch, spawn, spawn::PlanSender, stdio::Stdio, Launch};
use crate::shim::lock::lock;
use crate::trace::{Span, Trace};
use anyhow::{Context, Result};
use std::sync::Mutex;
use std::time::SystemTime;

pub struct Wasm {
    /// Taken by the start.
    plan: Mutex<Option<PlanSender>>,
}

/// Makes the container's cgroup and clones its process, which waits for its plan; returns
/// its pid too.
pub fn create(spec: &oci_spec::runtime::Spec, launch: &Launch, stdio: &Stdio, trace: &Trace) -> Result<(Wasm, i32)> {
    launch::refuse_unsupported(spec)?;
    if launch.systemd_cgroup && cgroup::systemd_manages_cgroups() {
        log::warn!("{}: systemd runs this node, but the shim makes cgroup {} itself: no transient unit over D-Bus", launch.id, launch.cgroup.as_deref().unwrap_or_default());
    }
    if let Some(path) = &launch.cgroup {
        let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
        cgroup::create(path, resources)?;
        // The container process joins it soon: the wait the kernel makes that move pay
        // starts now.
        cgroup::warm_up();
    }
    trace.add(&launch.id, Span::since("prepare", trace.created()).with("kind", "wasm"));
    let spawned_at = SystemTime::now();
    let (pid, plan) = spawn::create(launch, stdio, trace).inspect_err(|_| {
        if let Some(path) = &launch.cgroup {
            let _ = cgroup::remove(path);
        }
    })?;
    trace.add(&launch.id, Span::since("spawn", spawned_at));
    Ok((Wasm { plan: Mutex::new(Some(plan)) }, pid.as_raw()))
}

impl Runtime for Wasm {
    fn start(&self, launch: &Launch) -> Result<()> {
        let plan = lock(&self.plan).take().with_context(|| format!("container {} has no process to start", launch.id))?;
        plan.send(launch)
    }

    fn exec(&self, launch: &Launch, trace: &Trace, exec_id: &str, spec: &[u8], init_pid: i32, stdio: &Stdio) -> Result<i32> {
        let process: oci_spec::runtime::Process = serde_json::from_slice(spec).context("malformed exec process")?;
        let plan = ExecPlan::new(launch, exec_id, init_pid, &process)?;
        Ok(crate::container::exec::spawn(&plan, stdio, trace)?.as_raw())
    }

    /// The process waits for its plan and may not have its signal handlers yet.
    fn idle_until_started(&self) -> bool {
        true
    }

    fn kill_all(&self, _signal: u32) -> Option<Result<()>> {
        None
    }

    fn pids(&self, init_pid: i32) -> Result<Vec<i32>> {
        Ok(vec![init_pid])
    }

    fn cleanup(&self, launch: &Launch) -> Result<()> {
        match &launch.cgroup {
            Some(path) => cgroup::remove(path),
            None => Ok(()),
        }
    }
}
