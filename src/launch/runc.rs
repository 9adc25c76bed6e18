//! Plain Linux containers (a pod's pause container, a sidecar) are delegated to runc: the shim
//! runs `runc create/start/kill/exec/delete` with a runc root inside the bundle. The container's
//! init is reparented to the shim, a subreaper, so its exit reaches the shim like a wasm
//! container's does.
//!
//! runc is a child of the shim, whose reaper collects every exit: a runc command's status is
//! therefore read from the reaper's monitor, not from `wait`.
use super::stdio::Stdio;
use anyhow::{anyhow, bail, Context, Result};
use containerd_shim::monitor::{monitor_subscribe, wait_pid, Topic};
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as ProcessStdio};

/// The runc binary: `WASMEDGE_SHIM_RUNC` when set, else `runc` from containerd's PATH.
fn runc_binary() -> OsString {
    std::env::var_os("WASMEDGE_SHIM_RUNC").unwrap_or_else(|| "runc".into())
}

/// One Linux container, as runc knows it.
#[derive(Debug, Clone)]
pub struct Runc {
    pub id: String,
    pub bundle: PathBuf,
    /// runc's state directory: `<bundle>/runc`, gone with the bundle.
    pub root: PathBuf,
    systemd_cgroup: bool,
}

/// What to give a runc command as stdio: the container's, or nothing (output is captured).
enum Io<'a> {
    Container(&'a Stdio),
    Captured,
}

impl Runc {
    /// `systemd_cgroup`: the spec's cgroupsPath is systemd's `slice:prefix:name`, which runc's
    /// systemd driver takes.
    pub fn new(id: &str, bundle: &Path, systemd_cgroup: bool) -> Runc {
        Runc { id: id.to_string(), bundle: bundle.to_path_buf(), root: bundle.join("runc"), systemd_cgroup }
    }

    fn log_path(&self) -> PathBuf {
        self.bundle.join("runc-log.json")
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(runc_binary());
        cmd.arg("--root").arg(&self.root).arg("--log").arg(self.log_path()).args(["--log-format", "json"]);
        if self.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        cmd
    }

    /// `runc create`: the container's init exists (and waits for start); returns its pid.
    pub fn create(&self, stdio: &Stdio) -> Result<i32> {
        let pid_file = self.bundle.join("init.pid");
        let mut cmd = self.command();
        cmd.arg("create").arg("--bundle").arg(&self.bundle).arg("--pid-file").arg(&pid_file).arg(&self.id);
        self.run(cmd, Io::Container(stdio)).context("runc create")?;
        read_pid(&pid_file)
    }

    pub fn start(&self) -> Result<()> {
        let mut cmd = self.command();
        cmd.arg("start").arg(&self.id);
        self.run(cmd, Io::Captured).context("runc start").map(drop)
    }

    /// Signals the container's init, or with `all` every process of the container.
    pub fn kill(&self, signal: u32, all: bool) -> Result<()> {
        let mut cmd = self.command();
        cmd.arg("kill");
        if all {
            cmd.arg("--all");
        }
        cmd.arg(&self.id).arg(signal.to_string());
        self.run(cmd, Io::Captured).context("runc kill").map(drop)
    }

    /// Starts the process described by `process_json` (an OCI process) in the running container;
    /// returns its pid.
    pub fn exec(&self, exec_id: &str, process_json: &[u8], stdio: &Stdio) -> Result<i32> {
        let spec = self.bundle.join(format!("exec-{exec_id}.json"));
        let pid_file = self.bundle.join(format!("exec-{exec_id}.pid"));
        std::fs::write(&spec, process_json).with_context(|| format!("writing {}", spec.display()))?;
        let mut cmd = self.command();
        cmd.arg("exec").arg("--detach").arg("--process").arg(&spec).arg("--pid-file").arg(&pid_file).arg(&self.id);
        let result = self.run(cmd, Io::Container(stdio)).context("runc exec").and_then(|_| read_pid(&pid_file));
        let _ = std::fs::remove_file(&spec);
        let _ = std::fs::remove_file(&pid_file);
        result
    }

