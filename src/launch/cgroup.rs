//! The container's cgroup: created with the spec's limits by the shim, joined by the container
//! process itself before it runs anything, removed at delete. v1 and v2 alike, via cgroups-rs.
//!
//! A spec's `cgroupsPath` is a cgroupfs path, or systemd's `slice:prefix:name` (the systemd
//! cgroup driver, kubeadm's default), which names a unit and so the cgroup systemd gives it.
//! Where systemd is PID 1 the shim asks it for that unit over D-Bus ([`super::systemd`]), as
//! runc does; elsewhere it makes the cgroup in cgroupfs itself, where systemd would put it.
use super::systemd;
use anyhow::{anyhow, Context, Result};
use cgroups_rs::{fs::{hierarchies, Cgroup}, CgroupPid};
use oci_spec::runtime::LinuxResources;

/// Whether `cgroups_path` is systemd's `slice:prefix:name`: the runtime option `SystemdCgroup`
/// says so, or the path plainly has that shape (containerd's CRI writes it so for a cgroup
/// parent that is a slice, with or without the option).
pub fn is_systemd_form(cgroups_path: &str, systemd_option: bool) -> bool {
    systemd_option || matches!(cgroups_path.split(':').collect::<Vec<_>>()[..], [slice, _, _] if slice.ends_with(".slice") && !slice.contains('/'))
}

/// The cgroup `cgroups_path` names, relative to each hierarchy's root.
pub fn resolve(cgroups_path: &str, systemd_option: bool) -> Result<String> {
    if is_systemd_form(cgroups_path, systemd_option) {
        systemd_path(cgroups_path)
    } else {
        Ok(cgroups_path.to_string())
    }
}

/// Where systemd puts the unit of `slice:prefix:name` ([`systemd_unit`]): inside the slice,
/// whose dashes nest it (`a-b.slice` is `a.slice/a-b.slice`); `-.slice` is the root.
fn systemd_path(cgroups_path: &str) -> Result<String> {
    let unit = systemd_unit(cgroups_path)?;
    let slice = expand_slice(&unit.slice)
        .map_err(|why| anyhow!("cgroupsPath {cgroups_path:?} is not systemd's slice:prefix:name: {why}"))?;
    Ok(format!("{slice}/{}", unit.name))
}

/// The unit `slice:prefix:name` names: the scope `prefix-name.scope` (or `name` itself when it
/// is a slice) in the slice; an empty slice is `system.slice`.
pub fn systemd_unit(cgroups_path: &str) -> Result<systemd::Unit> {
    let malformed = |why: String| anyhow!("cgroupsPath {cgroups_path:?} is not systemd's slice:prefix:name: {why}");
    let [slice, prefix, name] = cgroups_path.split(':').collect::<Vec<_>>()[..] else {
        return Err(malformed("it needs exactly three parts".into()));
    };
    if name.is_empty() {
        return Err(malformed("the name is empty".into()));
    }
    if let Some(part) = [slice, prefix, name].into_iter().find(|p| p.contains('/')) {
        return Err(malformed(format!("{part:?} contains '/'")));
    }
    let unit = if name.ends_with(".slice") { name.to_string() } else { format!("{prefix}-{name}.scope") };
    Ok(systemd::Unit { name: unit, slice: if slice.is_empty() { "system.slice" } else { slice }.to_string() })
}

/// `a-b-c.slice` → `/a.slice/a-b.slice/a-b-c.slice`; `-.slice` (the root) → ``.
fn expand_slice(slice: &str) -> Result<String, String> {
    let Some(stem) = slice.strip_suffix(".slice") else { return Err(format!("slice {slice:?} does not end in .slice")) };
    if stem == "-" {
        return Ok(String::new());
    }
    let (mut path, mut unit) = (String::new(), String::new());
    for part in stem.split('-') {
        if part.is_empty() {
            return Err(format!("slice {slice:?} has an empty part between dashes"));
        }
        if !unit.is_empty() {
            unit.push('-');
        }
        unit.push_str(part);
        path.push_str(&format!("/{unit}.slice"));
    }
    Ok(path)
}

