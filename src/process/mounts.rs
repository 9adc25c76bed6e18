//! The container's filesystem view, built through file descriptors. Each mount destination is
//! opened one component at a time from the fd of the one before, symlinks refused, and the mount
//! is attached to that fd with the new mount API (open_tree/fsmount, mount_setattr, move_mount).
//! No path is checked and then used again: a co-tenant who swaps a directory for a symlink in
//! between (runc's CVE-2021-30465, with nested volumes) cannot redirect a mount to the host.
use crate::launch::idmap::set_readonly;
use crate::launch::plan::{Launch, Mount, MountKind};
use crate::protocol::FIRST_MOUNT_FD;
use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{open, openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{mkdirat, mknodat, Mode, SFlag};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags};
use std::ffi::OsStr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Component, Path};

/// Makes the rootfs a mount of its own and attaches the spec's mounts to it. Nothing of this
/// propagates back to the host.
pub fn build_rootfs(launch: &Launch) -> Result<()> {
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none).context("making / private")?;
    let root = &launch.rootfs;
    mount(Some(root), root, none, MsFlags::MS_BIND | MsFlags::MS_REC, none)
        .with_context(|| format!("bind-mounting rootfs {}", root.display()))?;
    // Opened after the bind, so the fd is on the rootfs's own mount.
    let root_fd = open(root, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .with_context(|| format!("opening rootfs {}", root.display()))?;
    let mut trees = FIRST_MOUNT_FD..;
    for m in &launch.mounts {
        // SAFETY: the shim passed these trees, in order, from FIRST_MOUNT_FD on.
        let tree = launch.shim_binds(m).then(|| trees.next()).flatten().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
        // A file's bind mount goes onto a file. The shim's tree says what it is: the source may
        // be out of this process's reach.
        let dir = match (&tree, &m.kind) {
            (Some(tree), _) => nix::sys::stat::fstat(tree).is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR),
            (None, MountKind::Bind { .. }) => m.source.is_dir(),
            (None, MountKind::Tmpfs { .. }) => true,
        };
        let target = mount_point(&root_fd, &m.destination, dir)?;
        attach(m, tree, &target).with_context(|| format!("mounting {} at {}", m.source.display(), m.destination.display()))?;
    }
    if launch.readonly_rootfs {
        // Not recursive: the spec's read-write mounts under it stay writable.
        set_readonly(&root_fd, false).context("making the rootfs read-only")?;
    }
    Ok(())
}

/// Makes `m` as a detached mount, read-only before anyone can see it if asked, and moves it onto
/// the mount point's fd; or moves the `tree` the shim made of it, all done.
fn attach(m: &Mount, tree: Option<OwnedFd>, target: &OwnedFd) -> std::io::Result<()> {
    let onto_fds = MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH;
    if let Some(tree) = tree {
        return Ok(rustix::mount::move_mount(&tree, "", target, "", onto_fds)?);
    }
    let tree = match &m.kind {
        MountKind::Bind { recursive } => {
            let rec = if *recursive { OpenTreeFlags::AT_RECURSIVE } else { OpenTreeFlags::empty() };
            rustix::mount::open_tree(rustix::fs::CWD, &m.source, OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC | rec)?
        }
        MountKind::Tmpfs { options } => {
            let fs = rustix::mount::fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC)?;
            for (key, value) in options.split(',').filter_map(|o| o.split_once('=')) {
                rustix::mount::fsconfig_set_string(&fs, key, value)?;
            }
            rustix::mount::fsconfig_create(&fs)?;
            let attrs = MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV;
            rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)?
        }
    };
    if m.readonly {
        // Recursive: a read-only volume's submounts must not stay writable under it.
        set_readonly(&tree, true)?;
    }
    Ok(rustix::mount::move_mount(&tree, "", target, "", onto_fds)?)
}

