//! The build sandbox: the OCI runtime spec in which code that builds untrusted code runs, shared by
//! the execute service (runc through containerd) and `wasmedge-image build` (runc directly).
//!
//! A read-only root that holds the host's /usr (and /bin, /lib... as they are on the host), the
//! loader's cache and Debian's alternatives and nothing else of /etc; read-only toolchains; only
//! the directories the caller names writable; a private /tmp; no network (an empty network
//! namespace); root without any capability and with no_new_privs, so no more than the owner of
//! the toolchains' files; its own cgroup bounding memory and pids.

use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// The sandbox's user: root, whose prepared toolchains (0700 directories) it reads, without any
/// capability.
const BUILD_UID: u32 = 0;
const PIDS_LIMIT: i64 = 1024;

/// Host directories the toolchains live in, bound read-only at the same paths in the sandbox:
/// rustup's and cargo's homes, and the build helper's prepared runtimes.
#[derive(Clone, Debug)]
pub struct Toolchains {
    pub rustup_home: PathBuf,
    pub cargo_home: PathBuf,
    pub prepared: PathBuf,
}

impl Toolchains {
    /// Where rustup, cargo and `wasmedge-image toolchains` put them for this user.
    pub fn from_env() -> Toolchains {
        let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()));
        let var = |name: &str, default: PathBuf| std::env::var_os(name).filter(|v| !v.is_empty()).map_or(default, PathBuf::from);
        Toolchains {
            rustup_home: var("RUSTUP_HOME", home.join(".rustup")),
            cargo_home: var("CARGO_HOME", home.join(".cargo")),
            prepared: var("WASMEDGE_IMAGE_TOOLCHAINS", home.join(".cache/wasmedge-image/toolchains")),
        }
    }

    /// Read-only binds of those of `dirs` that exist, at their own paths.
    pub fn binds(dirs: &[&PathBuf]) -> Vec<(PathBuf, PathBuf)> {
        dirs.iter().filter(|d| d.exists()).map(|d| (d.to_path_buf(), d.to_path_buf())).collect()
    }

    /// The environment that finds them (PATH first).
    pub fn env(&self) -> Vec<String> {
        let mut env = vec![
            format!("PATH={}:/usr/local/bin:/usr/bin:/bin", self.cargo_home.join("bin").display()),
            format!("RUSTUP_HOME={}", self.rustup_home.display()),
            format!("CARGO_HOME={}", self.cargo_home.display()),
            format!("WASMEDGE_IMAGE_TOOLCHAINS={}", self.prepared.display()),
        ];
        if let Ok(toolchain) = std::env::var("RUSTUP_TOOLCHAIN") {
            env.push(format!("RUSTUP_TOOLCHAIN={toolchain}"));
        }
        env
    }
}

/// One command in the sandbox.
pub struct BuildSandbox {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: PathBuf,
    /// `(inside, host)`: bound read-only.
    pub read_only: Vec<(PathBuf, PathBuf)>,
    /// `(inside, host)`: bound read-write; the only places the command can write but /tmp.
    pub writable: Vec<(PathBuf, PathBuf)>,
    pub memory_bytes: u64,
    pub cgroups_path: String,
}

/// Makes `root` a sandbox root: empty mount points, and the host's /bin, /lib... symlinks.
/// `files`: file mount points (relative to `root`) a bind of a file needs.
pub fn prepare_root(root: &Path, files: &[&str]) -> Result<()> {
    for dir in ["usr", "etc", "proc", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(dir)).with_context(|| format!("creating {}", root.display()))?;
    }
    for top in ["bin", "lib", "lib64", "sbin"] {
        let host = Path::new("/").join(top);
        let inside = root.join(top);
        if let Ok(target) = std::fs::read_link(&host) {
            if std::fs::read_link(&inside).ok() != Some(target.clone()) {
                let _ = std::fs::remove_file(&inside);
                symlink(&target, &inside).with_context(|| format!("creating {}", inside.display()))?;
            }
        } else if host.is_dir() {
            std::fs::create_dir_all(&inside)?;
        }
    }
    for file in files {
        let path = root.join(file);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if !path.exists() {
            std::fs::write(&path, b"").with_context(|| format!("creating the mount point {}", path.display()))?;
        }
    }
    Ok(())
}

