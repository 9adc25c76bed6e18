//! End-to-end tests against a real containerd: each test starts a private containerd with the
//! shim cargo just built first on its PATH, imports the images/hello module packed by
//! `wasmedge-image`, and drives it with `ctr`. Needs containerd, ctr and root (`make test` runs
//! them inside the dev root). Every external command is bounded so a hang fails instead of
//! blocking CI.

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

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-wasmedge-v1");
const IMAGE_TOOL: &str = env!("CARGO_BIN_EXE_wasmedge-image");
const RUNTIME: &str = "io.containerd.wasmedge.v1";
const NAMESPACE: &str = "test";
const PLATFORM: &str = "wasi/wasm";
const HELLO_IMAGE: &str = "docker.io/library/hello-wasm:test";
const BROKEN_IMAGE: &str = "docker.io/library/broken-wasm:test";
const ENTRYPOINT: &str = "/app.wasm";
const GREETING: &str = "Greetings from inside the image.\n";
/// Bound for one ctr call; generous because the first run of a module may compile it.
const CTR_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Running commands with a time limit

#[derive(Debug)]
struct Out {
    stdout: String,
    stderr: String,
    /// The exit code, or 128 + signal like a shell when the command was killed.
    code: i32,
}

/// Runs `cmd` for at most `timeout`. `Err` carries what it printed before it had to be killed.
/// With `stdin`, that text is written and the pipe stays open until the command ends, as a
/// terminal would (`ctr run` forwards stdin but never closes it).
fn exec(cmd: &mut Command, stdin: Option<&str>, timeout: Duration) -> Result<Out, Out> {
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

/// Like [`exec`], but a timeout fails the test.
fn exec_bounded(cmd: &mut Command, stdin: Option<&str>, timeout: Duration) -> Out {
    let what = format!("{cmd:?}");
    exec(cmd, stdin, timeout).unwrap_or_else(|out| panic!("timed out after {timeout:?}: {what}\n{out:#?}"))
}

/// Reads a pipe to the end on its own thread, so a chatty child never blocks on a full pipe.
fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
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

fn code_of(status: ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Polls `check` until it holds, failing the test after `timeout`.
fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Test images, built once per test binary under cargo's scratch dir for integration tests

fn scratch_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e");
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// images/hello built for wasm32-wasip1.
fn hello_wasm() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("images/hello");
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
        assert_eq!(out.code, 0, "building images/hello failed:\n{}", out.stderr);
        target_dir.join("wasm32-wasip1/release/hello.wasm")
    })
}

/// Packs `module` as /app.wasm plus `files` (HOSTPATH:IMAGEPATH) into an OCI tarball.
fn pack(module: &Path, tag: &str, files: &[String]) -> PathBuf {
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

/// The hello module with /data/greeting.txt (content [`GREETING`]) next to it.
fn hello_image() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let greeting = scratch_dir().join("greeting.txt");
        fs::write(&greeting, GREETING).unwrap();
        pack(hello_wasm(), HELLO_IMAGE, &[format!("{}:/data/greeting.txt", greeting.display())])
    })
}

/// A module with a valid magic number followed by garbage: loading it must fail.
fn broken_image() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let module = scratch_dir().join("broken.wasm");
        fs::write(&module, b"\0asm\x01\0\0\0this is not a wasm section").unwrap();
        pack(&module, BROKEN_IMAGE, &[])
    })
}

// ---------------------------------------------------------------------------------------------
// A private containerd per test

