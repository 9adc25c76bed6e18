//! The node matrix: the release tarball of `make dist`, installed by its own install.sh as a user
//! would, on Debian bookworm, trixie and sid node roots (test/nodes/create.sh: that release's own
//! containerd and runc, trixie also Docker 26), then wasm containers through each root's own
//! containerd and `ctr`; a CRI pod on trixie (containerd 1.7) and sid (2.1), `docker run` on trixie.
//!
//! Each test mounts an overlay on the cached root (so the cache stays as built), enters it with
//! test/nodes/enter.sh for every command, and keeps containerd's socket and root in a directory
//! both sides see. Its Drop stops the node's daemons and shims and unmounts, even on failure.
//! The tarball: $NODE_TARBALL, or the newest dist/*.tar.gz. Needs `make nodes` and root.

mod common;

use common::cri::{self, busybox_image, container, log_messages, shims_of, wasm_image, Cri};
use common::cri::{BUSYBOX_IMAGE, CRI_NAMESPACE, WASM_IMAGE};
use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// As NODES in devroot/config.sh; devroot/enter.sh mounts it at the same path.
const NODES: &str = "/var/cache/containerd-shim-wasmedge/nodes";
/// The containerd namespace of the ctr cases (its cgroups are /NS/ID).
const NS: &str = "e2e-node";
const GROW_IMAGE: &str = "docker.io/library/grow-wasm:node";
const DOCKER_IMAGE: &str = "docker.io/library/hello-wasm:node";
/// 64 MiB, for `ctr run --memory-limit`.
const MEMORY_64M: &str = "67108864";
/// Bound for a command on a node (install.sh, ctr, docker).
const NODE_TIMEOUT: Duration = Duration::from_secs(120);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The tarball under test: $NODE_TARBALL, or the newest dist/*.tar.gz of `make dist`.
fn tarball() -> PathBuf {
    if let Some(path) = std::env::var_os("NODE_TARBALL") {
        return PathBuf::from(path);
    }
    let newest = fs::read_dir(repo().join("dist"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok());
    newest.expect("no release tarball: run `make dist` (or set NODE_TARBALL)")
}

/// The image of [`GROW_WAT`].
fn grow_image() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let module = wat::parse_str(GROW_WAT).unwrap();
        let path = scratch_dir().join("grow.wasm");
        fs::write(&path, module).unwrap();
        pack(&path, GROW_IMAGE, &[])
    })
}

// ---------------------------------------------------------------------------------------------
// A node: an overlay on a cached root, its daemons, and the directory both sides see

struct Node {
    name: &'static str,
    /// upper/ and work/ of the overlay, root/ (the node's /), share/ (the same path inside).
    dir: tempfile::TempDir,
    /// containerd first, then dockerd: stopped in reverse order.
    daemons: Vec<Child>,
}

impl Node {
    fn new(name: &'static str) -> Node {
        let lower = Path::new(NODES).join(name);
        assert!(lower.join(".stamp").exists(), "no node root {}: run `make nodes`", lower.display());
        // Short path: containerd's and dockerd's sockets live in share/.
        let dir = tempfile::Builder::new().prefix("e2e-node-").tempdir_in("/tmp").unwrap();
        for sub in ["upper", "work", "root", "share"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let node = Node { name, dir, daemons: Vec::new() };
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            node.dir.path().join("upper").display(),
            node.dir.path().join("work").display()
        );
        let mut mount = Command::new("mount");
        mount.args(["-t", "overlay", "overlay", "-o", &options]).arg(node.root());
        let out = exec_bounded(&mut mount, None, Duration::from_secs(30));
        assert_eq!(out.code, 0, "overlay on {name}: {out:#?}");
        node
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn share(&self) -> PathBuf {
        self.dir.path().join("share")
    }

    fn sock(&self) -> PathBuf {
        self.share().join("containerd.sock")
    }

    /// `args` run on the node.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(repo().join("test/nodes/enter.sh"));
        cmd.arg(self.root()).arg(self.share()).args(args);
        cmd
    }

    /// CMD in containerd's own mount namespace, as every daemon of a real node shares the host's:
    /// dockerd mounts a container's rootfs itself, where the shim containerd starts must see it.
    fn command_beside_containerd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.containerd_pid())).args(["--mount", "--root", "--wd", "--"]);
        cmd.args(["env", "-i", "HOME=/root", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]).args(args);
        cmd
    }

    /// A shell script run on the node that must succeed; returns its stdout.
    fn sh(&self, script: &str) -> String {
        let out = exec_bounded(&mut self.command(&["sh", "-c", script]), None, NODE_TIMEOUT);
        assert_eq!(out.code, 0, "{}: `{script}` failed: {out:#?}", self.name);
        out.stdout
    }

    /// Unpacks the tarball in share/ and runs its install.sh as a user would.
    fn install(&self) {
        let tarball = tarball();
        let file = tarball.file_name().unwrap().to_string_lossy().into_owned();
        fs::copy(&tarball, self.share().join(&file)).unwrap();
        let sum = PathBuf::from(format!("{}.sha256", tarball.display()));
        fs::copy(&sum, self.share().join(format!("{file}.sha256"))).unwrap_or_else(|e| panic!("{}: {e}", sum.display()));
        let dir = file.strip_suffix(".tar.gz").unwrap();
        let share = self.share().display().to_string();
        self.sh(&format!("cd {share} && sha256sum -c {file}.sha256 && tar -xzf {file} && cd {dir} && ./install.sh"));
        // The runtime handler is in the config containerd reads, Debian's config is kept as a
        // backup, and a second run changes nothing.
        let config = self.root().join("etc/containerd/config.toml");
        let written = fs::read_to_string(&config).expect("install.sh wrote no /etc/containerd/config.toml");
        assert!(self.runtime_entry().is_some_and(|e| e.contains("io.containerd.wasmedge.v1")), "{}: {:?}", self.name, self.runtime_entry());
        let debian = fs::read(Path::new(NODES).join(self.name).join("etc/containerd/config.toml")).unwrap();
        let backups = fs::read_dir(config.parent().unwrap()).unwrap().flatten().filter(|e| e.path() != config);
        assert!(backups.into_iter().any(|e| fs::read(e.path()).is_ok_and(|b| b == debian)), "{}: no backup of Debian's config", self.name);
        self.sh(&format!("cd {share}/{dir} && ./install.sh"));
        assert_eq!(fs::read_to_string(&config).unwrap(), written, "{}: a second install.sh changed the config", self.name);
    }

    /// The `wasmedge` runtime's table in `containerd config dump` (which migrates version 2).
    fn runtime_entry(&self) -> Option<String> {
        let dump = self.sh("containerd config dump");
        let entry = dump.split("runtimes.wasmedge]").nth(1)?;
        Some(entry.split("\n  [").next().unwrap().to_string())
    }

    /// install.sh --uninstall: the commands and the runtime entry are gone.
    fn uninstall(&self) {
        let dir = tarball().file_name().unwrap().to_string_lossy().strip_suffix(".tar.gz").unwrap().to_string();
        self.sh(&format!("cd {}/{dir} && ./install.sh --uninstall", self.share().display()));
        for bin in ["containerd-shim-wasmedge-v1", "containerd-wasmedge-init", "wasmedge-image"] {
            assert!(!self.root().join("usr/local/bin").join(bin).exists(), "{}: {bin} is left after --uninstall", self.name);
        }
        assert_eq!(self.runtime_entry(), None, "{}: the runtime entry is left after --uninstall", self.name);
    }

    /// `containerd --version`, `runc --version` and, where there is one, the Docker daemon's
    /// version, for the record (the test prints them).
    fn versions(&self) -> String {
        self.sh("containerd --version; runc --version | head -1; if command -v dockerd >/dev/null; then dockerd --version; fi")
    }

    /// Starts the node's containerd with the config install.sh wrote plus what a test in a chroot
    /// needs (a copy in share/), its socket and root in share/.
    fn start_containerd(&mut self) {
        let cmd = self.command(&self.containerd_args().iter().map(String::as_str).collect::<Vec<_>>());
        self.start_containerd_by(cmd);
    }

    /// containerd with the test's config (see [`Node::start_containerd`]).
    fn containerd_args(&self) -> Vec<String> {
        let installed = fs::read_to_string(self.root().join("etc/containerd/config.toml")).unwrap();
        let config = self.share().join("containerd.toml");
        fs::write(&config, for_test(&installed)).unwrap();
        let (sock, root) = (self.sock().display().to_string(), self.share().join("containerd").display().to_string());
        ["containerd", "--config", &config.display().to_string(), "--address", &sock, "--root", &root].map(String::from).into()
    }

    /// Starts containerd as `cmd` and waits until it answers.
    fn start_containerd_by(&mut self, mut cmd: Command) {
        let log = fs::File::create(self.share().join("containerd.log")).unwrap();
        let daemon = cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
        self.daemons.push(daemon);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.daemons[0].try_wait().unwrap() {
                panic!("{}: containerd exited early ({status}):\n{}", self.name, self.log("containerd.log"));
            }
            let probe = exec(&mut self.ctr_command(&["--connect-timeout", "1s", "version"]), None, Duration::from_secs(10));
            if matches!(probe, Ok(Out { code: 0, .. })) {
                return;
            }
            assert!(Instant::now() < deadline, "{}: containerd not ready:\n{}", self.name, self.log("containerd.log"));
            thread::sleep(Duration::from_millis(200));
        }
    }

    fn containerd_pid(&self) -> i32 {
        self.daemons[0].id() as i32
    }

    /// containerd's mount namespace (`mnt:[INODE]`): its shims and what they start share it.
    fn mount_namespace(&self) -> String {
        fs::read_link(format!("/proc/{}/ns/mnt", self.containerd_pid())).map(|l| l.display().to_string()).unwrap_or_default()
    }

    fn log(&self, name: &str) -> String {
        fs::read_to_string(self.share().join(name)).unwrap_or_default()
    }

    /// The node's `ctr` on its containerd, namespace [`NS`]; global flags go first in `args`.
    fn ctr_command(&self, args: &[&str]) -> Command {
        let sock = self.sock().to_string_lossy().into_owned();
        self.command(&[&["ctr", "-a", sock.as_str(), "-n", NS], args].concat())
    }

    fn ctr(&self, args: &[&str]) -> Out {
        exec_bounded(&mut self.ctr_command(args), Some(""), NODE_TIMEOUT)
    }

    fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert_eq!(out.code, 0, "{}: ctr {args:?} failed: {out:#?}", self.name);
        out.stdout
    }

    /// `ctr image import` of an OCI tarball made in the dev root.
    fn import(&self, tar: &Path, namespace: &str, platform: &str) {
        let copy = self.share().join(tar.file_name().unwrap());
        fs::copy(tar, &copy).unwrap();
        let (sock, copy) = (self.sock().to_string_lossy().into_owned(), copy.to_string_lossy().into_owned());
        let args = ["ctr", "-a", sock.as_str(), "-n", namespace, "image", "import", "--platform", platform, copy.as_str()];
        let out = exec_bounded(&mut self.command(&args), None, NODE_TIMEOUT);
        assert_eq!(out.code, 0, "{}: ctr image import failed: {out:#?}", self.name);
    }

    /// `ctr run --rm` of `image` in the foreground as container `id`: its exit status is ctr's
    /// (in every ctr version), stdin open with `stdin` written to it.
    fn run_command(&self, id: &str, image: &str, opts: &[&str], args: &[&str]) -> Command {
        let mut cmd = self.ctr_command(&["run", "--rm", "--platform", PLATFORM, "--runtime", RUNTIME]);
        cmd.args(opts).args([image, id]);
        if !args.is_empty() {
            cmd.arg(ENTRYPOINT).args(args);
        }
        cmd
    }

    fn run(&self, id: &str, image: &str, opts: &[&str], args: &[&str], stdin: &str) -> Out {
        exec_bounded(&mut self.run_command(id, image, opts, args), Some(stdin), NODE_TIMEOUT)
    }

    /// (pid, status) of task `id` in `ctr task ls`.
    fn task(&self, id: &str) -> Option<(u32, String)> {
        self.ctr_ok(&["task", "ls"]).lines().skip(1).find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.len() >= 3 && cols[0] == id).then(|| (cols[1].parse().unwrap(), cols[2].to_string()))
        })
    }

    /// Waits for task `id` to run; returns its pid.
    fn running(&self, id: &str, run: &thread::ScopedJoinHandle<Out>) -> u32 {
        let mut pid = 0;
        wait_until(&format!("{id} to run"), Duration::from_secs(60), || {
            // A `ctr run` that already ended (the shim did not start) has nothing to wait for.
            assert!(!run.is_finished(), "{}: ctr run of {id} ended before its task ran", self.name);
            match self.task(id) {
                Some((p, status)) if status == "RUNNING" => {
                    pid = p;
                    true
                }
                _ => false,
            }
        });
        pid
    }

    /// After the containers `ids` are gone: no shim of this containerd, no mount of theirs in
    /// containerd's mount namespace, no cgroup of theirs in any hierarchy.
    fn assert_no_leftovers(&self, ids: &[String], cgroup_parent: &str) {
        let sock = self.sock().to_string_lossy().into_owned();
        wait_until(&format!("{}: the shims to exit", self.name), Duration::from_secs(30), || shims_of(&sock).is_empty());
        // Nor anything a shim started (what a shim's death would orphan): containerd's mount
        // namespace, where shims start, holds the node's daemons alone again, and the node's
        // zygote, which stays by design until it has been idle (src/launch/zygote.rs).
        let deadline = Instant::now() + Duration::from_secs(30);
        let left = loop {
            let mut left = in_mount_namespace(&self.mount_namespace());
            left.retain(|(pid, argv)| !self.daemons.iter().any(|d| d.id() as i32 == *pid) && !is_zygote(argv));
            if left.is_empty() || Instant::now() > deadline {
                break left;
            }
            thread::sleep(Duration::from_millis(100));
        };
        assert!(left.is_empty(), "{}: processes of the shims are left: {left:?}", self.name);
        let mountinfo = format!("/proc/{}/mountinfo", self.containerd_pid());
        let mounts = fs::read_to_string(&mountinfo).unwrap();
        for id in ids {
            assert!(!mounts.contains(id.as_str()), "{}: a mount of {id} is left:\n{mounts}", self.name);
            let left = cgroup_dirs(&format!("{cgroup_parent}/{id}"));
            assert!(left.is_empty(), "{}: cgroups of {id} are left: {left:?}", self.name);
        }
    }
}

/// `out` of a background `ctr run`, printed when it failed other than by a signal: the test may
/// fail on something else first.
fn shown(out: Out) -> Out {
    if (1..128).contains(&out.code) {
        eprintln!("{out:#?}");
    }
    out
}

/// Kills container `.1` if the test fails while it runs, so a scope waiting for its `ctr run`
/// ends at once instead of at that command's timeout.
struct KillOnFailure<'a>(&'a Node, String);

impl Drop for KillOnFailure<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            let _ = exec(&mut self.0.ctr_command(&["task", "kill", "-s", "SIGKILL", &self.1]), None, Duration::from_secs(15));
        }
    }
}

/// The config install.sh wrote, plus what a test in this sandbox needs: the snapshotters a
/// chroot cannot load are off (they make other plugins fail), and for CRI (config version 2 on
/// containerd 1.x) our busybox image as the pause image and no oom_score_adj below the
/// sandbox's own (it lacks CAP_SYS_RESOURCE).
fn for_test(config: &str) -> String {
    let table: toml::Table = config.parse().unwrap_or_else(|e| panic!("install.sh wrote a config TOML cannot parse: {e}\n{config}"));
    let disabled = r#"disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.erofs"]"#;
    let mut lines: Vec<String> = config.lines().filter(|l| !l.trim_start().starts_with("disabled_plugins")).map(String::from).collect();
    // Top-level keys go before the first table.
    let first_table = lines.iter().position(|l| l.trim_start().starts_with('[')).unwrap_or(lines.len());
    lines.insert(first_table, disabled.into());
    if table.get("version").and_then(|v| v.as_integer()) == Some(2) {
        let cri = [
            format!("  sandbox_image = \"{BUSYBOX_IMAGE}\""),
            "  restrict_oom_score_adj = true".into(),
            "  stream_server_address = \"127.0.0.1\"".into(),
            "  stream_server_port = \"0\"".into(),
        ];
        let header = r#"[plugins."io.containerd.grpc.v1.cri"]"#;
        // Into the table if the config has it (Debian's does), else a new table at the end.
        let at = match lines.iter().position(|l| l.trim() == header) {
            Some(at) => at + 1,
            None => {
                lines.extend([String::new(), header.into()]);
                lines.len()
            }
        };
        lines.splice(at..at, cri);
    }
    let text = lines.join("\n") + "\n";
    text.parse::<toml::Table>().unwrap_or_else(|e| panic!("the test's config does not parse: {e}\n{text}"));
    text
}

/// The directories of cgroup `path` that exist, in every v1 hierarchy and the v2 tree.
fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    let path = path.trim_start_matches('/');
    let mut dirs: Vec<PathBuf> = fs::read_dir("/sys/fs/cgroup").unwrap().flatten().map(|e| e.path().join(path)).collect();
    dirs.push(Path::new("/sys/fs/cgroup").join(path));
    dirs.into_iter().filter(|d| d.is_dir()).collect()
}


/// The processes in mount namespace `namespace` (`mnt:[INODE]`).
fn in_mount_namespace(namespace: &str) -> Vec<(i32, Vec<String>)> {
    let same = |pid: i32| fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|l| l.display().to_string() == namespace);
    processes().into_iter().filter(|(pid, _)| same(*pid)).collect()
}

/// rmdir of `paths` (deepest first) in every hierarchy, for what a test made or left.
fn remove_cgroups(paths: &[&str]) {
    for path in paths {
        for dir in cgroup_dirs(path) {
            let _ = fs::remove_dir(dir);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if thread::panicking() {
            for log in ["dockerd.log", "containerd.log"] {
                let text = self.log(log);
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("--- {}: {log} (tail) ---\n{}", self.name, lines[lines.len().saturating_sub(60)..].join("\n"));
            }
        }
        // dockerd (if any) removes its containers; containerd's tasks of ours are deleted.
        if self.daemons.len() > 1 {
            let host = format!("unix://{}", self.share().join("docker.sock").display());
            let ids = exec(&mut self.command(&["docker", "--host", &host, "ps", "-aq"]), None, Duration::from_secs(15));
            for id in ids.map(|o| o.stdout).unwrap_or_default().lines() {
                let _ = exec(&mut self.command(&["docker", "--host", &host, "rm", "-f", id]), None, Duration::from_secs(30));
            }
        }
        if self.daemons.first_mut().is_some_and(|d| matches!(d.try_wait(), Ok(None))) {
            let quiet = |args: &[&str]| exec(&mut self.ctr_command(args), None, Duration::from_secs(15)).map(|o| o.stdout).unwrap_or_default();
            for id in quiet(&["task", "ls", "-q"]).lines() {
                quiet(&["task", "delete", "-f", id]);
            }
            for id in quiet(&["container", "ls", "-q"]).lines() {
                quiet(&["container", "delete", id]);
            }
        }
        let namespace = if self.daemons.is_empty() { String::new() } else { self.mount_namespace() };
        while let Some(mut daemon) = self.daemons.pop() {
            unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
            if wait_timeout(&mut daemon, Duration::from_secs(15)).is_none() {
                let _ = daemon.kill();
                let _ = daemon.wait();
            }
        }
        // Shims outlive containerd by design; ours are the ones given our socket, and what they
        // left is in containerd's mount namespace.
        let sock = self.sock().to_string_lossy().into_owned();
        let ours = processes().into_iter().filter(|(_, argv)| argv.contains(&sock));
        for (pid, _) in ours.chain(if namespace.is_empty() { Vec::new() } else { in_mount_namespace(&namespace) }) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        remove_cgroups(&[&format!("/{NS}"), "/docker"]);
        let dir = format!("{}/", self.dir.path().display());
        for mount in mount_points().iter().rev().filter(|m| m.starts_with(&dir)) {
            let path = std::ffi::CString::new(mount.as_str()).unwrap();
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The ctr suite, on every node

/// install.sh, then through the node's own ctr: hello, args, env, a file of the image, an exit
/// code, stdin, the engine's memory cap and time limit, exec and metrics in a running container,
/// SIGTERM and SIGKILL; afterwards no shim, mount or cgroup of the containers is left; and
/// install.sh --uninstall.
fn ctr_suite(name: &'static str) {
    let mut node = Node::new(name);
    node.install();
    eprintln!("{name}:\n{}", node.versions());
    node.start_containerd();
    node.import(hello_image(), NS, PLATFORM);
    node.import(grow_image(), NS, PLATFORM);
    let mut ids = Vec::new();
    let mut id = |what: &str| {
        ids.push(unique_id(what));
        ids.last().unwrap().clone()
    };

    let out = node.run(&id("hello"), HELLO_IMAGE, &[], &[], "");
    assert_eq!((out.code, out.stdout.as_str()), (0, "Hello from WasmEdge!\n"), "{name}: {out:#?}");
    let out = node.run(&id("args"), HELLO_IMAGE, &[], &["echo", "a", "b c", "--flag"], "");
    assert_eq!((out.code, out.stdout.as_str()), (0, "a b c --flag\n"), "{name}: {out:#?}");
    let out = node.run(&id("env"), HELLO_IMAGE, &["--env", "E2E_NAME=node value"], &["env", "E2E_NAME"], "");
    assert_eq!((out.code, out.stdout.as_str()), (0, "node value\n"), "{name}: {out:#?}");
    let out = node.run(&id("file"), HELLO_IMAGE, &[], &["cat", "/data/greeting.txt"], "");
    assert_eq!((out.code, out.stdout.as_str()), (0, GREETING), "{name}: {out:#?}");
    let out = node.run(&id("exit"), HELLO_IMAGE, &[], &["exit", "42"], "");
    assert_eq!(out.code, 42, "{name}: {out:#?}");
    // One line: ctr never closes the container's stdin.
    let out = node.run(&id("stdin"), HELLO_IMAGE, &[], &["stdin"], "ping\n");
    assert_eq!((out.code, out.stdout.as_str()), (0, "got: ping\n"), "{name}: {out:#?}");

    // The engine caps linear memory at the container's limit: memory.grow fails at 64 MiB, and
    // the container says so (the exit code is the module's own).
    let out = node.run(&id("grow"), GROW_IMAGE, &["--memory-limit", MEMORY_64M], &[], "");
    let refused = "wasmedge: out of memory: the module's memory may not grow past its limit\n";
    assert_eq!((out.code, out.stderr.as_str()), (64, refused), "{name}: {out:#?}");
    let out = node.run(&id("timeout"), HELLO_IMAGE, &["--annotation", "wasmedge.io/time-limit=2s"], &["spin", "600"], "");
    assert_eq!((out.code, out.stderr.as_str()), (124, "wasmedge: time limit of 2s exceeded, module stopped\n"), "{name}: {out:#?}");

    thread::scope(|s| {
        // A running container: its cgroup has the spec's memory limit; exec and metrics reach it;
        // SIGTERM ends the module at once (143).
        let sleeper = id("sleeper");
        let mut cmd = node.run_command(&sleeper, HELLO_IMAGE, &["--memory-limit", "268435456"], &["sleep", "600"]);
        let run = s.spawn(move || shown(exec_bounded(&mut cmd, Some(""), NODE_TIMEOUT)));
        let _kill = KillOnFailure(&node, sleeper.clone());
        let pid = node.running(&sleeper, &run);
        let limit = cgroup_file(pid, "memory", "memory.limit_in_bytes", "memory.max");
        assert_eq!(fs::read_to_string(&limit).unwrap().trim(), "268435456", "{name}: {}", limit.display());
        let exec_out = node.ctr(&["task", "exec", "--exec-id", "e1", &sleeper, ENTRYPOINT, "echo", "from", "exec"]);
        assert_eq!((exec_out.code, exec_out.stdout.as_str()), (0, "from exec\n"), "{name}: {exec_out:#?}");
        let exec_out = node.ctr(&["task", "exec", "--exec-id", "e2", &sleeper, ENTRYPOINT, "exit", "3"]);
        assert_eq!(exec_out.code, 3, "{name}: {exec_out:#?}");
        let metrics = node.ctr_ok(&["task", "metrics", &sleeper]);
        assert!(metrics.contains("memory.usage"), "{name}: {metrics}");
        node.ctr_ok(&["task", "kill", &sleeper]);
        let out = run.join().unwrap();
        assert_eq!(out.code, 143, "{name}: SIGTERM: {out:#?}");

        // A signal the module does not end on (it still serves exec afterwards), then SIGKILL (137).
        let stubborn = id("stubborn");
        let mut cmd = node.run_command(&stubborn, HELLO_IMAGE, &[], &["sleep", "600"]);
        let run = s.spawn(move || shown(exec_bounded(&mut cmd, Some(""), NODE_TIMEOUT)));
        let _kill = KillOnFailure(&node, stubborn.clone());
        node.running(&stubborn, &run);
        node.ctr_ok(&["task", "kill", "-s", "SIGUSR1", &stubborn]);
        let exec_out = node.ctr(&["task", "exec", "--exec-id", "e3", &stubborn, ENTRYPOINT, "echo", "still", "here"]);
        assert_eq!((exec_out.code, exec_out.stdout.as_str()), (0, "still here\n"), "{name}: {exec_out:#?}");
        node.ctr_ok(&["task", "kill", "-s", "SIGKILL", &stubborn]);
        let out = run.join().unwrap();
        assert_eq!(out.code, 137, "{name}: SIGKILL: {out:#?}");
    });

    assert_eq!(node.ctr_ok(&["container", "ls", "-q"]), "", "{name}: containers left");
    node.assert_no_leftovers(&ids, &format!("/{NS}"));
    node.uninstall();
}

#[test]
fn bookworm_node_runs_wasm_containers_through_ctr() {
    ctr_suite("bookworm");
}

#[test]
fn trixie_node_runs_wasm_containers_through_ctr() {
    ctr_suite("trixie");
}

#[test]
fn sid_node_runs_wasm_containers_through_ctr() {
    ctr_suite("sid");
}

// ---------------------------------------------------------------------------------------------
// A systemd-form cgroup path, on every node

/// `ctr run --cgroup SLICE:PREFIX:NAME` as kubelet's systemd driver gives it: the container lands
/// in runc's expansion of it, `a-b.slice` → `a.slice/a-b.slice`, then `PREFIX-NAME.scope`, in
/// every hierarchy, with its memory limit; and the scope is gone afterwards.
fn systemd_cgroup(name: &'static str) {
    let mut node = Node::new(name);
    node.install();
    node.start_containerd();
    node.import(hello_image(), NS, PLATFORM);
    let id = unique_id("scoped");
    let expanded = format!("/e2e.slice/e2e-node.slice/wasmedge-{id}.scope");
    // What this test made: the slices, and what a shim without the mapping may have made.
    struct Cleanup(Vec<String>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            remove_cgroups(&self.0.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
    let _cleanup = Cleanup(vec![expanded.clone(), format!("/e2e-node.slice:wasmedge:{id}"), "/e2e.slice/e2e-node.slice".into(), "/e2e.slice".into()]);

    let cgroup = format!("e2e-node.slice:wasmedge:{id}");
    thread::scope(|s| {
        let mut cmd = node.run_command(&id, HELLO_IMAGE, &["--cgroup", &cgroup, "--memory-limit", "134217728"], &["sleep", "600"]);
        let run = s.spawn(move || shown(exec_bounded(&mut cmd, Some(""), NODE_TIMEOUT)));
        let _kill = KillOnFailure(&node, id.clone());
        let pid = node.running(&id, &run);
        // The process joins its cgroup as it confines itself, after loading its module: on a
        // fresh node that load is the module's first AOT compile.
        let memory_path = || {
            let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            text.lines().find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                (controllers.split(',').any(|c| c == "memory") || controllers.is_empty()).then(|| path.to_string())
            })
        };
        wait_until(&format!("{name}: the container in {expanded}"), Duration::from_secs(120), || memory_path().as_deref() == Some(expanded.as_str()));
        let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        for line in cgroups.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
            // Named v1 hierarchies (name=systemd) hold no resources, nor does the unified one of
            // a host whose controllers are all on v1 (hybrid: `0::` beside them).
            let hybrid_unified = controllers.is_empty() && cgroups.lines().count() > 1;
            if !controllers.starts_with("name=") && !hybrid_unified {
                assert_eq!(path, expanded, "{name}: hierarchy {controllers:?} in:\n{cgroups}");
            }
        }
        let limit = cgroup_file(pid, "memory", "memory.limit_in_bytes", "memory.max");
        assert_eq!(fs::read_to_string(&limit).unwrap().trim(), "134217728", "{name}: {}", limit.display());
        node.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
        assert_eq!(run.join().unwrap().code, 137);
    });
    node.assert_no_leftovers(&[id.clone()], "/e2e.slice/e2e-node.slice");
    assert!(cgroup_dirs(&expanded).is_empty(), "{name}: the scope is left");
}

#[test]
fn bookworm_node_expands_a_systemd_cgroup_path() {
    systemd_cgroup("bookworm");
}

#[test]
fn trixie_node_expands_a_systemd_cgroup_path() {
    systemd_cgroup("trixie");
}

#[test]
fn sid_node_expands_a_systemd_cgroup_path() {
    systemd_cgroup("sid");
}

// ---------------------------------------------------------------------------------------------
// systemd as PID 1: the systemd cgroup driver over D-Bus

/// The bookworm root with systemd (test/nodes/create-systemd.sh) booted by
/// test/nodes/boot-systemd.sh: systemd 252 is PID 1 of new PID, mount and cgroup namespaces whose
/// cgroup root is `/CGROUP` in the host's hierarchies; the shim reaches systemd on its system bus
/// (dbus.socket). Drop kills that PID 1, which ends every process of the node, then
/// removes the node's cgroups (Node's Drop does the rest).
struct SystemdNode {
    node: Node,
    /// boot-systemd.sh, by then unshare: the parent of the node's PID 1.
    boot: Child,
    cgroup: String,
}

impl SystemdNode {
    fn boot(name: &'static str) -> SystemdNode {
        let node = Node::new(name);
        node.install();
        let cgroup = unique_id("e2e-systemd");
        let log = fs::File::create(node.share().join("systemd.log")).unwrap();
        let mut cmd = Command::new(repo().join("test/nodes/boot-systemd.sh"));
        cmd.arg(node.root()).arg(node.share()).arg(&cgroup);
        let boot = cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
        let mut booted = SystemdNode { node, boot, cgroup };
        wait_until("systemd to start as the node's PID 1", Duration::from_secs(60), || {
            assert!(booted.boot.try_wait().unwrap().is_none(), "systemd did not boot:\n{}", booted.node.log("systemd.log"));
            booted.pid1().is_some_and(|pid| fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe.ends_with("systemd")))
                && booted.node.root().join("run/systemd/private").exists()
        });
        let state = exec_bounded(&mut booted.command(&["systemctl", "is-system-running", "--wait"]), None, NODE_TIMEOUT);
        let failed = booted.sh("systemctl --failed --no-pager");
        assert_eq!(state.stdout.trim(), "running", "{name}: systemd booted {state:#?}\n{failed}\n{}", booted.node.log("systemd.log"));
        booted
    }

    /// The node's PID 1 (in the test's PID namespace): unshare's child.
    fn pid1(&self) -> Option<i32> {
        let pid = self.boot.id();
        fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?.split_whitespace().next()?.parse().ok()
    }

    /// `args` in the node's namespaces, beside its systemd.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.pid1().expect("the node's PID 1 is gone"))).args(["--all", "--"]);
        cmd.args(["env", "-i", "HOME=/root", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]).args(args);
        cmd
    }

    /// A shell script in the node's namespaces that must succeed; returns its stdout.
    fn sh(&self, script: &str) -> String {
        let out = exec_bounded(&mut self.command(&["sh", "-c", script]), None, NODE_TIMEOUT);
        assert_eq!(out.code, 0, "{}: `{script}` failed: {out:#?}", self.node.name);
        out.stdout
    }

    /// containerd in a scope of its own, as a node's containerd.service runs.
    fn start_containerd(&mut self) {
        let args = self.node.containerd_args();
        let scoped = [&["systemd-run", "--quiet", "--scope", "--unit=e2e-containerd"][..], &args.iter().map(String::as_str).collect::<Vec<_>>()].concat();
        let cmd = self.command(&scoped);
        self.node.start_containerd_by(cmd);
    }
}

impl Drop for SystemdNode {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("--- {}: systemd ---\n{}", self.node.name, self.node.log("systemd.log"));
            if self.pid1().is_some() {
                let journal = exec(&mut self.command(&["journalctl", "--no-pager", "-n", "60"]), None, Duration::from_secs(15));
                eprintln!("--- {}: journal (tail) ---\n{}", self.node.name, journal.map(|o| o.stdout).unwrap_or_default());
            }
        }
        if let Some(pid) = self.pid1() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // PID 1 is reaped once every process of its namespace is gone.
        if wait_timeout(&mut self.boot, Duration::from_secs(30)).is_none() {
            let _ = self.boot.kill();
            let _ = self.boot.wait();
        }
        for top in cgroup_dirs(&self.cgroup) {
            remove_cgroup_tree(&top);
        }
    }
}

/// rmdir of a cgroup and every cgroup below it, deepest first.
fn remove_cgroup_tree(dir: &Path) {
    for sub in fs::read_dir(dir).into_iter().flatten().flatten().filter(|e| e.path().is_dir()) {
        remove_cgroup_tree(&sub.path());
    }
    let _ = fs::remove_dir(dir);
}

/// A node that systemd runs, as kubelet's systemd cgroup driver expects: a wasm container with
/// cgroupsPath `SLICE:PREFIX:NAME` is systemd's transient scope `PREFIX-NAME.scope` in that slice,
/// with its memory limit, and gone after delete; a name systemd refuses fails the create with
/// systemd's reason, never a cgroup made behind systemd's back.
#[test]
fn bookworm_systemd_node_puts_a_container_in_a_transient_scope() {
    let mut node = SystemdNode::boot("bookworm-systemd");
    node.start_containerd();
    node.node.import(hello_image(), NS, PLATFORM);
    eprintln!("bookworm-systemd: {}", node.sh("systemctl --version | head -1").trim());
    let id = unique_id("scoped");
    let unit = format!("wasmedge-{id}.scope");
    let expanded = format!("/e2e.slice/e2e-node.slice/{unit}");
    let cgroup = format!("e2e-node.slice:wasmedge:{id}");
    let v2 = node.sh("stat -fc %T /sys/fs/cgroup").trim() == "cgroup2fs";
    thread::scope(|s| {
        let mut cmd = node.node.run_command(&id, HELLO_IMAGE, &["--cgroup", &cgroup, "--memory-limit", "134217728"], &["sleep", "600"]);
        let run = s.spawn(move || shown(exec_bounded(&mut cmd, Some(""), NODE_TIMEOUT)));
        let _kill = KillOnFailure(&node.node, id.clone());
        let pid = node.node.running(&id, &run);
        let show = node.sh(&format!("systemctl show {unit} -p ActiveState,Slice,ControlGroup,Delegate,MemoryLimit,MemoryMax"));
        let limit = if v2 { "MemoryMax=134217728" } else { "MemoryLimit=134217728" };
        for want in ["ActiveState=active", "Slice=e2e-node.slice", "Delegate=yes", &format!("ControlGroup={expanded}"), limit] {
            assert!(show.lines().any(|l| l == want), "bookworm-systemd: no {want} in `systemctl show {unit}`:\n{show}");
        }
        // systemd put the process in the scope in the hierarchies it manages (memory, pids and
        // its own; on a hybrid host also the unified one) before the create returned.
        let cgroups = node.sh(&format!("cat /proc/{pid}/cgroup"));
        eprintln!("bookworm-systemd: /proc/{pid}/cgroup of the container:\n{cgroups}");
        for line in cgroups.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
            if ["memory", "pids", "name=systemd", ""].contains(&controllers) {
                assert_eq!(path, expanded, "bookworm-systemd: hierarchy {controllers:?} in:\n{cgroups}");
            }
        }
        let file = if v2 { format!("/sys/fs/cgroup{expanded}/memory.max") } else { format!("/sys/fs/cgroup/memory{expanded}/memory.limit_in_bytes") };
        assert_eq!(node.sh(&format!("cat {file}")).trim(), "134217728", "bookworm-systemd: {file}");
        node.node.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
        assert_eq!(run.join().unwrap().code, 137);
    });
    let sock = node.node.sock().to_string_lossy().into_owned();
    wait_until("bookworm-systemd: the shim to exit", Duration::from_secs(30), || shims_of(&sock).is_empty());
    let show = node.sh(&format!("systemctl show {unit} -p LoadState"));
    assert_eq!(show.trim(), "LoadState=not-found", "bookworm-systemd: systemd still has {unit}");
    let left = node.sh(&format!("ls -d /sys/fs/cgroup/*{expanded} /sys/fs/cgroup{expanded} 2>/dev/null || true"));
    assert_eq!(left, "", "bookworm-systemd: cgroups of {unit} are left");

    // systemd refuses a unit name with a space: the create fails with its reason.
    let bad = unique_id("refused");
    let out = node.node.run(&bad, HELLO_IMAGE, &["--cgroup", "e2e-node.slice:wasmedge:bad name"], &[], "");
    assert_ne!(out.code, 0, "{out:#?}");
    assert!(out.stderr.contains("systemd: starting wasmedge-bad name.scope"), "bookworm-systemd: {out:#?}");
    let left = node.sh("ls -d /sys/fs/cgroup/*/e2e.slice/e2e-node.slice/*bad* /sys/fs/cgroup/e2e.slice/e2e-node.slice/*bad* 2>/dev/null || true");
    assert_eq!(left, "", "bookworm-systemd: a cgroup was made for the refused unit");
}

// ---------------------------------------------------------------------------------------------
// trixie: Docker 26; trixie and sid: a pod through CRI

#[test]
fn trixie_node_runs_wasm_containers_through_docker() {
    let mut node = Node::new("trixie");
    node.install();
    node.start_containerd();
    let share = node.share().display().to_string();
    // Docker's containerd image store (wasi/wasm images), on this node's containerd; no
    // iptables and no bridge in this sandbox.
    fs::write(node.share().join("daemon.json"), r#"{"features": {"containerd-snapshotter": true}}"#).unwrap();
    let log = fs::File::create(node.share().join("dockerd.log")).unwrap();
    let sock = node.sock().to_string_lossy().into_owned();
    let host = format!("unix://{share}/docker.sock");
    let dockerd = [
        "dockerd".into(), "--config-file".into(), format!("{share}/daemon.json"), "--data-root".into(), format!("{share}/docker"),
        "--exec-root".into(), format!("{share}/docker-exec"), "--pidfile".into(), format!("{share}/dockerd.pid"),
        "--host".into(), host.clone(), "--containerd".into(), sock.clone(),
        "--iptables=false".into(), "--ip6tables=false".into(), "--bridge=none".into(),
    ];
    let dockerd: Vec<&str> = dockerd.iter().map(String::as_str).collect();
    let daemon = node.command_beside_containerd(&dockerd).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
    node.daemons.push(daemon);
    let docker = |args: &[&str], stdin: Option<&str>| -> Out {
        exec_bounded(&mut node.command(&[&["docker", "--host", &host], args].concat()), stdin, NODE_TIMEOUT)
    };
    wait_until("dockerd to answer", Duration::from_secs(60), || {
        matches!(exec(&mut node.command(&["docker", "--host", &host, "version"]), None, Duration::from_secs(10)), Ok(Out { code: 0, .. }))
    });
    let version = docker(&["version", "--format", "{{.Client.Version}} {{.Server.Version}}"], None);
    eprintln!("trixie: docker client and server {}", version.stdout.trim());

    let greeting = scratch_dir().join("greeting.txt");
    fs::write(&greeting, GREETING).unwrap();
    let tar = pack_docker(hello_wasm(), DOCKER_IMAGE, &[format!("{}:/data/greeting.txt", greeting.display())]);
    fs::copy(&tar, node.share().join("hello-docker.tar")).unwrap();
    let out = docker(&["load", "-i", &format!("{share}/hello-docker.tar")], None);
    assert_eq!(out.code, 0, "{out:#?}");

    let wasm = ["run", "--rm", "--runtime=io.containerd.wasmedge.v1", "--platform=wasi/wasm"];
    let run = |opts: &[&str], args: &[&str], stdin: Option<&str>| docker(&[&wasm[..], opts, &[DOCKER_IMAGE], args].concat(), stdin);
    let out = run(&[], &[], None);
    assert_eq!((out.code, out.stdout.as_str()), (0, "Hello from WasmEdge!\n"), "{out:#?}");
    let out = run(&["-e", "E2E_NAME=from docker"], &["env", "E2E_NAME"], None);
    assert_eq!((out.code, out.stdout.as_str()), (0, "from docker\n"), "{out:#?}");
    let out = run(&[], &["cat", "/data/greeting.txt"], None);
    assert_eq!((out.code, out.stdout.as_str()), (0, GREETING), "{out:#?}");
    assert_eq!(run(&[], &["exit", "42"], None).code, 42);
    let out = run(&["-i"], &["stdin"], Some("ping\n"));
    assert_eq!((out.code, out.stdout.as_str()), (0, "got: ping\n"), "{out:#?}");

    assert_eq!(docker(&["ps", "-aq"], None).stdout, "", "containers left");
    node.assert_no_leftovers(&[], "/docker");
}

#[test]
fn trixie_node_runs_a_wasm_pod_through_cri() {
    cri_pod("trixie");
}

/// sid's containerd 2.1 with Debian's config of version 2, which containerd migrates.
#[test]
fn sid_node_runs_a_wasm_pod_through_cri() {
    cri_pod("sid");
}

/// A pod on runtime handler `wasmedge` (install.sh's entry) through the node containerd's CRI
/// API: a wasm container that prints and one that fails, their exit codes and log, then the pod
/// stopped and removed, and its shim and cgroups gone.
fn cri_pod(name: &'static str) {
    let mut node = Node::new(name);
    node.install();
    node.start_containerd();
    node.import(&busybox_image(), CRI_NAMESPACE, "linux/amd64");
    node.import(&wasm_image(), CRI_NAMESPACE, "linux/amd64");
    // containerd 1.x drops its CRI plugin (with a warning) when the config's runtimes lack the
    // default runtime: say so rather than "unknown service".
    let plugins = node.ctr_ok(&["plugins", "ls"]);
    let cri_plugin = plugins.lines().find(|l| l.split_whitespace().take(2).collect::<Vec<_>>() == ["io.containerd.grpc.v1", "cri"]);
    let why = node.log("containerd.log").lines().filter(|l| l.contains("failed to load plugin")).collect::<Vec<_>>().join("\n");
    assert!(cri_plugin.is_some_and(|l| l.trim_end().ends_with(" ok")), "{name}: CRI plugin not loaded: {cri_plugin:?}\n{why}");
    let cri = Cri::connect(&node.sock());
    let version: cri::VersionResponse = cri.ok("Version", cri::VersionRequest { version: "v1".into() });
    eprintln!("{name}: CRI {} {} {}", version.runtime_name, version.runtime_version, version.runtime_api_version);
    for image in [BUSYBOX_IMAGE, WASM_IMAGE] {
        wait_until(&format!("CRI to know {image}"), Duration::from_secs(30), || {
            let status: cri::ImageStatusResponse = cri.ok("ImageStatus", cri::ImageStatusRequest { image: Some(cri::ImageSpec { image: image.into() }) });
            status.image.is_some()
        });
    }

    // The node's network; logs in share/, where the test reads them.
    let logs = node.share().join("pod-logs");
    fs::create_dir(&logs).unwrap();
    let cgroup_parent = format!("/e2e-node-cri-{}", std::process::id());
    let mut pod = cri.run_pod(&logs, &cgroup_parent);
    let (namespaces, start) = (pod.namespaces.clone(), |config| pod.start(config));
    let printer = start(container("printer", WASM_IMAGE, &[], &["echo", "hello from a node pod"], &namespaces));
    let failer = start(container("failer", WASM_IMAGE, &[], &["exit", "3"], &namespaces));
    for id in [&printer, &failer] {
        wait_until(&format!("{id} to exit"), Duration::from_secs(60), || cri.status(id).state == cri::CONTAINER_EXITED);
    }
    let status = cri.status(&printer);
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"), "{status:?}");
    assert_eq!(log_messages(Path::new(&status.log_path)), vec!["stdout: hello from a node pod"], "{status:?}");
    let status = cri.status(&failer);
    assert_eq!((status.exit_code, status.reason.as_str()), (3, "Error"), "{status:?}");

    let _: cri::Empty = cri.ok("StopPodSandbox", cri::PodSandboxIdRequest { pod_sandbox_id: pod.id.clone() });
    let _: cri::Empty = cri.ok("RemovePodSandbox", cri::PodSandboxIdRequest { pod_sandbox_id: pod.id.clone() });
    pod.guard.ids.clear();
    node.assert_no_leftovers(&[pod.id.clone(), printer, failer], &cgroup_parent);
}