fn load(path: &str) -> Cgroup {
    Cgroup::load(hierarchies::auto(), path.trim_start_matches('/'))
}

/// Creates the cgroup at `path` and applies the spec's resources to it.
pub fn create(path: &str, resources: Option<&LinuxResources>) -> Result<()> {
    let cg = Cgroup::new(hierarchies::auto(), path.trim_start_matches('/'))
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("creating cgroup {path}"))?;
    if let Some(r) = resources {
        containerd_shim::cgroup::update_resources(&cg, r)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("setting limits on cgroup {path}"))?;
    }
    Ok(())
}

/// Moves the calling process into the cgroup at `path`.
pub fn join(path: &str) -> Result<()> {
    add(path, nix::unistd::getpid())
}

/// Moves process `pid` into the cgroup at `path`.
pub fn add(path: &str, pid: nix::unistd::Pid) -> Result<()> {
    let pid = CgroupPid::from(pid.as_raw() as u64);
    load(path).add_task_by_tgid(pid).map_err(|e| anyhow!("{e}")).with_context(|| format!("joining cgroup {path}"))
}

/// Starts, on a thread of its own, a move of the calling process into the cgroups it is already
/// in. The kernel makes the first cgroup move after a quiet while wait for an RCU grace period
/// (about 10 ms per container here, with cgroup v1), and moves within the next grace period do
/// not wait: started as a container's cgroup is made, the wait passes while the container
/// starts, and the container process's own [`join`] finds it over.
pub fn warm_up() {
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

/// Removes what is left of the cgroup of a stopped systemd unit: systemd removes its cgroup in
/// the hierarchies it manages, the shim made it in the others (v1).
pub fn remove_rest(path: &str) -> Result<()> {
    let hierarchy = hierarchies::auto();
    if hierarchy.v2() && !hierarchy.root().join(path.trim_start_matches('/')).exists() {
        return Ok(());
    }
    remove(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_paths_map_as_systemd_places_units() {
        let cases = [
            ("system.slice:wasmedge:c1", "/system.slice/wasmedge-c1.scope"),
            (":cri-containerd:c1", "/system.slice/cri-containerd-c1.scope"),
            ("-.slice:p:c1", "/p-c1.scope"),
            ("machine.slice:p:inner.slice", "/machine.slice/inner.slice"),
            (
                "kubepods-besteffort-pod1234.slice:cri-containerd:abc",
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice/cri-containerd-abc.scope",
            ),
        ];
        for (path, want) in cases {
            assert_eq!(resolve(path, true).unwrap(), want, "{path}");
        }
    }

    #[test]
    fn the_systemd_form_is_taken_from_the_option_or_a_plain_slice_shape() {
        assert_eq!(resolve("system.slice:wasmedge:c1", false).unwrap(), "/system.slice/wasmedge-c1.scope");
        assert_eq!(resolve("/default/c1", false).unwrap(), "/default/c1");
        assert_eq!(resolve(":cri-containerd:c1", false).unwrap(), ":cri-containerd:c1", "no slice: a cgroupfs name");
        assert_eq!(resolve("/a/b.slice:p:n", false).unwrap(), "/a/b.slice:p:n", "a slash: a cgroupfs path");
    }

    #[test]
    fn malformed_systemd_paths_are_refused_in_one_line() {
        for (path, why) in [
            ("/default/c1", "exactly three parts"),
            ("a.slice:p:n:x", "exactly three parts"),
            ("a.slice:p:", "the name is empty"),
            ("a.slice:p/q:n", "contains '/'"),
            ("a.slice:p:../n", "contains '/'"),
            ("kubepods:p:n", "does not end in .slice"),
            ("a--b.slice:p:n", "empty part"),
            ("-a.slice:p:n", "empty part"),
            ("a-.slice:p:n", "empty part"),
        ] {
            let err = format!("{:#}", resolve(path, true).unwrap_err());
            assert!(err.contains(why) && !err.contains('\n'), "{path}: {err}");
        }
    }
}