/// Opens the mount point `dest` inside the rootfs `root`, one component at a time from the fd of
/// the one before, creating what is missing: directories, and a file (when `dir` is false) as
/// the last component. A symlink anywhere on the way is refused: the image, or a volume mounted
/// earlier, could point it at the host.
fn mount_point(root: &OwnedFd, dest: &Path, dir: bool) -> Result<OwnedFd> {
    let mut names = Vec::new();
    for part in dest.components() {
        match part {
            Component::Normal(name) => names.push(name),
            Component::RootDir | Component::CurDir => {}
            _ => bail!("mount destination {} leaves the rootfs", dest.display()),
        }
    }
    let mut at = root.try_clone().context("duplicating the rootfs fd")?;
    for (i, name) in names.iter().enumerate() {
        at = match open_or_create(&at, name, dir || i + 1 < names.len()) {
            Err(Errno::ELOOP) => bail!("mount destination {} goes through a symlink", dest.display()),
            opened => opened.with_context(|| format!("creating mount point {}", dest.display()))?,
        };
    }
    Ok(at)
}

/// An O_PATH fd of `name` in the directory `at`, made first (a directory, or an empty file) if it
/// is missing. The open refuses symlinks, so whatever got there first, it is not followed.
fn open_or_create(at: &OwnedFd, name: &OsStr, dir: bool) -> nix::Result<OwnedFd> {
    let how = || {
        let resolve = ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS;
        OpenHow::new().flags(OFlag::O_PATH | OFlag::O_CLOEXEC).resolve(resolve)
    };
    match openat2(at, name, how()) {
        Err(Errno::ENOENT) => {}
        opened => return opened,
    }
    let made = if dir {
        mkdirat(at, name, Mode::from_bits_truncate(0o755))
    } else {
        mknodat(at, name, SFlag::S_IFREG, Mode::from_bits_truncate(0o644), 0)
    };
    match made {
        Ok(()) | Err(Errno::EEXIST) => openat2(at, name, how()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    fn open_dir(path: &Path) -> OwnedFd {
        open(path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).unwrap()
    }

    /// The path an fd is open on.
    fn path_of(fd: &OwnedFd) -> PathBuf {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
    }

    #[test]
    fn missing_mount_points_are_created_inside_the_rootfs() {
        let root = tempfile::tempdir().unwrap();
        let fd = open_dir(root.path());
        let dir = mount_point(&fd, Path::new("/data/./x"), true).unwrap();
        assert_eq!(path_of(&dir), root.path().join("data/x"));
        assert!(root.path().join("data/x").is_dir());
        let file = mount_point(&fd, Path::new("/etc/conf"), false).unwrap();
        assert_eq!(path_of(&file), root.path().join("etc/conf"));
        assert!(root.path().join("etc/conf").is_file());
        // An existing one is opened as it is.
        assert_eq!(path_of(&mount_point(&fd, Path::new("/data"), true).unwrap()), root.path().join("data"));
        assert_eq!(path_of(&mount_point(&fd, Path::new("/"), true).unwrap()), root.path());
    }

    #[test]
    fn destinations_leaving_the_rootfs_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let err = mount_point(&open_dir(root.path()), Path::new("/data/../../etc"), true).unwrap_err();
        assert_eq!(err.to_string(), "mount destination /data/../../etc leaves the rootfs");
        assert!(!root.path().join("data").exists(), "nothing is created before the refusal");
    }

    /// Symlinks are refused on the way and as the mount point itself, even dangling ones and ones
    /// that point back inside, and nothing is made where they point.
    #[test]
    fn symlinks_on_the_way_are_refused_and_not_followed() {
        let (root, host) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        symlink(host.path(), root.path().join("out")).unwrap();
        symlink(host.path().join("missing"), root.path().join("dangling")).unwrap();
        symlink(".", root.path().join("here")).unwrap();
        let fd = open_dir(root.path());
        for (dest, dir) in [("/out/x", true), ("/out", true), ("/out/f", false), ("/dangling", false), ("/here/x", true)] {
            let err = mount_point(&fd, Path::new(dest), dir).unwrap_err();
            assert_eq!(err.to_string(), format!("mount destination {dest} goes through a symlink"));
        }
        assert_eq!(std::fs::read_dir(host.path()).unwrap().count(), 0, "something was made on the host");
        assert!(!root.path().join("x").exists());
    }

    #[test]
    fn a_file_on_the_way_is_not_a_directory() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("f"), "").unwrap();
        let err = mount_point(&open_dir(root.path()), Path::new("/f/x"), true).unwrap_err();
        assert_eq!(format!("{err:#}"), "creating mount point /f/x: ENOTDIR: Not a directory");
    }
}
