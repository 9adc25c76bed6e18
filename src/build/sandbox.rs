//! A build step that runs package code (Rust's build scripts and proc macros) runs in the build
//! sandbox (`containerd_shim_wasmedge::build_sandbox`), started with runc itself: the same spec
//! the execute service gives runc through containerd.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};

use super::util::{progress, which};
use super::Dirs;
use containerd_shim_wasmedge::build_sandbox::{self, BuildSandbox, Toolchains};

/// Bounds of a sandboxed step: generous for a real crate, finite for a hostile one.
const MEMORY_BYTES: u64 = 8 << 30;
const TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// runc's state directory for our containers.
const RUNC_ROOT: &str = "/run/wasmedge-image/runc";

/// A command for the sandbox: `args` run in `cwd`, reading `read_only` and writing `writable`
/// (host paths, bound at the same paths), with the Rust toolchains read-only.
pub struct Step {
    pub args: Vec<String>,
    pub cwd: PathBuf,
    pub read_only: Vec<PathBuf>,
    pub writable: Vec<PathBuf>,
}

/// Runs `step` in the sandbox: its stdout captured, its stderr ours, stdin empty.
pub fn output(step: Step, dirs: &Dirs) -> Result<Output> {
    const HOW: &str = "pass --no-sandbox to run it on this host (offline, but as you, with your files)";
    if !nix::unistd::geteuid().is_root() {
        bail!("the build sandbox runs package code (build scripts, proc macros) in a runc container, which needs root; {HOW}");
    }
    let runc = which("runc").with_context(|| format!("the build sandbox needs runc, which is not on PATH; {HOW}"))?;

    let root = dirs.toolchains.join("sandbox-root");
    build_sandbox::prepare_root(&root, &[])?;
    let toolchains = Toolchains::from_env();
    let mut env = toolchains.env();
    env.extend(["HOME=/tmp", "TMPDIR=/tmp"].map(String::from));
    let mut read_only = Toolchains::binds(&[&toolchains.rustup_home, &toolchains.cargo_home]);
    read_only.extend(step.read_only.iter().map(|p| (p.clone(), p.clone())));
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let id = format!("wasmedge-image-{}-{nanos}", std::process::id());
    let spec = BuildSandbox {
        args: step.args,
        env,
        cwd: step.cwd,
        read_only,
        writable: step.writable.iter().map(|p| (p.clone(), p.clone())).collect(),
        memory_bytes: MEMORY_BYTES,
        cgroups_path: format!("/wasmedge-image/{id}"),
    }
    .spec(&root);
    let bundle = tempfile::Builder::new().prefix("sandbox-").tempdir_in(&dirs.toolchains)?;
    std::fs::write(bundle.path().join("config.json"), serde_json::to_vec(&spec)?).context("writing the sandbox's config.json")?;

    // `runc run` creates, starts, waits for and deletes the container, passing our stdio on.
    let child = Command::new(&runc)
        .args(["--root", RUNC_ROOT, "run", "--bundle"])
        .arg(bundle.path())
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {}", runc.display()))?;
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = {
        let (runc, id) = (runc.clone(), id.clone());
        std::thread::spawn(move || {
            let over = finished.recv_timeout(TIMEOUT).is_err_and(|e| e == mpsc::RecvTimeoutError::Timeout);
            if over {
                let _ = Command::new(runc).args(["--root", RUNC_ROOT, "kill", &id, "KILL"]).status();
            }
            over
        })
    };
    let out = child.wait_with_output().context("waiting for runc");
    let _ = done.send(());
    if watchdog.join().unwrap_or(false) {
        bail!("the sandboxed build went over its time limit of {} minutes and was killed", TIMEOUT.as_secs() / 60);
    }
    let out = out?;
    if out.status.code().is_some_and(|c| c == 137) {
        progress(&format!("the sandboxed build was killed (its memory limit is {} GiB)", MEMORY_BYTES >> 30));
    }
    Ok(out)
}
