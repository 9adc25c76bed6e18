//! Fixtures of the end-to-end suites (`mod common;` in each): commands with a time limit, the
//! test images packed by `wasmedge-image`, and a private containerd per test. Every external
//! command is bounded so a hang fails instead of blocking CI.
#![allow(dead_code)] // each suite uses its own part

use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod cri;
pub mod docker;
#[cfg(feature = "otlp")]
pub mod otlp;

pub const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-wasmedge-v1");
pub const IMAGE_TOOL: &str = env!("CARGO_BIN_EXE_wasmedge-image");
pub const RUNTIME: &str = "io.containerd.wasmedge.v1";
pub const NAMESPACE: &str = "test";
pub const PLATFORM: &str = "wasi/wasm";
pub const HELLO_IMAGE: &str = "docker.io/library/hello-wasm:test";
pub const BROKEN_IMAGE: &str = "docker.io/library/broken-wasm:test";
pub const ENTRYPOINT: &str = "/app.wasm";
pub const GREETING: &str = "Greetings from inside the image.\n";
/// Bound for one ctr call; generous because the first run of a module may compile it.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Running commands with a time limit

#[derive(Debug)]
pub struct Out {
    pub stdout: String,
    pub stderr: String,
    /// The exit code, or 128 + signal like a shell when the command was killed.
    pub code: i32,
}

/// Runs `cmd` for at most `timeout`. `Err` carries what it printed before it had to be killed.
/// With `stdin`, that text is written and the pipe stays open until the command ends, as a
/// terminal would (`ctr run` forwards stdin but never closes it).
pub fn exec(cmd: &mut Command, stdin: Option<&str>, timeout: Duration) -> Result<Out, Out> {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let _stdin = stdin.map(|text| {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).unwrap();
        pipe
    });
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let status = wait_timeout(&mut child, timeout);
    let killed = status.is_none();
    let status = status.unwrap_or_else(|| {
        eprintln!("{cmd:?} timed out; the runtime's processes then:\n{}", runtime_processes());
        let _ = child.kill();
        child.wait().unwrap()
    });
    let out = Out { stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap(), code: code_of(status) };
    if killed {
        Err(out)
    } else {
        Ok(out)
    }
}

/// pid, parent, state, kernel wait channel and command line of every containerd, ctr, shim, runc
/// and container process: where a hang sits, for the failure message.
fn runtime_processes() -> String {
    let mut lines = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let dir = entry.path();
        let cmdline = fs::read(dir.join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !["ctr", "containerd", "runc", "wasmedge"].iter().any(|name| cmdline.contains(name)) {
            continue;
        }
        let stat = fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // The fields after the command name: state, parent pid.
        let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().take(2).collect();
        let wchan = fs::read_to_string(dir.join("wchan")).unwrap_or_default();
        lines.push(format!("{} {} {wchan} {cmdline}", entry.file_name().to_string_lossy(), fields.join(" ")));
    }
    lines.join("\n")
}

/// Like [`exec`], but a timeout fails the test.
pub fn exec_bounded(cmd: &mut Command, stdin: Option<&str>, timeout: Duration) -> Out {
    let what = format!("{cmd:?}");
    exec(cmd, stdin, timeout).unwrap_or_else(|out| panic!("timed out after {timeout:?}: {what}\n{out:#?}"))
}

/// Reads a pipe to the end on its own thread, so a chatty child never blocks on a full pipe.
pub fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

pub fn code_of(status: ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Polls `check` until it holds, failing the test after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Test images, built once per test binary under cargo's scratch dir for integration tests

pub fn scratch_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e");
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// images/NAME built for wasm32-wasip1 (a standalone crate, like images/hello).
pub fn example_module(name: &str) -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("images").join(name);
    let target_dir = crate_dir.join("target"); // explicit: ignore any CARGO_TARGET_DIR
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = exec_bounded(
        Command::new(cargo)
            .args(["build", "--release", "--offline", "--target", "wasm32-wasip1", "--manifest-path"])
            .arg(crate_dir.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir),
        None,
        Duration::from_secs(300),
    );
    assert_eq!(out.code, 0, "building images/{name} failed:\n{}", out.stderr);
    target_dir.join(format!("wasm32-wasip1/release/{name}.wasm"))
}

/// images/hello built for wasm32-wasip1.
pub fn hello_wasm() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| example_module("hello"))
}

