//! The install path on scratch files: `deploy/containerd-config.sh` adds the runtime entry to
//! containerd configs of version 2 and 3 (and to none at all) idempotently, containerd itself
//! reads the result, and `remove` gives back the original bytes; `make install`/`uninstall`
//! with a scratch PREFIX and config; the manifests under deploy/ parse as Kubernetes objects.
//! Needs containerd and kubectl (the dev root has them).

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn config_script(action: &str, config: &Path) -> Out {
    let mut cmd = Command::new(repo().join("deploy/containerd-config.sh"));
    cmd.arg(action).arg(config);
    let out = exec_bounded(&mut cmd, None, Duration::from_secs(30));
    assert_eq!(out.code, 0, "containerd-config.sh {action} failed: {out:#?}");
    out
}

/// containerd's own view of a config file: `containerd config dump` (version 2 is migrated).
fn containerd_dump(config: &Path) -> String {
    let out = exec_bounded(Command::new("containerd").arg("--config").arg(config).args(["config", "dump"]), None, Duration::from_secs(30));
    assert_eq!(out.code, 0, "containerd cannot read {}: {out:#?}", config.display());
    out.stdout
}

fn backups(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).filter(|p| p.to_string_lossy().contains(".bak-wasmedge-")).collect()
}

fn assert_runtime_entry(dump: &str) {
    let at = dump.find("runtimes.wasmedge]").unwrap_or_else(|| panic!("no wasmedge runtime in:\n{dump}"));
    let entry = &dump[at..];
    let entry = &entry[..entry[1..].find("\n  [").map_or(entry.len(), |e| e + 1)];
    assert!(entry.contains("runtime_type = 'io.containerd.wasmedge.v1'") || entry.contains("runtime_type = \"io.containerd.wasmedge.v1\""), "{entry}");
}

const V3: &str = r#"version = 3
root = "/var/lib/containerd"

[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = "runc"
"#;

const V2: &str = r#"version = 2

[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
  snapshotter = "overlayfs"
"#;

#[test]
fn runtime_entry_is_added_once_read_by_containerd_and_removed_cleanly() {
    for (name, original) in [("v3", V3), ("v2", V2)] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        fs::write(&config, original).unwrap();

        let out = config_script("add", &config);
        assert!(out.stdout.contains("added"), "{name}: {out:#?}");
        let added = fs::read_to_string(&config).unwrap();
        assert!(added.starts_with(original), "{name}: the old content changed:\n{added}");
        assert_eq!(backups(dir.path()).len(), 1, "{name}: no backup");
        assert_eq!(fs::read_to_string(&backups(dir.path())[0]).unwrap(), original);
        assert_runtime_entry(&containerd_dump(&config));

        // Idempotent: a second add changes nothing and makes no backup.
        let out = config_script("add", &config);
        assert!(out.stdout.contains("already"), "{name}: {out:#?}");
        assert_eq!(fs::read_to_string(&config).unwrap(), added, "{name}");
        assert_eq!(backups(dir.path()).len(), 1, "{name}");

        config_script("remove", &config);
        assert_eq!(fs::read_to_string(&config).unwrap(), original, "{name}: remove did not restore the file");
        assert!(!containerd_dump(&config).contains("io.containerd.wasmedge.v1"), "{name}");
        let out = config_script("remove", &config);
        assert!(out.stdout.contains("no wasmedge runtime entry"), "{name}: {out:#?}");
    }
}

#[test]
fn a_missing_config_becomes_a_version_3_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("etc/containerd/config.toml");
    config_script("add", &config);
    let text = fs::read_to_string(&config).unwrap();
    assert!(text.starts_with("version = 3\n"), "{text}");
    assert_runtime_entry(&containerd_dump(&config));
    assert!(backups(config.parent().unwrap()).is_empty(), "a backup of nothing");
}

#[test]
fn make_install_and_uninstall_on_a_scratch_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let (prefix, config) = (dir.path().join("usr"), dir.path().join("config.toml"));
    fs::write(&config, V3).unwrap();
    // `build` is up to date (cargo built the binaries for this test); make must not rebuild
    // through cargo while cargo runs us, so the install recipe is run with build satisfied.
    let make = |target: &str| {
        let mut cmd = Command::new("make");
        cmd.current_dir(repo())
            .args(["-o", "build", "-o", "devroot", "-o", "toolchain", target])
            .arg(format!("PREFIX={}", prefix.display()))
            .arg(format!("CONTAINERD_CONFIG={}", config.display()))
            .env("IN_DEVROOT", "1");
        let out = exec_bounded(&mut cmd, None, Duration::from_secs(60));
        assert_eq!(out.code, 0, "make {target} failed: {out:#?}");
    };
    make("install");
    for bin in ["containerd-shim-wasmedge-v1", "containerd-wasmedge-init", "wasmedge-image"] {
        assert!(prefix.join("bin").join(bin).is_file(), "{bin} not installed");
    }
    assert_runtime_entry(&containerd_dump(&config));
    make("install");
    assert_eq!(backups(dir.path()).len(), 1, "a second make install changed the config again");
    make("uninstall");
    assert_eq!(fs::read_dir(prefix.join("bin")).unwrap().count(), 0, "binaries left after uninstall");
    assert_eq!(fs::read_to_string(&config).unwrap(), V3);
}

#[test]
fn deploy_manifests_parse_as_kubernetes_objects() {
    // No cluster here: `kubectl ... --local` maps and parses the objects without a server
    // (`kubectl apply --dry-run=server -f deploy/` is the check against a cluster).
    let mut cmd = Command::new("kubectl");
    cmd.args(["label", "--local", "--dry-run=client", "-o", "name", "check=ok", "-f"]).arg(repo().join("deploy"));
    let out = exec_bounded(&mut cmd, None, Duration::from_secs(60));
    assert_eq!(out.code, 0, "kubectl cannot read deploy/: {out:#?}");
    let mut objects: Vec<&str> = out.stdout.lines().collect();
    objects.sort();
    assert_eq!(
        objects,
        [
            "daemonset.apps/node-installer",
            "deployment.apps/hello-wasm",
            "namespace/containerd-shim-wasmedge",
            "runtimeclass.node.k8s.io/wasmedge"
        ],
        "{out:#?}"
    );
    // Typed checks kubectl makes offline: the Deployment's container names exist.
    let mut cmd = Command::new("kubectl");
    cmd.args(["set", "image", "--local", "-o", "yaml", "hello=x", "sidecar=y", "-f"]).arg(repo().join("deploy/example-deployment.yaml"));
    let out = exec_bounded(&mut cmd, None, Duration::from_secs(60));
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stdout.contains("runtimeClassName: wasmedge"), "{}", out.stdout);
}
