//! A wasm container: a container process of the shim's own (see [`crate::launch::spawn`]),
//! created at Task.Create and started by sending it its plan.
use super::Runtime;
use crate::launch::plan::refuse_unsupported;
use crate::launch::{cgroup, exec::ExecPlan, spawn, spawn::PlanSender, stdio::Stdio, systemd, Launch};
use crate::shim::lock::lock;
use crate::trace::{Span, Trace};
use anyhow::{Context, Result};
use std::sync::Mutex;
use std::time::SystemTime;

pub struct Wasm {
    /// Taken by the start.
    plan: Mutex<Option<PlanSender>>,
    /// The container's unit, where systemd is PID 1 and cgroupsPath is systemd's.
    unit: Option<systemd::Unit>,
}

/// Makes the container's cgroup and clones its process, which waits for its plan; returns
/// its pid too. Where systemd runs the node and cgroupsPath is its `slice:prefix:name`, the
/// cgroup is systemd's scope, started with the process in it (its own join then finds it there).
pub fn create(spec: &oci_spec::runtime::Spec, launch: &Launch, stdio: &Stdio, trace: &Trace) -> Result<(Wasm, i32)> {
    refuse_unsupported(spec)?;
    let linux = spec.linux().as_ref();
    let resources = linux.and_then(|l| l.resources().as_ref());
    let unit = match linux.and_then(|l| l.cgroups_path().as_ref()) {
        Some(path) if launch.systemd_cgroup && systemd::booted() => Some(cgroup::systemd_unit(&path.to_string_lossy())?),
        _ => None,
    };
    if let (Some(path), None) = (&launch.cgroup, &unit) {
        cgroup::create(path, resources)?;
        // The container process joins it soon: the wait the kernel makes that move pay
        // starts now.
        cgroup::warm_up();
    }
    trace.add(&launch.id, Span::since("prepare", trace.created()).with("kind", "wasm"));
    let spawned_at = SystemTime::now();
    let (pid, plan) = spawn::create(launch, stdio, trace).inspect_err(|_| {
        if let (Some(path), None) = (&launch.cgroup, &unit) {
            let _ = cgroup::remove(path);
        }
    })?;
    trace.add(&launch.id, Span::since("spawn", spawned_at));
    let wasm = Wasm { plan: Mutex::new(Some(plan)), unit };
    if let (Some(path), None, Some(_)) = (&launch.cgroup, &wasm.unit, &launch.user) {
        // Root in a user namespace cannot join it: the shim places the process, which waits
        // for its plan, and so has not touched its module yet.
        cgroup::add(path, pid).inspect_err(|_| {
            let _ = wasm.cleanup(launch);
        })?;
    }
    if let (Some(unit), Some(path)) = (&wasm.unit, &launch.cgroup) {
        // Dropping `wasm` on failure ends the process, which has not started.
        unit.start(&format!("wasm container {}", launch.id), pid.as_raw() as u32, resources)?;
        cgroup::create(path, resources).inspect_err(|_| {
            let _ = wasm.cleanup(launch);
        })?;
    }
    Ok((wasm, pid.as_raw()))
}

impl Runtime for Wasm {
    fn start(&self, launch: &Launch) -> Result<()> {
        let plan = lock(&self.plan).take().with_context(|| format!("container {} has no process to start", launch.id))?;
        plan.send(launch)
    }

    fn exec(&self, launch: &Launch, trace: &Trace, exec_id: &str, spec: &[u8], init_pid: i32, stdio: &Stdio) -> Result<i32> {
        let process: oci_spec::runtime::Process = serde_json::from_slice(spec).context("malformed exec process")?;
        let plan = ExecPlan::new(launch, exec_id, init_pid, &process)?;
        Ok(crate::launch::exec::spawn(&plan, stdio, trace)?.as_raw())
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
        match (&launch.cgroup, &self.unit) {
            (Some(path), Some(unit)) => unit.stop().and_then(|()| cgroup::remove_rest(path)),
            (Some(path), None) => cgroup::remove(path),
            _ => Ok(()),
        }
    }
}