impl BuildSandbox {
    /// The runc spec of the command, on the root `root` (see [`prepare_root`]).
    pub fn spec(&self, root: &Path) -> Value {
        let bind = |inside: &Path, host: &Path, mode: &str| {
            json!({"destination": inside, "type": "bind", "source": host, "options": ["rbind", mode, "nosuid", "nodev"]})
        };
        let ro = |path: &Path| bind(path, path, "ro");
        let mut mounts = vec![
            json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
            json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
            json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "size=262144k"]}),
            ro(Path::new("/usr")),
        ];
        for top in ["bin", "lib", "lib64", "sbin"] {
            let host = Path::new("/").join(top);
            if host.is_dir() && std::fs::read_link(&host).is_err() {
                mounts.push(ro(&host));
            }
        }
        // The dynamic loader's cache (libraries under multiarch directories) and Debian's
        // alternatives (cc, c++...); nothing else of /etc.
        for file in ["/etc/ld.so.cache", "/etc/alternatives"] {
            if Path::new(file).exists() {
                mounts.push(ro(Path::new(file)));
            }
        }
        // Outer directories first, so that a bind inside another one is not hidden by it.
        let mut binds: Vec<_> = (self.writable.iter().map(|(i, h)| (i, h, "rw")))
            .chain(self.read_only.iter().map(|(i, h)| (i, h, "ro")))
            .collect();
        binds.sort_by_key(|(inside, _, _)| inside.components().count());
        mounts.extend(binds.into_iter().map(|(inside, host, mode)| bind(inside, host, mode)));
        json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": BUILD_UID, "gid": BUILD_UID},
                "args": self.args,
                "env": self.env,
                "cwd": self.cwd,
                "capabilities": {"bounding": [], "effective": [], "permitted": []},
                "noNewPrivileges": true,
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096u64, "soft": 4096u64}],
            },
            "root": {"path": root, "readonly": true},
            "hostname": "build",
            "mounts": mounts,
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}, {"type": "cgroup"}],
                "resources": {
                    "memory": {"limit": self.memory_bytes},
                    "pids": {"limit": PIDS_LIMIT},
                    "devices": [{"allow": false, "access": "rwm"}],
                },
                "cgroupsPath": self.cgroups_path,
                "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/sys/firmware"],
                "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_named_directories_are_writable_and_there_is_no_network_or_capability() {
        let sandbox = BuildSandbox {
            args: vec!["cargo".into()],
            env: vec![],
            cwd: "/src".into(),
            read_only: vec![("/src".into(), "/home/u/crate".into()), ("/cache".into(), "/home/u/.cache".into())],
            writable: vec![("/out".into(), "/var/tmp/out".into()), ("/cache/target".into(), "/home/u/.cache/target".into())],
            memory_bytes: 1 << 30,
            cgroups_path: "/x/y".into(),
        };
        let spec = sandbox.spec(Path::new("/root-dir"));
        let mounts = spec["mounts"].as_array().unwrap();
        let writable: Vec<_> = mounts
            .iter()
            .filter(|m| m["type"] == "bind" && m["options"].as_array().unwrap().contains(&json!("rw")))
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(writable, ["/out", "/cache/target"]);
        assert_eq!(spec["root"]["readonly"], true);
        assert!(spec["linux"]["namespaces"].as_array().unwrap().contains(&json!({"type": "network"})));
        assert_eq!(spec["process"]["capabilities"]["bounding"], json!([]));
        assert_eq!(spec["process"]["noNewPrivileges"], true);
        // A writable directory inside a read-only one is bound after it, so it stays visible.
        let position = |dest: &str| mounts.iter().position(|m| m["destination"] == dest).unwrap();
        assert!(position("/cache/target") > position("/cache"));
    }
}
