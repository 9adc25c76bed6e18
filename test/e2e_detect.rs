//! End-to-end tests of wasm detection from the image in containerd's content store: when the
//! annotations and the entrypoint's magic do not say wasm, the shim asks containerd what the
//! image says of itself, and for a CNCF wasm artifact it reads the module from the content
//! store. Needs containerd, ctr and root, like test/e2e.rs.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const NO_MAGIC_IMAGE: &str = "docker.io/library/no-magic-wasm:test";
const HELLO_AT_APP_IMAGE: &str = "docker.io/library/hello-at-app:test";
const ARTIFACT_IMAGE: &str = "docker.io/library/hello-artifact:test";
/// What the hello module prints without arguments.
const HELLO: &str = "Hello from WasmEdge!\n";
/// The annotation CRI names a container's image in (the shim's fallback when the container has
/// no image of its own, as with `ctr run --rootfs`).
const CRI_IMAGE_ANNOTATION: &str = "io.kubernetes.cri.image-name";

/// `wasmedge-image pack --module MODULE --tag TAG EXTRA...` into an OCI tarball.
fn pack_with(module: &Path, tag: &str, extra: &[&str]) -> PathBuf {
    let out_path = scratch_dir().join(format!("{}.tar", tag.rsplit('/').next().unwrap().replace(':', "-")));
    let mut cmd = Command::new(IMAGE_TOOL);
    cmd.arg("pack").arg("--module").arg(module).args(["--tag", tag]).arg("--out").arg(&out_path).args(extra);
    let out = exec_bounded(&mut cmd, None, Duration::from_secs(60));
    assert_eq!(out.code, 0, "wasmedge-image pack failed: {out:#?}");
    out_path
}

/// A "module" without the wasm magic at /app: neither its name nor its bytes say wasm, only the
/// image config (architecture wasm) does.
fn no_magic_image() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let module = scratch_dir().join("no-magic");
        fs::write(&module, b"this file has no wasm magic\n").unwrap();
        pack_with(&module, NO_MAGIC_IMAGE, &["--entrypoint", "/app"])
    })
}

/// The hello module at /app: its magic says wasm.
fn hello_at_app_image() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| pack_with(hello_wasm(), HELLO_AT_APP_IMAGE, &["--entrypoint", "/app"]))
}

/// The hello module as a CNCF wasm artifact: a wasm config and one application/wasm layer.
fn artifact_image() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| pack_with(hello_wasm(), ARTIFACT_IMAGE, &["--artifact"]))
}

/// The shim's log lines about container `id` in containerd's log.
fn shim_log(containerd: &Containerd, id: &str) -> Vec<String> {
    containerd.log().lines().filter(|l| l.contains(&format!("{id}: "))).map(str::to_string).collect()
}

/// `ctr run --rm` of a `--rootfs` directory: a container without an image of its own.
fn run_rootfs(containerd: &Containerd, rootfs: &Path, id: &str, opts: &[&str], args: &[&str]) -> Out {
    let mut cmd = containerd.ctr_command(&["run", "--rm", "--runtime", RUNTIME]);
    cmd.args(opts).arg("--rootfs").arg(rootfs).arg(id).args(args);
    exec_bounded(&mut cmd, Some(""), CTR_TIMEOUT)
}

#[test]
fn image_config_architecture_makes_a_container_wasm() {
    let containerd = Containerd::start();
    containerd.import(no_magic_image());
    let id = unique_id("no-magic");
    let out = containerd.run_image(&id, NO_MAGIC_IMAGE, &[], &[], None);
    // WasmEdge got the file, so the shim took it for wasm (runc would have tried to exec it).
    assert_eq!(out.code, 126, "{out:#?}");
    assert!(out.stderr.contains("cannot load module"), "{out:#?}");
    let log = shim_log(&containerd, &id).join("\n");
    assert!(log.contains(&format!("image {NO_MAGIC_IMAGE}: architecture wasm,")), "no lookup logged:\n{log}");
    assert!(log.contains("wasm container: the image's architecture is wasm"), "{log}");
    containerd.assert_no_leftovers(&id);
}

#[test]
fn wasm_magic_needs_no_lookup() {
    let containerd = Containerd::start();
    containerd.import(hello_at_app_image());
    let id = unique_id("magic");
    let out = containerd.run_image(&id, HELLO_AT_APP_IMAGE, &[], &[], None);
    assert_eq!((out.code, out.stdout.as_str()), (0, HELLO), "{out:#?}");
    let log = shim_log(&containerd, &id).join("\n");
    assert!(log.contains("wasm container: the entrypoint starts with the wasm magic"), "{log}");
    assert!(!log.contains(&format!("image {HELLO_AT_APP_IMAGE}")), "containerd was asked on the normal path:\n{log}");
}

#[test]
fn cncf_artifact_runs_its_module_from_the_content_store() {
    let containerd = Containerd::start();
    // containerd 2.1 imports the artifact (there is nothing for it to unpack) ...
    containerd.import(artifact_image());
    let images = containerd.ctr_ok(&["image", "ls", "-q"]);
    assert!(images.lines().any(|l| l == ARTIFACT_IMAGE), "{images}");

    // ... but ctr's image path refuses a config that is not an image config, before any shim.
    let mut cmd = containerd.run_command(&unique_id("artifact-ctr"), ARTIFACT_IMAGE, &["--rm"], &[]);
    let refused = exec_bounded(cmd.arg(ENTRYPOINT), Some(""), CTR_TIMEOUT);
    if refused.code != 0 {
        assert!(refused.stderr.contains("unknown image config media type"), "{refused:#?}");
    } else {
        assert_eq!(refused.stdout, HELLO, "{refused:#?}"); // a containerd that runs it must run it right
    }

    // CRI's way: the container names its image in an annotation. The rootfs is empty; the shim
    // reads the module from the artifact's layer and puts it at the entrypoint.
    let rootfs = containerd.dir.path().join("artifact-rootfs");
    fs::create_dir_all(&rootfs).unwrap();
    let id = unique_id("artifact");
    let annotation = format!("{CRI_IMAGE_ANNOTATION}={ARTIFACT_IMAGE}");
    let out = run_rootfs(&containerd, &rootfs, &id, &["--annotation", &annotation], &[ENTRYPOINT]);
    assert_eq!((out.code, out.stdout.as_str()), (0, HELLO), "{out:#?}");
    assert_eq!(fs::read(rootfs.join("app.wasm")).unwrap(), fs::read(hello_wasm()).unwrap());
    let log = shim_log(&containerd, &id).join("\n");
    assert!(log.contains("wrote the module of wasm layer sha256:"), "{log}");
    assert!(log.contains("wasm container: the image has a wasm layer") || log.contains("architecture is wasm"), "{log}");
    containerd.assert_no_leftovers(&id);
}

#[test]
fn failed_lookup_does_not_fail_create() {
    let containerd = Containerd::start();
    let rootfs = containerd.dir.path().join("busybox-rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("/bin/busybox (busybox-static) is needed");
    let id = unique_id("no-such-image");
    let annotation = format!("{CRI_IMAGE_ANNOTATION}=docker.io/library/no-such-image:test");
    let out = run_rootfs(&containerd, &rootfs, &id, &["--annotation", &annotation], &["/bin/busybox", "echo", "hi"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "hi\n"), "{out:#?}");
    let log = shim_log(&containerd, &id).join("\n");
    assert!(log.contains("classifying without the image's facts"), "{log}");
    containerd.assert_no_leftovers(&id);
}
