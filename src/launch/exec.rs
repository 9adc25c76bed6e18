//! The shim's side of an exec process (`ctr task exec`, `docker exec`, CRI ExecSync): its plan,
//! made from the exec's OCI process and the container's launch plan, and its start. What it does
//! inside the container is [`crate::process::exec`].
use super::plan::{refuse_unsupported_process, wasi_view, Security};
use super::spawn::{self, IntoUserNs};
use super::userns::{Outside, UserNamespace};
use super::{stdio::Stdio, Launch};
use crate::engine::{EngineOptions, WasiContext};
use crate::protocol::EXEC_ARG;
use crate::trace::Trace;
use anyhow::{bail, Result};
use nix::sched::CloneFlags;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Everything an exec process needs, made by the shim from the exec's OCI process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecPlan {
    /// `container/exec-id`, for log lines.
    pub name: String,
    /// The container's init: its namespaces, root and cgroup are the exec's.
    pub pid: i32,
    pub cgroup: Option<String>,
    /// The container has a user namespace, which the exec joins: the shim puts it in its cgroup
    /// and sets its OOM score from outside.
    pub user_namespace: bool,
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
            user_namespace: launch.user.is_some(),
            entrypoint: cwd.join(entry),
            wasi: wasi_view(&args, &env, &cwd, launch.readonly_rootfs, &launch.mounts),
            cwd,
            engine: launch.engine.clone(),
            security: Security::new(process, launch.security.seccomp.clone()),
        })
    }
}

/// Starts the exec process; it is a child of the shim, born in the container's PID namespace
/// (and in its user namespace, if it has one). Its spans join the container's `trace`.
pub fn spawn(plan: &ExecPlan, stdio: &Stdio, trace: &Trace) -> Result<Pid> {
    let fd = spawn::plan_fd(plan)?;
    let pid_ns = PathBuf::from(format!("/proc/{}/ns/pid", plan.pid));
    let ns = plan.user_namespace.then(|| UserNamespace { path: Some(format!("/proc/{}/ns/user", plan.pid).into()), uid_mappings: Vec::new(), gid_mappings: Vec::new() });
    let user = ns.as_ref().map(|ns| IntoUserNs {
        ns,
        outside: Outside { mappings: None, cgroup: plan.cgroup.as_deref(), oom_score_adj: plan.security.oom_score_adj },
        binds: None,
    });
    spawn::clone_self(EXEC_ARG, &plan.name, fd, &plan.engine, stdio, CloneFlags::empty(), Some(&pid_ns), user, trace)
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
