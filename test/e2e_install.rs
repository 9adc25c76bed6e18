//! The one install path, `install.sh` from the real release tarball (make test makes it first),
//! on scratch prefixes and configs: files, links, the runtime entry in configs of version 2 and 3
//! (and in none at all) that containerd itself reads, idempotence, backups, `--uninstall` giving
//! back the original bytes, its refusals; `make install`/`uninstall`; the manifests under deploy/
//! parse as Kubernetes objects. Needs containerd and kubectl (the dev root has them).

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BINARIES: [&str; 4] = ["containerd-shim-wasmedge-v1", "containerd-wasmedge-init", "wasmedge-image", "wasmedge-sandbox"];
const UNIT: &str = "wasmedge-sandbox.service";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch machine: the unpacked tarball, a prefix, a bindir and a config path.
struct Scratch {
    _dir: tempfile::TempDir,
    release: PathBuf,
    prefix: PathBuf,
    bindir: PathBuf,
    config: PathBuf,
    unitdir: PathBuf,
}

fn scratch() -> Scratch {
    let dir = tempfile::tempdir().unwrap();
    let out = exec_bounded(Command::new("tar").arg("-xzf").arg(dist_tarball()).arg("-C").arg(dir.path()), None, Duration::from_secs(60));
    assert_eq!(out.code, 0, "{out:#?}");
    Scratch {
        release: dir.path().join(dist_name()),
        prefix: dir.path().join("opt/containerd-shim-wasmedge"),
        bindir: dir.path().join("usr/local/bin"),
        config: dir.path().join("etc/containerd/config.toml"),
        unitdir: dir.path().join("etc/systemd/system"),
        _dir: dir,
    }
}

impl Scratch {
    fn install_cmd(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(self.release.join("install.sh"));
        cmd.arg("--prefix").arg(&self.prefix).arg("--bindir").arg(&self.bindir).arg("--config").arg(&self.config);
        cmd.arg("--unitdir").arg(&self.unitdir).args(extra);
        cmd
    }