struct Containerd {
    dir: TempDir,
    daemon: Child,
}

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A container id no other process argument (e.g. a test name filter) is likely to equal.
fn unique_id(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

impl Containerd {
    fn start() -> Containerd {
        // Short path: the socket path must fit in sun_path (108 bytes).
        let dir = tempfile::Builder::new().prefix("e2e-ctd-").tempdir_in("/tmp").unwrap();
        let (root, state) = (dir.path().join("root"), dir.path().join("state"));
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&state).unwrap();
        let config = dir.path().join("config.toml");
        fs::write(&config, config_toml(&root, &state, &dir.path().join("containerd.sock"))).unwrap();

        // containerd finds `containerd-shim-wasmedge-v1` for io.containerd.wasmedge.v1 on its PATH.
        let shim_dir = Path::new(SHIM).parent().unwrap();
        let path = format!("{}:{}", shim_dir.display(), std::env::var("PATH").unwrap_or_default());
        let log = fs::File::create(dir.path().join("containerd.log")).unwrap();
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .env("PATH", path)
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
    fn with_hello() -> Containerd {
        let containerd = Containerd::start();
        containerd.import(hello_image());
        containerd
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr` talking to this containerd; global flags like --connect-timeout go first in `args`.
    fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a").arg(self.sock()).args(["-n", NAMESPACE]).args(args);
        cmd
    }

    fn ctr(&self, args: &[&str]) -> Out {
        exec_bounded(&mut self.ctr_command(args), None, CTR_TIMEOUT)
    }

    /// A ctr call that must succeed; returns its stdout.
    fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert_eq!(out.code, 0, "ctr {args:?} failed: {out:#?}");
        out.stdout
    }

    fn import(&self, tar: &Path) {
        self.ctr_ok(&["image", "import", "--platform", PLATFORM, tar.to_str().unwrap()]);
    }

    /// `ctr run` of `image` as container `id`; `opts` go before the image. ctr replaces the whole
    /// process.args with what follows the id, so non-empty `args` are preceded by the entrypoint.
    fn run_command(&self, id: &str, image: &str, opts: &[&str], args: &[&str]) -> Command {
        let mut cmd = self.ctr_command(&["run", "--platform", PLATFORM, "--runtime", RUNTIME]);
        cmd.args(opts).args([image, id]);
        if !args.is_empty() {
            cmd.arg(ENTRYPOINT).args(args);
        }
        cmd
    }

    /// `ctr run --rm` in the foreground, stdin open (with `stdin` written to it) as in a terminal.
    fn run_image(&self, id: &str, image: &str, opts: &[&str], args: &[&str], stdin: Option<&str>) -> Out {
        let mut cmd = self.run_command(id, image, &[&["--rm"], opts].concat(), args);
        exec_bounded(&mut cmd, Some(stdin.unwrap_or("")), CTR_TIMEOUT)
    }

    /// The hello module with `args`.
    fn run(&self, opts: &[&str], args: &[&str]) -> Out {
        self.run_image(&unique_id("run"), HELLO_IMAGE, opts, args, None)
    }

    /// (pid, status) of task `id` as `ctr task ls` shows it.
    fn task(&self, id: &str) -> Option<(u32, String)> {
        self.ctr_ok(&["task", "ls"]).lines().skip(1).find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.len() >= 3 && cols[0] == id).then(|| (cols[1].parse().unwrap(), cols[2].to_string()))
        })
    }

    /// `ctr task delete` of a stopped task; returns its exit status. ctr 2.x exits 0 and only
    /// logs a non-zero status as "task ID exit with non-zero exit code N".
    fn delete_task(&self, id: &str) -> i32 {
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
    fn assert_no_leftovers(&self, id: &str) {
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
    fn quiet_ctr(&self, args: &[&str]) -> String {
        exec(&mut self.ctr_command(args), None, Duration::from_secs(15)).map(|o| o.stdout).unwrap_or_default()
    }
}

fn config_toml(root: &Path, state: &Path, sock: &Path) -> String {
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
fn processes() -> Vec<(i32, Vec<String>)> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else { continue };
        let argv = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty());
        found.push((pid, argv.map(|a| String::from_utf8_lossy(a).into_owned()).collect()));
    }
    found
}

/// Mount points of our mount namespace, in mount order.
fn mount_points() -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    // Field 5 is the mount point, with space, tab, newline and backslash octal-escaped.
    let unescape =
        |s: &str| s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\");
    info.lines().filter_map(|l| l.split(' ').nth(4)).map(unescape).collect()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn hello_prints_greeting_and_leaves_nothing_behind() {
    let containerd = Containerd::with_hello();
    let id = unique_id("hello");
    let out = containerd.run_image(&id, HELLO_IMAGE, &[], &[], None);
    assert_eq!((out.code, out.stdout.as_str()), (0, "Hello from WasmEdge!\n"), "{out:#?}");
    containerd.assert_no_leftovers(&id);
}

#[test]
fn args_reach_the_module() {
    let out = Containerd::with_hello().run(&[], &["echo", "a", "b c", "--flag"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "a b c --flag\n"), "{out:#?}");
}

#[test]
fn env_var_reaches_the_module() {
    let out = Containerd::with_hello().run(&["--env", "E2E_NAME=wasm value"], &["env", "E2E_NAME"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "wasm value\n"), "{out:#?}");
}

#[test]
fn file_shipped_in_the_image_is_readable() {
    let out = Containerd::with_hello().run(&[], &["cat", "/data/greeting.txt"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, GREETING), "{out:#?}");
}

#[test]
fn stdin_line_reaches_the_module_without_eof() {
    // exec keeps ctr's stdin open, so a shim waiting for EOF would time out here.
    let out = Containerd::with_hello().run_image(&unique_id("stdin"), HELLO_IMAGE, &[], &["stdin"], Some("ping\n"));
    assert_eq!((out.code, out.stdout.as_str()), (0, "got: ping\n"), "{out:#?}");
}

#[test]
fn stderr_stays_apart_from_stdout() {
    let out = Containerd::with_hello().run(&[], &["stderr", "oops"]);
    assert_eq!((out.code, out.stdout.as_str(), out.stderr.as_str()), (0, "", "oops\n"), "{out:#?}");
}

#[test]
fn exit_code_passes_through() {
    let out = Containerd::with_hello().run(&[], &["exit", "42"]);
    assert_eq!(out.code, 42, "{out:#?}");
}

#[test]
fn read_only_bind_mount_is_readable_but_not_writable() {
    let containerd = Containerd::with_hello();
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("in.txt"), "from the host\n").unwrap();
    let mount = format!("type=bind,src={},dst=/mnt,options=rbind:ro", host.path().display());

    let read = containerd.run(&["--mount", &mount], &["cat", "/mnt/in.txt"]);
    assert_eq!((read.code, read.stdout.as_str()), (0, "from the host\n"), "{read:#?}");

    let write = containerd.run(&["--mount", &mount], &["write", "/mnt/out.txt", "x"]);
    assert_ne!(write.code, 0, "writing to a read-only mount succeeded: {write:#?}");
    assert!(!host.path().join("out.txt").exists(), "the write reached the host");
}

/// Starts `sleep 600` detached, kills it with `signal` and checks the exit status and cleanup.
fn kill_long_running_module(signal: Option<&str>, expected_status: i32) {
    let containerd = Containerd::with_hello();
    let id = unique_id("sleeper");
    let started =
        exec_bounded(&mut containerd.run_command(&id, HELLO_IMAGE, &["-d"], &["sleep", "600"]), None, CTR_TIMEOUT);
    assert_eq!(started.code, 0, "ctr run -d failed: {started:#?}");
    let (pid, status) = containerd.task(&id).expect("task not listed after ctr run -d");
    assert_eq!(status, "RUNNING");

    let mut kill = vec!["task", "kill"];
    if let Some(signal) = signal {
        kill.extend(["-s", signal]);
    }
    kill.push(&id);
    containerd.ctr_ok(&kill);
    wait_until(&format!("{id} to stop"), Duration::from_secs(30), || {
        containerd.task(&id).is_some_and(|(_, status)| status == "STOPPED")
    });

    assert_eq!(containerd.delete_task(&id), expected_status);
    containerd.ctr_ok(&["container", "delete", &id]);
    containerd.assert_no_leftovers(&id);
    wait_until(&format!("container process {pid} to go"), Duration::from_secs(15), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
}

#[test]
fn sigterm_stops_a_long_running_module_with_143() {
    kill_long_running_module(None, 143); // ctr task kill sends SIGTERM by default
}

#[test]
fn sigkill_stops_a_long_running_module_with_137() {
    kill_long_running_module(Some("SIGKILL"), 137);
}

#[test]
fn non_wasm_rootfs_is_rejected() {
    let containerd = Containerd::start();
    let rootfs = containerd.dir.path().join("busybox-rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("/bin/busybox (busybox-static) is needed");

    let id = unique_id("linux");
    let mut cmd = containerd.ctr_command(&["run", "--rm", "--runtime", RUNTIME, "--rootfs"]);
    cmd.arg(&rootfs).args([id.as_str(), "/bin/busybox", "echo", "hi"]);
    let out = exec_bounded(&mut cmd, Some(""), CTR_TIMEOUT);
    assert_ne!(out.code, 0, "a Linux binary ran: {out:#?}");
    assert!(!out.stdout.contains("hi"), "busybox ran: {out:#?}");
    let said = format!("{}{}", out.stdout, out.stderr).to_lowercase();
    assert!(said.contains("not a wasm"), "no 'not a wasm' reason: {out:#?}");
}

#[test]
fn broken_module_fails_with_a_one_line_reason() {
    let containerd = Containerd::start();
    containerd.import(broken_image());
    let out = containerd.run_image(&unique_id("broken"), BROKEN_IMAGE, &[], &[], None);
    assert_ne!(out.code, 0, "{out:#?}");
    let reason: Vec<&str> = out.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(reason.len(), 1, "expected one line of reason on stderr: {out:#?}");
}
