//! The container's cgroup: created with the spec's limits by the shim, joined by the container
//! process itself before it runs anything, removed at delete. v1 and v2 alike, via cgroups-rs.
use anyhow::{anyhow, Context, Result};
use cgroups_rs::{fs::{hierarchies, Cgroup}, CgroupPid};
use oci_spec::runtime::LinuxResources;

fn load(path: &str) -> Cgroup {
    Cgroup::load(hierarchies::auto(), path.trim_start_matches('/'))
}

/// Creates the cgroup at `path` and applies the spec's resources to it. A process joins it
/// soon after: the wait the kernel makes that move pay starts now (see [`warm_up`]).
pub fn create(path: &str, resources: Option<&LinuxResources>) -> Result<()> {
    let cg = Cgroup::new(hierarchies::auto(), path.trim_start_matches('/'))
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("creating cgroup {path}"))?;
    if let Some(r) = resources {
        containerd_shim::cgroup::update_resources(&cg, r)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("setting limits on cgroup {path}"))?;
    }
    warm_up();
    Ok(())
}

/// Moves the calling process into the cgroup at `path`.
pub fn join(path: &str) -> Result<()> {
    let pid = CgroupPid::from(std::process::id() as u64);
    load(path).add_task_by_tgid(pid).map_err(|e| anyhow!("{e}")).with_context(|| format!("joining cgroup {path}"))
}

/// Starts, on a thread of its own, a move of the calling process into the cgroups it is already
/// in. The kernel makes the first cgroup move after a quiet while wait for an RCU grace period
/// (about 10 ms per container here, with cgroup v1), and moves within the next grace period do
/// not wait: started as a container's cgroup is made, the wait passes while the container
/// starts, and the container process's own [`join`] finds it over.
fn warm_up() {
    std::thread::spawn(|| {
        let pid = std::process::id();
        if let Ok(own) = containerd_shim::cgroup::get_cgroup(pid) {
            let _ = own.add_task_by_tgid(CgroupPid::from(u64::from(pid)));
        }
    });
}

/// Removes the cgroup; it must hold no process any more.
pub fn remove(path: &str) -> Result<()> {
    load(path).delete().map_err(|e| anyhow!("{e}")).with_context(|| format!("removing cgroup {path}"))
}