/// Packs `module` as /app.wasm plus `files` (HOSTPATH:IMAGEPATH) into an OCI tarball.
pub fn pack(module: &Path, tag: &str, files: &[String]) -> PathBuf {
    let out_path = scratch_dir().join(format!("{}.tar", tag.rsplit('/').next().unwrap().replace(':', "-")));
    let mut cmd = Command::new(IMAGE_TOOL);
    cmd.arg("pack").arg("--module").arg(module).args(["--tag", tag]).arg("--out").arg(&out_path);
    for file in files {
        cmd.args(["--file", file]);
    }
    let out = exec_bounded(&mut cmd, None, Duration::from_secs(60));
    assert_eq!(out.code, 0, "wasmedge-image pack failed: {out:#?}");
    out_path
}

/// As [`pack`], as a docker-archive for `docker load`.
pub fn pack_docker(module: &Path, tag: &str, files: &[String]) -> PathBuf {
    let out_path = scratch_dir().join(format!("{}-docker.tar", tag.rsplit('/').next().unwrap().replace(':', "-")));
    let mut cmd = Command::new(IMAGE_TOOL);
    cmd.arg("pack").arg("--module").arg(module).args(["--tag", tag, "--format", "docker"]).arg("--out").arg(&out_path);
    for file in files {
        cmd.args(["--file", file]);
    }
    let out = exec_bounded(&mut cmd, None, Duration::from_secs(60));
    assert_eq!(out.code, 0, "wasmedge-image pack failed: {out:#?}");
    out_path
}

/// The hello module with /data/greeting.txt (content [`GREETING`]) next to it.
pub fn hello_image() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let greeting = scratch_dir().join("greeting.txt");
        fs::write(&greeting, GREETING).unwrap();
        pack(hello_wasm(), HELLO_IMAGE, &[format!("{}:/data/greeting.txt", greeting.display())])
    })
}

/// A module with a valid magic number followed by garbage: loading it must fail.
pub fn broken_image() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let module = scratch_dir().join("broken.wasm");
        fs::write(&module, b"\0asm\x01\0\0\0this is not a wasm section").unwrap();
        pack(&module, BROKEN_IMAGE, &[])
    })
}

// ---------------------------------------------------------------------------------------------
// A private containerd per test

