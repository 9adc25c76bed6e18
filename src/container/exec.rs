//! An exec process in a running wasm container (`ctr task exec`, `docker exec`, CRI ExecSync):
//! another module, or the same one with other arguments, run inside the container.
//!
//! The shim clones the process straight into the container's PID namespace (see
//! [`super::spawn::clone_self`]); the process re-executes this binary as `exec`, reads its plan
//! from fd 3, opens the AOT cache, joins the container's cgroup and its other namespaces
//! (`/proc/PID/ns/*`), takes the container's root (`/proc/PID/root`) as its own, drops to the
//! exec's user and capabilities and arms the time limit as the init does, and only then reads,
//! loads and runs the module with its own argv, environment, stdio and exit code.
use super::launch::{refuse_unsupported_process, wasi_view};
use super::{security::Security, spawn, stdio::Stdio, Launch};
use crate::engine::{EngineOptions, WasiContext};
use crate::trace::Trace;
use anyhow::{bail, Result};
use nix::sched::CloneFlags;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
// The process side, in the binary that links WasmEdge.
#[cfg(feature = "engine")]
use {
    super::compile::Aot,
    super::outcome::{finish, load, ProcessError},
    super::{cgroup, report, LAUNCH_FD},
    crate::engine::{self, ExitCode},
    anyhow::Context,
    nix::sched::setns,
    std::{fs::File, os::fd::FromRawFd},
};

/// The first argument that turns the shim binary into an exec process.
pub const EXEC_ARG: &str = "exec";

/// Namespaces an exec process joins besides the PID namespace (entered at clone) and the
/// mount namespace (entered last, see `enter`).
#[cfg(feature = "engine")]
const JOINED: &[(&str, CloneFlags)] = &[
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
];

/// Everything an exec process needs, made by the shim from the exec's OCI process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecPlan {
    /// `container/exec-id`, for log lines.
    pub name: String,
    /// The container's init: its namespaces, root and cgroup are the exec's.
    pub pid: i32,
    pub cgroup: Option<String>,
    pub cwd: PathBuf,
    /// The module's path inside the container.
    pub entrypoint: PathBuf,
    pub wasi: WasiContext,
    pub engine: EngineOptions,
    pub security: Security,
}

impl ExecPlan {
    /// The exec's args, env, cwd, user, capabilities, rlimits and OOM score come from its OCI
    /// process; what the module may open (the root and the container's mounts), the seccomp
    /// profile and the engine's limits from the container.
    pub fn new(launch: &Launch, exec_id: &str, pid: i32, process: &oci_spec::runtime::Process) -> Result<ExecPlan> {
        refuse_unsupported_process(process)?;
        let args = process.args().clone().unwrap_or_default();
        let Some(entry) = args.first() else { bail!("the exec process has no args: no module to run") };
        let cwd = process.cwd().clone();
        let cwd = if cwd.as_os_str().is_empty() { PathBuf::from("/") } else { cwd };
        let env = process.env().clone().unwrap_or_default();
        Ok(ExecPlan {
            name: format!("{}/{exec_id}", launch.id),
            pid,
            cgroup: launch.cgroup.clone(),
            entrypoint: cwd.join(entry),
            wasi: wasi_view(&args, &env, &cwd, launch.readonly_rootfs, &launch.mounts),
            cwd,
            engine: launch.engine.clone(),
            security: Security::new(process, launch.security.seccomp.clone()),
        })
    }
}

/// Starts the exec process; it is a child of the shim, born in the container's PID namespace.
/// Its spans join the container's `trace`.
pub fn spawn(plan: &ExecPlan, stdio: &Stdio, trace: &Trace) -> Result<Pid> {
    let fd = spawn::plan_fd(plan)?;
    let pid_ns = PathBuf::from(format!("/proc/{}/ns/pid", plan.pid));
    spawn::clone_self(EXEC_ARG, &plan.name, fd, stdio, CloneFlags::empty(), Some(&pid_ns), trace)
}

/// The exec process's main: never returns, exits like a container process (same exit codes,
/// one line of reason on its stderr).
#[cfg(feature = "engine")]
pub fn main() -> ! {
    report::log_to_shim(unsafe { File::from_raw_fd(report::REPORT_FD) });
    finish("exec", run())
}

