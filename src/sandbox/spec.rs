//! The OCI spec of an execution's container, a warm slot's too, and what it names: the shim's
//! runtime, the scratch directory and the user programs run as.
use super::container;
use super::limits::Limits;
use anyhow::{Context, Result};
use std::path::Path;

/// The shim's runtime name in containerd.
pub const WASMEDGE_RUNTIME: &str = "io.containerd.wasmedge.v1";
/// The shim's annotation for the wall-clock limit.
const TIME_LIMIT_ANNOTATION: &str = "wasmedge.io/time-limit";
/// Where the scratch directory is in the container (and its working directory).
pub const WORKDIR: &str = "/work";
/// The user executions run as: nobody.
const RUN_UID: u32 = 65534;

/// The OCI spec of an execution's container (a warm slot's too): no capabilities, user
/// nobody, `/work` the scratch directory, new namespaces (no network), the memory limit as
/// cgroup limit, the time limit as the shim's.
pub fn spec(id: &str, args: &[String], env: &[String], limits: Limits, work: &Path, traceparent: Option<String>) -> serde_json::Value {
    let mut annotations = serde_json::json!({TIME_LIMIT_ANNOTATION: format!("{}ms", limits.timeout.as_millis())});
    if let Some(parent) = traceparent {
        annotations[crate::trace::PARENT_ANNOTATION] = parent.into();
    }
    serde_json::json!({
        "ociVersion": "1.1.0",
        "process": {
            "terminal": false,
            "user": {"uid": RUN_UID, "gid": RUN_UID},
            "args": args,
            "env": env,
            "cwd": WORKDIR,
            "capabilities": {"bounding": [], "effective": [], "permitted": []},
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "sandbox",
        "mounts": [{"destination": WORKDIR, "type": "bind", "source": work, "options": ["rbind", "rw", "nosuid", "nodev"]}],
        "annotations": annotations,
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}, {"type": "cgroup"}],
            "resources": {"memory": {"limit": limits.memory_bytes}, "pids": {"limit": 64}},
            "cgroupsPath": container::cgroup_path(id),
        },
    })
}

/// The scratch directory belongs to the user the program runs as.
pub fn chown_tree(dir: &Path) -> Result<()> {
    nix::unistd::chown(dir, Some(RUN_UID.into()), Some(RUN_UID.into())).with_context(|| format!("chown {}", dir.display()))?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            chown_tree(&path)?;
        } else {
            nix::unistd::chown(&path, Some(RUN_UID.into()), Some(RUN_UID.into()))?;
        }
    }
    Ok(())
}
