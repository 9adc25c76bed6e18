//! Gathers what the shim knows of a new container and asks [`crate::image::detect`] whether it
//! is wasm.
use crate::launch::Launch;
use crate::image::content::{self, CRI_IMAGE_ANNOTATION};
use crate::image::detect::{self, Evidence, ImageFacts, Kind};
use anyhow::{bail, Context, Result};
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{mkdirat, Mode};
use oci_spec::runtime::Spec;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

/// Where containerd's gRPC API is (the shim's `-address`) and the namespace of the container.
pub struct ContainerdApi<'a> {
    pub address: &'a str,
    pub namespace: &'a str,
}

/// The cheap rules (annotations, the entrypoint's magic) first. Only when they do not say wasm,
/// or the entrypoint is not in the rootfs, does the shim ask containerd what the image says of
/// itself. A wasm artifact image has its module as a layer containerd does not unpack: then the
/// module is read from the content store and written into the rootfs at the entrypoint path, so
/// the container's init finds it like any other.
pub fn container_kind(spec: &Spec, launch: &Launch, containerd: &ContainerdApi) -> Kind {
    let head = entrypoint_head(launch);
    let annotations = spec.annotations().as_ref();
    let evidence = Evidence {
        annotations,
        entrypoint: launch.entrypoint.to_str(),
        entrypoint_head: head.as_deref(),
        image: None,
    };
    let cheap = detect::classify(&evidence);
    if matches!(cheap, Kind::Wasm(_)) && head.is_some() {
        return cheap;
    }
    let (client, facts) = match image_facts(containerd, &launch.id, annotations) {
        Ok(Some(found)) => found,
        Ok(None) => {
            log::debug!("{}: no image to look up (a rootfs of its own)", launch.id);
            return cheap;
        }
        Err(e) => {
            log::warn!("{}: classifying without the image's facts: {e:#}", launch.id);
            return cheap;
        }
    };
    if let (None, Some(digest)) = (&head, &facts.wasm_layer) {
        match provide_module(&client, launch, digest) {
            Ok(size) => log::info!(
                "{}: wrote the module of wasm layer {digest} ({size} bytes) to {}",
                launch.id,
                launch.entrypoint.display()
            ),
            Err(e) => log::warn!("{}: cannot put wasm layer {digest} in the rootfs: {e:#}", launch.id),
        }
    }
    detect::classify(&Evidence { image: Some(&facts), ..evidence })
}

/// The image's facts from containerd, `None` for a container without an image. The image is the
/// container's; a Kubernetes container has none of its own, and CRI names it in an annotation.
fn image_facts(
    containerd: &ContainerdApi,
    id: &str,
    annotations: Option<&HashMap<String, String>>,
) -> Result<Option<(content::Containerd, ImageFacts)>> {
    let client = content::Containerd::connect(containerd.address, containerd.namespace)?;
    let mut image = client.container_image(id)?;
    if image.is_empty() {
        image = annotations.and_then(|a| a.get(CRI_IMAGE_ANNOTATION)).cloned().unwrap_or_default();
    }
    if image.is_empty() {
        return Ok(None);
    }
    let facts = client.image_facts(&image)?;
    log::info!(
        "{id}: image {image}: architecture {}, layers {}",
        facts.architecture,
        facts.layer_media_types.join(", ")
    );
    Ok(Some((client, facts)))
}

/// The entrypoint's first bytes, resolved inside the rootfs: a symlink in the image cannot make
/// the shim read a host file.
fn entrypoint_head(launch: &Launch) -> Option<Vec<u8>> {
    let root = std::fs::File::open(&launch.rootfs).ok()?;
    let how = OpenHow::new().flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC).mode(Mode::empty()).resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let path = launch.entrypoint.strip_prefix("/").unwrap_or(&launch.entrypoint);
    let fd = openat2(&root, path, how).ok()?;
    let mut head = Vec::with_capacity(detect::WASM_MAGIC.len());
    std::fs::File::from(fd).take(detect::WASM_MAGIC.len() as u64).read_to_end(&mut head).ok()?;
    Some(head)
}

/// Reads blob `digest` from containerd and writes it to the entrypoint path in the rootfs.
fn provide_module(client: &content::Containerd, launch: &Launch, digest: &str) -> Result<usize> {
    let module = client.read_blob(digest)?;
    write_in_root(&launch.rootfs, &launch.entrypoint, &module)
        .with_context(|| format!("writing {}", launch.entrypoint.display()))?;
    Ok(module.len())
}

/// Creates `path` (absolute, inside the container) under `root` with `data`, and its missing
/// parent directories. Nothing is followed out of the rootfs and nothing existing is replaced:
/// each directory is opened with `O_NOFOLLOW`, the file is created with `O_EXCL`.
fn write_in_root(root: &Path, path: &Path, data: &[u8]) -> Result<()> {
    let mut names = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => names.push(name),
            _ => bail!("{} is not a plain path", path.display()),
        }
    }
    let Some(file) = names.pop() else { bail!("{} names no file", path.display()) };
    let dir_flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dir: OwnedFd = openat(nix::fcntl::AT_FDCWD, root, dir_flags, Mode::empty())?;
    for name in names {
        match mkdirat(&dir, name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(e).with_context(|| format!("creating directory {name:?}")),
        }
        dir = openat(&dir, name, dir_flags, Mode::empty()).with_context(|| format!("opening directory {name:?}"))?;
    }
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(&dir, file, flags, Mode::from_bits_truncate(0o755))?;
    let mut out = std::fs::File::from(fd);
    out.write_all(data)?;
    out.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_is_written_with_its_parents() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("app")).unwrap();
        write_in_root(root.path(), Path::new("/app/bin/./x.wasm"), b"\0asm").unwrap();
        assert_eq!(std::fs::read(root.path().join("app/bin/x.wasm")).unwrap(), b"\0asm");
        // Nothing existing is replaced.
        assert!(write_in_root(root.path(), Path::new("/app/bin/x.wasm"), b"other").is_err());
        assert_eq!(std::fs::read(root.path().join("app/bin/x.wasm")).unwrap(), b"\0asm");
    }

    #[test]
    fn module_is_never_written_outside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("f.wasm"), root.path().join("link.wasm")).unwrap();
        assert!(write_in_root(root.path(), Path::new("/escape/x.wasm"), b"x").is_err());
        assert!(write_in_root(root.path(), Path::new("/link.wasm"), b"x").is_err());
        assert!(write_in_root(root.path(), Path::new("/../x.wasm"), b"x").is_err());
        assert!(write_in_root(root.path(), Path::new("/"), b"x").is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
