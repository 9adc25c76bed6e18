//! Gathers what the shim knows of a new container and asks [`crate::image::detect`] whether it
//! is wasm.
use crate::container::Launch;
use crate::image::detect::{self, Evidence, Kind};
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use oci_spec::runtime::Spec;
use std::io::Read;

pub fn classify(spec: &Spec, launch: &Launch) -> Kind {
    let head = entrypoint_head(launch);
    let entrypoint = launch.entrypoint.to_str();
    detect::classify(&Evidence {
        annotations: spec.annotations().as_ref(),
        entrypoint,
        entrypoint_head: head.as_deref(),
        image: None,
    })
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
