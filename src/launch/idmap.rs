//! Mounts the shim makes for a container in a user namespace, as the host's root: the kernel
//! gives a mount an ID mapping only to a process privileged over the filesystem itself, and
//! root of the namespace may not even reach a bind mount's source (containerd's pod `/dev/shm`
//! sits in its 0700 state directory). A `hostUsers: false` pod needs both: its rootfs layers
//! idmapped (containerd's snapshotter asks with `uidmap=`/`gidmap=` options on the overlay), its
//! volumes idmapped (`mounts[].uidMappings`) so that files owned by the host's root are the
//! container's root's, and its other binds made from outside.
use anyhow::{bail, ensure, Context, Result};
use super::plan::{Launch, Mount, MountKind};
use super::userns::IdMap;
use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxIdMapping, LinuxIdMappingBuilder};
use rustix::mount::{MoveMountFlags, OpenTreeFlags};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A detached copy of the mount at `source` (its submounts too with `recursive`), not yet
/// attached anywhere.
fn clone_tree(source: &Path, recursive: bool) -> Result<OwnedFd> {
    let rec = if recursive { OpenTreeFlags::AT_RECURSIVE } else { OpenTreeFlags::empty() };
    let tree = rustix::mount::open_tree(rustix::fs::CWD, source, OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC | rec)
        .with_context(|| format!("opening {}", source.display()))?;
    Ok(tree)
}

/// The IDs of the detached `tree` seen through `userns`'s mappings (in its submounts too with
/// `recursive`).
fn idmap_tree(tree: &OwnedFd, userns: &OwnedFd, recursive: bool) -> std::io::Result<()> {
    let attr = libc::mount_attr { attr_set: libc::MOUNT_ATTR_IDMAP, attr_clr: 0, propagation: 0, userns_fd: userns.as_raw_fd() as u64 };
    mount_setattr(tree, &attr, recursive)
}

/// The mount at `fd` read-only, and with `recursive` every mount under it.
pub fn set_readonly(fd: &OwnedFd, recursive: bool) -> std::io::Result<()> {
    let attr = libc::mount_attr { attr_set: libc::MOUNT_ATTR_RDONLY, attr_clr: 0, propagation: 0, userns_fd: 0 };
    mount_setattr(fd, &attr, recursive)
}

/// The trees of the launch's bind mounts (see [`Launch::shim_binds`]), in order, for its
/// process `pid`, which waits in its user and mount namespaces. They are made by a thread that
/// enters that mount namespace (a copy of the host's, not yet pivoted), so that the detached
/// copies belong to it: the process, root of its namespace only, may attach them.
pub fn mount_trees(pid: Pid, launch: &Launch) -> Result<Vec<OwnedFd>> {
    let binds: Vec<&Mount> = launch.mounts.iter().filter(|m| launch.shim_binds(m)).collect();
    if binds.is_empty() {
        return Ok(Vec::new());
    }
    let mut namespaces: Vec<(&IdMap, OwnedFd)> = Vec::new();
    for idmap in binds.iter().filter_map(|m| m.idmap.as_ref()) {
        if !namespaces.iter().any(|(map, _)| *map == &idmap.map) {
            namespaces.push((&idmap.map, idmap.map.user_namespace()?));
        }
    }
    let mnt = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).with_context(|| format!("opening the mount namespace of process {pid}"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // A thread shares its filesystem context with the others until it unshares it.
            unshare(CloneFlags::CLONE_FS).context("unsharing the thread's filesystem context")?;
            setns(&mnt, CloneFlags::CLONE_NEWNS).with_context(|| format!("entering the mount namespace of process {pid}"))?;
            binds
                .iter()
                .map(|m| {
                    let userns = m.idmap.as_ref().and_then(|i| namespaces.iter().find(|(map, _)| *map == &i.map)).map(|(_, fd)| fd);
                    bind_tree(m, userns).with_context(|| format!("mounting {} at {}", m.source.display(), m.destination.display()))
                })
                .collect()
        })
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the thread making the bind mounts panicked")))
    })
}

/// The detached tree of the bind mount `m`, idmapped through `userns` (the mount's mappings)
/// if given, read-only with every submount if `m` asks.
fn bind_tree(m: &Mount, userns: Option<&OwnedFd>) -> Result<OwnedFd> {
    let tree = clone_tree(&m.source, matches!(m.kind, MountKind::Bind { recursive: true }))?;
    if let (Some(userns), Some(idmap)) = (userns, &m.idmap) {
        idmap_tree(&tree, userns, idmap.recursive).context("idmapping it")?;
    }
    if m.readonly {
        set_readonly(&tree, true).context("making it read-only")?;
    }
    Ok(tree)
}

