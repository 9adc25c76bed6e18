//! The rootfs mounts containerd hands over in `Task.Create`, mounted onto the bundle's rootfs.
use super::idmap;
use anyhow::{bail, Context, Result};
use containerd_shim::protos::api::Mount;
use nix::mount::{umount2, MntFlags};
use std::path::Path;

/// Mounts each of containerd's rootfs mounts (usually one overlay) at `target`, in order.
/// Returns whether anything was mounted, so delete knows whether to unmount.
pub fn mount(mounts: &[Mount], target: &Path) -> Result<bool> {
    for m in mounts {
        std::fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
        if let Some(map) = idmap::from_options(&m.options).context("the rootfs mount's ID mappings")? {
            if m.type_ != "overlay" {
                bail!("an idmapped {} rootfs mount: the shim idmaps overlay layers only", m.type_);
            }
            let scratch = target.with_file_name("rootfs-idmapped-layers");
            idmap::mount_overlay(&m.options, &map, target, &scratch)?;
            continue;
        }
        containerd_shim::mount::mount_rootfs(Some(&m.type_), Some(&m.source), &m.options, target)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("mounting {} rootfs {} at {}", m.type_, m.source, target.display()))?;
    }
    Ok(!mounts.is_empty())
}

/// Detaches the rootfs mount; a rootfs that is not mounted any more is fine.
pub fn unmount(target: &Path) -> Result<()> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("unmounting {}", target.display())),
    }
}