pub struct Containerd {
    pub dir: TempDir,
    daemon: Child,
}

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A container id no other process argument (e.g. a test name filter) is likely to equal.
pub fn unique_id(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

impl Containerd {
    pub fn start() -> Containerd {
        Containerd::start_with_config(config_toml)
    }

    /// A containerd with its own config: `config(root, state, socket)` gives the TOML.
    pub fn start_with_config(config: impl Fn(&Path, &Path, &Path) -> String) -> Containerd {
        Containerd::start_with(config, &[])
    }

    /// A containerd with its own config and `env` added to its environment (which its shims
    /// inherit).
    pub fn start_with(config: impl Fn(&Path, &Path, &Path) -> String, env: &[(&str, &str)]) -> Containerd {
        Containerd::start_in(config, env, Path::new(SHIM).parent().unwrap())
    }

    /// As [`Containerd::start_with`], with the shim taken from `shim_dir`.
    pub fn start_in(config: impl Fn(&Path, &Path, &Path) -> String, env: &[(&str, &str)], shim_dir: &Path) -> Containerd {
        // Short path: the socket path must fit in sun_path (108 bytes).
        let dir = tempfile::Builder::new().prefix("e2e-ctd-").tempdir_in("/tmp").unwrap();
        let (root, state) = (dir.path().join("root"), dir.path().join("state"));
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&state).unwrap();
        let config_path = dir.path().join("config.toml");
        fs::write(&config_path, config(&root, &state, &dir.path().join("containerd.sock"))).unwrap();
        let config = config_path;

        // containerd finds `containerd-shim-wasmedge-v1` for io.containerd.wasmedge.v1 on its PATH.
        let path = format!("{}:{}", shim_dir.display(), std::env::var("PATH").unwrap_or_default());
        let log = fs::File::create(dir.path().join("containerd.log")).unwrap();
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .env("PATH", path)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start containerd (run the tests in the dev root: make test)");

        // From here on Drop stops the daemon, even if it never becomes ready.
        let mut containerd = Containerd { dir, daemon };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = containerd.daemon.try_wait().unwrap() {
                panic!("containerd exited early ({status}):\n{}", containerd.log());
            }
            let probe = exec(
                &mut containerd.ctr_command(&["--connect-timeout", "1s", "version"]),
                None,
                Duration::from_secs(5),
            );
            if matches!(probe, Ok(Out { code: 0, .. })) {
                return containerd;
            }
            assert!(Instant::now() < deadline, "containerd not ready after 30s:\n{}", containerd.log());
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// A containerd with the hello image imported.
    pub fn with_hello() -> Containerd {
        let containerd = Containerd::start();
        containerd.import(hello_image());
        containerd
    }

    pub fn sock(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr` talking to this containerd; global flags like --connect-timeout go first in `args`.
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a").arg(self.sock()).args(["-n", NAMESPACE]).args(args);
        cmd
    }

    pub fn ctr(&self, args: &[&str]) -> Out {
        exec_bounded(&mut self.ctr_command(args), None, CTR_TIMEOUT)
    }

    /// A ctr call that must succeed; returns its stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert_eq!(out.code, 0, "ctr {args:?} failed: {out:#?}");
        out.stdout
    }

    pub fn import(&self, tar: &Path) {
        self.ctr_ok(&["image", "import", "--platform", PLATFORM, tar.to_str().unwrap()]);
    }

    /// `ctr run` of `image` as container `id`; `opts` go before the image. ctr replaces the whole
    /// process.args with what follows the id, so non-empty `args` are preceded by the entrypoint.
    pub fn run_command(&self, id: &str, image: &str, opts: &[&str], args: &[&str]) -> Command {
        let mut cmd = self.ctr_command(&["run", "--platform", PLATFORM, "--runtime", RUNTIME]);
        cmd.args(opts).args([image, id]);
        if !args.is_empty() {
            cmd.arg(ENTRYPOINT).args(args);
        }
        cmd
    }

    /// `ctr run --rm` in the foreground, stdin open (with `stdin` written to it) as in a terminal.
    pub fn run_image(&self, id: &str, image: &str, opts: &[&str], args: &[&str], stdin: Option<&str>) -> Out {
        let mut cmd = self.run_command(id, image, &[&["--rm"], opts].concat(), args);
        exec_bounded(&mut cmd, Some(stdin.unwrap_or("")), CTR_TIMEOUT)
    }

    /// The hello module with `args`.
    pub fn run(&self, opts: &[&str], args: &[&str]) -> Out {
        self.run_image(&unique_id("run"), HELLO_IMAGE, opts, args, None)
    }

    /// (pid, status) of task `id` as `ctr task ls` shows it.
    pub fn task(&self, id: &str) -> Option<(u32, String)> {
        self.ctr_ok(&["task", "ls"]).lines().skip(1).find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.len() >= 3 && cols[0] == id).then(|| (cols[1].parse().unwrap(), cols[2].to_string()))
        })
    }

    /// `ctr task delete` of a stopped task; returns its exit status. ctr 2.x exits 0 and only
    /// logs a non-zero status as "task ID exit with non-zero exit code N".
    pub fn delete_task(&self, id: &str) -> i32 {
        let out = self.ctr(&["task", "delete", id]);
        assert_eq!(out.code, 0, "ctr task delete {id} failed: {out:#?}");
        match out.stderr.split_once("exit with non-zero exit code ") {
            Some((_, rest)) => rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap(),
            None => 0,
        }
    }

    /// After its task and container are deleted, nothing of container `id` may remain: no process
    /// naming it or this containerd's socket (its shim), no mount under this containerd's dirs.
    /// Tests call this when `id` was the only container.
    pub fn assert_no_leftovers(&self, id: &str) {
        let sock = self.sock().to_string_lossy().into_owned();
        wait_until(&format!("the shim of {id} to exit"), Duration::from_secs(15), || {
            processes().iter().all(|(_, argv)| !argv.iter().any(|a| a == id || *a == sock))
        });
        let dir = format!("{}/", self.dir.path().display());
        wait_until(&format!("the mounts of {id} to go"), Duration::from_secs(15), || {
            mount_points().iter().all(|m| !m.starts_with(&dir) && !m.contains(id))
        });
    }

    /// Best effort and bounded, for Drop: must not panic.
    pub fn quiet_ctr(&self, args: &[&str]) -> String {
        exec(&mut self.ctr_command(args), None, Duration::from_secs(15)).map(|o| o.stdout).unwrap_or_default()
    }
}

pub fn config_toml(root: &Path, state: &Path, sock: &Path) -> String {
    // As devroot/containerd.toml, plus: CRI and NRI are off because a test needs neither and
    // NRI would share /var/run/nri/nri.sock with any other containerd.
    format!(
        r#"version = 3
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.erofs",
  "io.containerd.grpc.v1.cri",
  "io.containerd.nri.v1.nri",
]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"
"#,
        root = root.display(),
        state = state.display(),
        sock = sock.display(),
    )
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if thread::panicking() {
            // What happened after the plugins loaded is what explains a failure; shim logs land here too.
            let log = self.log();
            let after_boot = log.split_once("successfully booted").map_or(log.as_str(), |(_, rest)| rest);
            let lines: Vec<&str> = after_boot.lines().skip(1).collect();
            eprintln!("--- containerd log after boot ---\n{}", lines[lines.len().saturating_sub(80)..].join("\n"));
        }
        // Delete what a failed test left behind, so its shims exit.
        if matches!(self.daemon.try_wait(), Ok(None)) {
            for id in self.quiet_ctr(&["task", "ls", "-q"]).lines() {
                self.quiet_ctr(&["task", "delete", "-f", id]);
            }
            for id in self.quiet_ctr(&["container", "ls", "-q"]).lines() {
                self.quiet_ctr(&["container", "delete", id]);
            }
        }
        // SIGTERM, then SIGKILL if containerd does not stop in time.
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        if wait_timeout(&mut self.daemon, Duration::from_secs(10)).is_none() {
            let _ = self.daemon.kill();
            let _ = self.daemon.wait();
        }
        // Shims outlive containerd by design; ours are the ones started with our socket.
        let sock = self.sock().to_string_lossy().into_owned();
        for (pid, argv) in processes() {
            if argv.contains(&sock) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        // Mounts left under the directory would make removing it fail.
        let dir = format!("{}/", self.dir.path().display());
        for mount in mount_points().iter().rev().filter(|m| m.starts_with(&dir)) {
            let path = std::ffi::CString::new(mount.as_str()).unwrap();
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
        // TempDir removes the directory itself.
    }
}

/// (pid, argv) of every process we can see.
pub fn processes() -> Vec<(i32, Vec<String>)> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else { continue };
        let argv = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty());
        found.push((pid, argv.map(|a| String::from_utf8_lossy(a).into_owned()).collect()));
    }
    found
}

/// The node's zygote: `containerd-wasmedge-init zygote`, maybe through the bundled loader
/// (`ld-linux-x86-64.so.2 --argv0 containerd-wasmedge-init PATH zygote`).
pub fn is_zygote(argv: &[String]) -> bool {
    argv.last().is_some_and(|a| a == "zygote") && argv.iter().any(|a| a.ends_with("containerd-wasmedge-init"))
}

/// The zygotes of this test's node, which forks the container processes and lingers a while
/// when idle, by design: those in our mount namespace (another dev root session has its own).
pub fn zygotes() -> Vec<i32> {
    let ours = fs::read_link("/proc/self/ns/mnt").ok();
    processes()
        .into_iter()
        .filter(|(pid, argv)| is_zygote(argv) && fs::read_link(format!("/proc/{pid}/ns/mnt")).ok() == ours)
        .map(|(pid, _)| pid)
        .collect()
}

/// State and parent of a process; `None` once it is gone.
pub fn state_and_parent(pid: i32) -> Option<(char, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state, then the parent's pid.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    Some((fields.next()?.chars().next()?, fields.next()?.parse().ok()?))
}

/// Mount points of our mount namespace, in mount order.
pub fn mount_points() -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    // Field 5 is the mount point, with space, tab, newline and backslash octal-escaped.
    let unescape =
        |s: &str| s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\");
    info.lines().filter_map(|l| l.split(' ').nth(4)).map(unescape).collect()
}

/// The file of `controller` (v1) or of the unified hierarchy (v2) in a process's cgroup.
pub fn cgroup_file(pid: u32, controller: &str, v1_file: &str, v2_file: &str) -> PathBuf {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        if controllers.split(',').any(|c| c == controller) {
            return PathBuf::from(format!("/sys/fs/cgroup/{controller}{path}/{v1_file}"));
        }
    }
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::")).expect("no cgroup of the process");
    PathBuf::from(format!("/sys/fs/cgroup{path}/{v2_file}"))
}

// ---------------------------------------------------------------------------------------------
// The release tarball (`make dist`; `make test` makes it before the tests)

/// `containerd-shim-wasmedge-VERSION-x86_64-linux`: the tarball's name and its top directory.
pub fn dist_name() -> String {
    format!("containerd-shim-wasmedge-{}-x86_64-linux", env!("CARGO_PKG_VERSION"))
}

pub fn dist_tarball() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist").join(format!("{}.tar.gz", dist_name()));
    assert!(path.is_file(), "{} is missing: run `make dist` (make test does) first", path.display());
    path
}

/// A module that grows its linear memory a page at a time until memory.grow fails, then exits
/// with the MiB it reached: under a limit, exactly that limit.
pub const GROW_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory 1)
  (func (export "_start")
    (block $refused
      (loop $more
        (br_if $refused (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
        (br $more)))
    (call $exit (i32.div_u (memory.size) (i32.const 16)))))"#;