/// mount_setattr(2) on the mount at `fd`, and with `recursive` on every mount under it (rustix
/// has no wrapper for it).
fn mount_setattr(fd: &OwnedFd, attr: &libc::mount_attr, recursive: bool) -> std::io::Result<()> {
    let flags = libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 };
    let size = std::mem::size_of::<libc::mount_attr>();
    let done = unsafe { libc::syscall(libc::SYS_mount_setattr, fd.as_raw_fd(), c"".as_ptr(), flags, attr, size) };
    if done == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The mappings of containerd's `uidmap=`/`gidmap=` mount options, if it gave them: ranges of
/// `container:host:size`, separated by commas.
pub fn from_options(options: &[String]) -> Result<Option<IdMap>> {
    let find = |key: &str| options.iter().find_map(|o| o.strip_prefix(key));
    match (find("uidmap="), find("gidmap=")) {
        (None, None) => Ok(None),
        (Some(uids), Some(gids)) => Ok(Some(IdMap { uids: parse_ranges(uids).context("uidmap")?, gids: parse_ranges(gids).context("gidmap")? })),
        _ => bail!("a rootfs mount with only one of the uidmap and gidmap options"),
    }
}

fn parse_ranges(text: &str) -> Result<Vec<LinuxIdMapping>> {
    text.split(',')
        .map(|range| {
            let parts: Vec<u32> = range.split(':').map(str::parse).collect::<Result<_, _>>().with_context(|| format!("the range {range:?} is not container:host:size"))?;
            let [container, host, size] = parts[..] else { bail!("the range {range:?} is not container:host:size") };
            ensure!(size > 0, "the range {range:?} is empty");
            Ok(LinuxIdMappingBuilder::default().container_id(container).host_id(host).size(size).build()?)
        })
        .collect()
}

/// An overlay rootfs whose layers containerd asked to be idmapped: each lower layer is mounted,
/// idmapped, under `scratch`, the overlay is made of those, and they are detached again (the
/// overlay keeps them). The upper and work directories are the snapshot's own, which the
/// snapshotter made for the mapped root.
pub fn mount_overlay(options: &[String], map: &IdMap, target: &Path, scratch: &Path) -> Result<()> {
    let userns = map.user_namespace()?;
    let lowers: Vec<PathBuf> = options
        .iter()
        .find_map(|o| o.strip_prefix("lowerdir="))
        .context("an idmapped overlay without lowerdir")?
        .split(':')
        .map(PathBuf::from)
        .collect();
    std::fs::create_dir_all(scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let mut attached = Vec::new();
    let mounted = (|| -> Result<()> {
        for (i, lower) in lowers.iter().enumerate() {
            let tree = clone_tree(lower, false)?;
            idmap_tree(&tree, &userns, false).with_context(|| format!("idmapping {}", lower.display()))?;
            let at = scratch.join(i.to_string());
            std::fs::create_dir_all(&at).with_context(|| format!("creating {}", at.display()))?;
            rustix::mount::move_mount(&tree, "", rustix::fs::CWD, &at, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
                .with_context(|| format!("attaching idmapped layer {}", lower.display()))?;
            attached.push(at);
        }
        let lowerdir = attached.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
        let data: Vec<String> = options
            .iter()
            .filter(|o| !o.starts_with("uidmap=") && !o.starts_with("gidmap="))
            .map(|o| if o.starts_with("lowerdir=") { format!("lowerdir={lowerdir}") } else { o.clone() })
            .collect();
        containerd_shim::mount::mount_rootfs(Some("overlay"), Some("overlay"), &data, target)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("mounting the idmapped overlay at {}", target.display()))
    })();
    for at in &attached {
        let _ = nix::mount::umount2(at, nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir_all(scratch);
    mounted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(container: u32, host: u32, size: u32) -> LinuxIdMapping {
        LinuxIdMappingBuilder::default().container_id(container).host_id(host).size(size).build().unwrap()
    }

    #[test]
    fn containerds_options_give_the_mappings() {
        let options = ["index=off".to_string(), "uidmap=0:300000:65536".into(), "gidmap=0:400000:10,10:500000:1".into()];
        let map = from_options(&options).unwrap().unwrap();
        assert_eq!(map.uids, vec![range(0, 300000, 65536)]);
        assert_eq!(map.gids, vec![range(0, 400000, 10), range(10, 500000, 1)]);
        assert_eq!(from_options(&["ro".into()]).unwrap(), None);
        for (options, err) in [
            (vec!["uidmap=0:1:1"], "a rootfs mount with only one of the uidmap and gidmap options"),
            (vec!["uidmap=0:1", "gidmap=0:1:1"], "uidmap: the range \"0:1\" is not container:host:size"),
            (vec!["uidmap=0:1:1", "gidmap=0:x:1"], "gidmap: the range \"0:x:1\" is not container:host:size"),
            (vec!["uidmap=0:1:0", "gidmap=0:1:1"], "uidmap: the range \"0:1:0\" is empty"),
        ] {
            let options: Vec<String> = options.into_iter().map(String::from).collect();
            assert_eq!(format!("{:#}", from_options(&options).unwrap_err()).split(": invalid").next().unwrap(), err);
        }
    }
}