#[cfg(feature = "engine")]
fn run() -> Result<ExitCode, ProcessError> {
    let plan: ExecPlan = serde_json::from_reader(unsafe { File::from_raw_fd(LAUNCH_FD) })
        .context("reading the exec plan")
        .map_err(ProcessError::Setup)?;
    let proc_dir = PathBuf::from(format!("/proc/{}", plan.pid));
    let setup = |e: anyhow::Error| ProcessError::Setup(e.context(format!("entering container process {}", plan.pid)));
    // Everything of the container is opened first: /proc is the host's only until we move.
    let root = File::open(proc_dir.join("root")).context("opening its root").map_err(setup)?;
    let namespaces = JOINED
        .iter()
        .map(|(kind, flag)| Ok((*kind, *flag, File::open(proc_dir.join("ns").join(kind)).with_context(|| format!("opening its {kind} namespace"))?)))
        .collect::<Result<Vec<_>>>()
        .map_err(setup)?;
    let mnt = File::open(proc_dir.join("ns/mnt")).context("opening its mount namespace").map_err(setup)?;
    let aot = Aot::open(&plan.engine).map_err(ProcessError::Setup)?;

    if let Some(path) = &plan.cgroup {
        cgroup::join(path).map_err(setup)?;
    }
    for (kind, flag, ns) in namespaces {
        setns(ns, flag).with_context(|| format!("joining its {kind} namespace")).map_err(setup)?;
    }
    plan.security.adjust_oom_score().map_err(ProcessError::Setup)?;
    enter(&root, mnt).map_err(setup)?;
    std::env::set_current_dir(&plan.cwd)
        .with_context(|| format!("working directory {} does not exist", plan.cwd.display()))
        .map_err(ProcessError::Setup)?;
    plan.security.apply().map_err(ProcessError::Setup)?;
    if let Some(limit) = plan.engine.limits.time_limit {
        super::init::arm_time_limit(limit);
    }
    // As in init: the module is read only now, through the container's root.
    let root = File::open("/").context("opening the root").map_err(ProcessError::Setup)?;
    let prepared = load(&root, &plan.entrypoint, aot, &plan.engine.limits)?;
    engine::run(prepared, &plan.wasi).map_err(ProcessError::Module)
}

/// Takes the container's root (with the container's mounts on it) as this process's root. The
/// process enters the container's mount namespace too, unless the engine already started
/// threads, which setns(CLONE_NEWNS) refuses: the root alone gives the same view of files.
#[cfg(feature = "engine")]
fn enter(root: &File, mnt: File) -> Result<()> {
    if let Err(e) = setns(mnt, CloneFlags::CLONE_NEWNS) {
        log::debug!("staying in the shim's mount namespace: {e}");
    }
    nix::unistd::fchdir(root).context("entering its root")?;
    nix::unistd::chroot(".").context("chroot into its root")?;
    std::env::set_current_dir("/").context("chdir /")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(json: serde_json::Value) -> oci_spec::runtime::Process {
        serde_json::from_value(json).unwrap()
    }

    fn launch() -> Launch {
        let spec: oci_spec::runtime::Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["/app.wasm"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs"},
            "mounts": [{"destination": "/data", "type": "bind", "source": "/host", "options": ["rbind", "ro"]}],
            "linux": {"cgroupsPath": "/test/c1"}
        }))
        .unwrap();
        Launch::from_spec("c1", std::path::Path::new("/b"), &spec, &EngineOptions::default(), false).unwrap()
    }

    #[test]
    fn plan_takes_the_exec_process_and_the_containers_mounts() {
        let p = process(serde_json::json!({"args": ["bin/m.wasm", "x"], "env": ["A=1"], "cwd": "/srv", "user": {"uid": 0, "gid": 0}}));
        let plan = ExecPlan::new(&launch(), "e1", 42, &p).unwrap();
        assert_eq!(plan.name, "c1/e1");
        assert_eq!(plan.entrypoint, PathBuf::from("/srv/bin/m.wasm"));
        assert_eq!(plan.wasi.args, vec!["bin/m.wasm", "x"]);
        assert!(plan.wasi.env.contains(&"A=1".to_string()));
        assert_eq!(plan.wasi.preopens.len(), 2, "the root and the container's bind mount");
        assert!(plan.wasi.preopens[1].readonly);
        assert_eq!(plan.cgroup.as_deref(), Some("/test/c1"));
    }

    #[test]
    fn plan_takes_the_exec_users_capabilities_and_oom_score() {
        let p = process(serde_json::json!({
            "args": ["/app.wasm"], "cwd": "/", "oomScoreAdj": 500,
            "user": {"uid": 1000, "gid": 1001, "additionalGids": [5, 6]},
            "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]}
        }));
        let security = ExecPlan::new(&launch(), "e1", 42, &p).unwrap().security;
        assert_eq!((security.user.uid(), security.user.gid()), (1000, 1001));
        assert_eq!(security.user.additional_gids().as_deref(), Some(&[5, 6][..]));
        assert_eq!(security.capabilities, p.capabilities().clone());
        assert_eq!(security.oom_score_adj, Some(500));
    }

    #[test]
    fn exec_with_what_a_wasm_container_cannot_have_is_refused() {
        let p = process(serde_json::json!({"args": ["/app.wasm"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "ioPriority": {"class": "IOPRIO_CLASS_IDLE"}}));
        let err = ExecPlan::new(&launch(), "e1", 42, &p).unwrap_err();
        assert!(err.to_string().contains("process.ioPriority"), "{err}");
    }

    #[test]
    fn exec_without_args_is_refused() {
        let p = process(serde_json::json!({"args": [], "cwd": "/", "user": {"uid": 0, "gid": 0}}));
        assert!(ExecPlan::new(&launch(), "e1", 42, &p).is_err());
    }
}