    /// The pids of the container's processes.
    pub fn ps(&self) -> Result<Vec<i32>> {
        let mut cmd = self.command();
        cmd.args(["ps", "--format", "json"]).arg(&self.id);
        let out = self.run(cmd, Io::Captured).context("runc ps")?;
        let pids: Option<Vec<i32>> = serde_json::from_slice(&out).context("runc ps output")?;
        Ok(pids.unwrap_or_default())
    }

    /// `runc delete --force`: kills what is left, removes the cgroup and runc's state.
    pub fn delete(&self) -> Result<()> {
        if !self.root.join(&self.id).exists() {
            return Ok(());
        }
        let mut cmd = self.command();
        cmd.args(["delete", "--force"]).arg(&self.id);
        self.run(cmd, Io::Captured).context("runc delete").map(drop)
    }

    /// The same, from a process that is not the shim (containerd's `delete` command): no reaper
    /// runs there, so the status is waited for directly.
    pub fn delete_unsupervised(&self) -> Result<()> {
        if !self.root.join(&self.id).exists() {
            return Ok(());
        }
        let mut cmd = self.command();
        cmd.args(["delete", "--force"]).arg(&self.id);
        let out = cmd.stdin(ProcessStdio::null()).output().context("running runc delete")?;
        if !out.status.success() {
            bail!("runc delete: {}", self.failure(&out.stderr));
        }
        Ok(())
    }

    /// Runs one runc command and returns its stdout (empty when stdio is the container's).
    fn run(&self, mut cmd: Command, io: Io) -> Result<Vec<u8>> {
        match io {
            Io::Container(stdio) => {
                cmd.stdin(stdio.stdin.try_clone()?).stdout(stdio.stdout.try_clone()?).stderr(stdio.stderr.try_clone()?);
            }
            Io::Captured => {
                cmd.stdin(ProcessStdio::null()).stdout(ProcessStdio::piped()).stderr(ProcessStdio::piped());
            }
        }
        // Subscribed before the spawn, so the exit cannot be missed.
        let exits = monitor_subscribe(Topic::Pid).map_err(|e| anyhow!("{e}"))?;
        let mut child = cmd.spawn().with_context(|| format!("starting {:?}", runc_binary()))?;
        drop(cmd); // closes the parent's copies of the container's stdio
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                bytes
            })
        };
        let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
        let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
        let status = wait_pid(child.id() as i32, exits);
        let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
        if status != 0 {
            bail!("exit status {status}: {}", self.failure(&stderr));
        }
        Ok(stdout)
    }

    /// runc's reason for a failure: the last error of its JSON log, else what it printed.
    fn failure(&self, stderr: &[u8]) -> String {
        // runc's log outlives one command: its last errors are this failure's (nsexec's own
        // first, then runc's summary).
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let errors: Vec<String> = log
            .lines()
            .filter_map(|line| {
                let entry: serde_json::Value = serde_json::from_str(line).ok()?;
                (entry["level"] == "error").then(|| entry["msg"].as_str().map(str::to_string)).flatten()
            })
            .collect();
        let _ = std::fs::remove_file(self.log_path());
        if errors.is_empty() {
            String::from_utf8_lossy(stderr).trim().to_string()
        } else {
            errors[errors.len().saturating_sub(3)..].join("; ")
        }
    }
}

fn read_pid(path: &Path) -> Result<i32> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.trim().parse().with_context(|| format!("{} holds no pid: {text:?}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_cgroups_path_selects_the_systemd_driver() {
        let b = Path::new("/b");
        let args = |r: Runc| r.command().get_args().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>();
        assert!(args(Runc::new("c", b, true)).contains(&"--systemd-cgroup".to_string()));
        assert!(!args(Runc::new("c", b, false)).contains(&"--systemd-cgroup".to_string()));
        assert_eq!(Runc::new("c", b, false).root, PathBuf::from("/b/runc"));
    }
}