    fn install(&self, extra: &[&str]) -> Out {
        let out = exec_bounded(&mut self.install_cmd(extra), None, Duration::from_secs(60));
        assert_eq!(out.code, 0, "install.sh {extra:?} failed: {out:#?}");
        out
    }
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
fn install_links_the_binaries_adds_the_entry_once_and_uninstall_restores_the_config() {
    for (name, original) in [("v3", V3), ("v2", V2)] {
        let s = scratch();
        let etc = s.config.parent().unwrap();
        fs::create_dir_all(etc).unwrap();
        fs::write(&s.config, original).unwrap();

        let out = s.install(&[]);
        assert!(out.stdout.contains("added runtime handler"), "{name}: {out:#?}");
        for bin in BINARIES {
            let link = s.bindir.join(bin);
            assert_eq!(fs::read_link(&link).unwrap(), s.prefix.join("bin").join(bin), "{name}");
        }
        let libs: Vec<String> = fs::read_dir(s.prefix.join("lib")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
        assert!(libs.iter().any(|l| l.starts_with("libwasmedge.so")), "{name}: {libs:?}");
        // The shim through its link, and the runner as the shim runs it (through the bundled
        // loader, since this prefix is not the default one).
        let out = exec_bounded(&mut Command::new(s.bindir.join("containerd-shim-wasmedge-v1")).arg("--version"), None, Duration::from_secs(30));
        assert!(out.stdout.starts_with("containerd-shim-wasmedge-v1 "), "{out:#?}");
        let out = exec_bounded(Command::new(s.prefix.join("lib/ld-linux-x86-64.so.2")).arg(s.prefix.join("bin/containerd-wasmedge-init")).arg("--version"), None, Duration::from_secs(30));
        assert!(out.stdout.contains("WasmEdge: 0.17"), "{out:#?}");

        let added = fs::read_to_string(&s.config).unwrap();
        assert!(added.starts_with(original), "{name}: the old content changed:\n{added}");
        assert_eq!(backups(etc).len(), 1, "{name}: no backup");
        assert_eq!(fs::read_to_string(&backups(etc)[0]).unwrap(), original);
        let dump = containerd_dump(&s.config);
        assert_runtime_entry(&dump);
        // containerd 1.x takes a version 2 file's runtimes instead of its defaults: runc stays.
        assert!(dump.contains("runtimes.runc]"), "{name}: no runc runtime:\n{dump}");

        // Idempotent: a second install changes no config and makes no backup.
        let out = s.install(&[]);
        assert!(out.stdout.contains("already"), "{name}: {out:#?}");
        assert_eq!(fs::read_to_string(&s.config).unwrap(), added, "{name}");
        assert_eq!(backups(etc).len(), 1, "{name}");

        let out = s.install(&["--uninstall"]);
        assert!(out.stdout.contains("removed runtime handler"), "{name}: {out:#?}");
        assert_eq!(fs::read_to_string(&s.config).unwrap(), original, "{name}: uninstall did not restore the file");
        assert!(!containerd_dump(&s.config).contains("io.containerd.wasmedge.v1"), "{name}");
        assert!(!s.prefix.exists(), "{name}: the prefix is left");
        assert_eq!(fs::read_dir(&s.bindir).unwrap().count(), 0, "{name}: links left");
        let out = s.install(&["--uninstall"]);
        assert!(out.stdout.contains("no wasmedge runtime entry"), "{name}: {out:#?}");
    }
}

#[test]
fn a_missing_config_takes_the_installed_containerds_version() {
    let s = scratch();
    s.install(&[]);
    let text = fs::read_to_string(&s.config).unwrap();
    let containerd = exec_bounded(Command::new("containerd").arg("--version"), None, Duration::from_secs(30)).stdout;
    let want = if containerd.split_whitespace().any(|w| w.trim_start_matches('v').starts_with("1.")) { 2 } else { 3 };
    assert!(text.starts_with(&format!("version = {want}\n")), "{containerd}: {text}");
    assert_runtime_entry(&containerd_dump(&s.config));
    assert!(backups(s.config.parent().unwrap()).is_empty(), "a backup of nothing");
}

/// A directory of links to the given tools, to run install.sh with a PATH that lacks others.
fn path_of(dir: &Path, tools: &[&str]) -> PathBuf {
    let bin = dir.join("path");
    fs::create_dir_all(&bin).unwrap();
    for tool in tools {
        let real = exec_bounded(Command::new("sh").args(["-c", &format!("command -v {tool}")]), None, Duration::from_secs(5)).stdout;
        std::os::unix::fs::symlink(real.trim(), bin.join(tool)).unwrap();
    }
    bin
}

#[test]
fn install_refuses_non_root_other_architectures_and_nodes_without_containerd() {
    let s = scratch();
    let refused = |cmd: &mut Command, why: &str| {
        let out = exec_bounded(cmd, None, Duration::from_secs(30));
        assert_eq!(out.code, 1, "{why}: {out:#?}");
        assert_eq!(out.stderr.lines().count(), 1, "{why}: not one line: {out:#?}");
        assert!(out.stderr.contains(why), "{why}: {out:#?}");
        assert!(!s.prefix.exists() && !s.config.exists(), "{why}: it wrote something");
    };
    let mut as_nobody = Command::new("setpriv");
    as_nobody.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(s.release.join("install.sh"));
    refused(&mut as_nobody, "must run as root");

    let tools = path_of(s.prefix.parent().unwrap().parent().unwrap(), &["dirname", "id", "uname"]);
    refused(s.install_cmd(&[]).env("PATH", &tools), "containerd is not installed");
    // An arm64 machine, as uname tells it.
    let arm = tools.with_file_name("arm");
    fs::create_dir_all(&arm).unwrap();
    fs::write(arm.join("uname"), "#!/bin/sh\necho aarch64\n").unwrap();
    fs::set_permissions(arm.join("uname"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    refused(s.install_cmd(&[]).env("PATH", format!("{}:{}", arm.display(), std::env::var("PATH").unwrap())), "this release is for x86_64; this machine is aarch64");
    refused(&mut s.install_cmd(&["--prefix", "relative"]), "--prefix must be an absolute path");
}

#[test]
fn make_install_and_uninstall_on_a_scratch_prefix() {
    let s = scratch();
    fs::create_dir_all(s.config.parent().unwrap()).unwrap();
    fs::write(&s.config, V3).unwrap();
    // The tarball is up to date (make test made it); make must not rebuild through cargo while
    // cargo runs us, so the recipes run with dist satisfied.
    let make = |target: &str| {
        let mut cmd = Command::new("make");
        cmd.current_dir(repo())
            .args(["-o", "dist", "-o", "build", "-o", "devroot", "-o", "toolchain", target])
            .arg(format!("PREFIX={}", s.prefix.display()))
            .arg(format!("BINDIR={}", s.bindir.display()))
            .arg(format!("CONTAINERD_CONFIG={}", s.config.display()))
            .arg(format!("UNITDIR={}", s.unitdir.display()))
            .env("IN_DEVROOT", "1");
        let out = exec_bounded(&mut cmd, None, Duration::from_secs(60));
        assert_eq!(out.code, 0, "make {target} failed: {out:#?}");
    };
    make("install");
    for bin in BINARIES {
        assert!(s.prefix.join("bin").join(bin).is_file(), "{bin} not installed");
        assert!(s.bindir.join(bin).is_symlink(), "{bin} not linked");
    }
    assert_runtime_entry(&containerd_dump(&s.config));
    // The service's unit, running it through the bindir's link.
    let unit = fs::read_to_string(s.unitdir.join(UNIT)).expect("make install installs the unit");
    let exec = format!("ExecStart={}/wasmedge-sandbox serve ", s.bindir.display());
    assert!(unit.lines().any(|l| l.starts_with(&exec)), "{unit}");
    make("install");
    assert_eq!(backups(s.config.parent().unwrap()).len(), 1, "a second make install changed the config again");
    make("uninstall");
    assert!(!s.prefix.exists(), "the prefix is left after uninstall");
    assert!(!s.unitdir.join(UNIT).exists(), "the unit is left after uninstall");
    assert_eq!(fs::read_to_string(&s.config).unwrap(), V3);
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
            "daemonset.apps/wasmedge-sandbox",
            "deployment.apps/hello-wasm",
            "namespace/containerd-shim-wasmedge",
            "runtimeclass.node.k8s.io/wasmedge",
            "secret/wasmedge-sandbox-keys",
            "service/wasmedge-sandbox"
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
