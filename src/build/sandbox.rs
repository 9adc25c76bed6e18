//! A build step that runs package code (Rust's build scripts and proc macros), or with
//! `--sandbox` the whole compile, runs in the build sandbox
//! (`containerd_shim_wasmedge::build_sandbox`), started with runc itself: the same spec the
//! execute service gives runc through containerd.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};

use super::util::{progress, which};
use super::{cache, deps, rust, Compiled, Dirs, Lang, Source};
use containerd_shim_wasmedge::build_sandbox::{self, BuildSandbox, Toolchains};

/// Bounds of a sandboxed step: generous for a real crate, finite for a hostile one.
const MEMORY_BYTES: u64 = 8 << 30;
const TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// runc's state directory for our containers.
const RUNC_ROOT: &str = "/run/wasmedge-image/runc";

/// A command for the sandbox: `args` run in `cwd`, reading `read_only` and writing `writable`
/// (host paths, bound at the same paths), with the Rust toolchains read-only; `HOME` and
/// `TMPDIR` are `home`, else the sandbox's own /tmp.
pub struct Step {
    pub args: Vec<String>,
    pub cwd: PathBuf,
    pub home: Option<PathBuf>,
    pub read_only: Vec<PathBuf>,
    pub writable: Vec<PathBuf>,
}

/// The whole compile of `src` in the sandbox (`--sandbox`): this program's `compile` there,
/// offline, reading the sources, the toolchains and the dependencies fetched here before, and
/// writing only a scratch directory (and a crate's target directory), from which the result is
/// read back as a compile-cache entry.
pub fn compile(lang: Lang, src: &Source, compiler_args: &[String], dirs: &Dirs) -> Result<Compiled> {
    let mut writable = Vec::new();
    match lang {
        Lang::Rust if !src.is_file => {
            rust::fetch(&rust::manifest(src)?)?;
            writable.push(rust::target_dir(src, dirs)?);
        }
        Lang::JavaScript | Lang::TypeScript if !src.is_file && deps::has_npm_dependencies(&src.path)? => {
            deps::npm_modules(&src.path, dirs)?;
        }
        _ => {}
    }
    let exe = std::env::current_exe().context("finding this program, for the sandbox")?;
    fs::create_dir_all(&dirs.toolchains).with_context(|| format!("creating {}", dirs.toolchains.display()))?;
    let scratch = tempfile::Builder::new().prefix("sandbox-compile-").tempdir_in(&dirs.toolchains)?;
    let (out, home) = (scratch.path().join("out"), scratch.path().join("home"));
    for dir in [&out, &home] {
        fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    writable.extend([out.clone(), home.clone()]);
    let mut args = vec![exe.to_string_lossy().into_owned(), "compile".into(), "--lang".into(), lang.name().into(), "--out".into()];
    args.push(out.to_string_lossy().into_owned());
    for a in compiler_args {
        args.push(format!("--compiler-arg={a}"));
    }
    args.push(src.path.to_string_lossy().into_owned());
    let step = Step {
        args,
        cwd: home.clone(),
        home: Some(home),
        read_only: vec![src.dir().to_path_buf(), exe, dirs.toolchains.clone()],
        writable,
    };
    progress("compiling in the build sandbox (offline; the sources and toolchains read-only)");
    let ran = output(step, dirs)?;
    if !ran.status.success() {
        bail!("the compile in the build sandbox failed ({})", ran.status);
    }
    // What the sandbox wrote is read as data only, never through a link (Cache::get).
    cache::Cache::new(&out, 0, cache::DEFAULT_TTL)
        .get(COMPILED)?
        .context("the compile in the build sandbox left no result")
}

/// The key of the result `compile` stores in its `--out` directory.
pub const COMPILED: &str = "compiled";

/// Runs `step` in the sandbox: its stdout captured, its stderr ours, stdin empty.
pub fn output(step: Step, dirs: &Dirs) -> Result<Output> {
    const HOW: &str = "pass --no-sandbox to run it on this host (offline, but as you, with your files)";
    if !nix::unistd::geteuid().is_root() {
        bail!("the build sandbox runs package code (build scripts, proc macros) in a runc container, which needs root; {HOW}");
    }
    let runc = which("runc").with_context(|| format!("the build sandbox needs runc, which is not on PATH; {HOW}"))?;

    let root = dirs.toolchains.join("sandbox-root");
    build_sandbox::prepare_root(&root, &[])?;
    let toolchains = Toolchains { prepared: dirs.toolchains.clone(), ..Toolchains::from_env() };
    let mut env = toolchains.env();
    let home = step.home.as_deref().unwrap_or(Path::new("/tmp")).display().to_string();
    env.extend([format!("HOME={home}"), format!("TMPDIR={home}")]);
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
