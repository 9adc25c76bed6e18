//! Hostile input, end to end: broken and malicious modules, images and specs, each run through a
//! real containerd with `ctr` like any other container. Every case checks the exact exit code and
//! error text, that nothing of the host leaked into the container's output, and then that the
//! shim that ran the case still serves: each case runs in the shim of a long-running "sentinel"
//! container (same `io.kubernetes.cri.sandbox-id`, as the containers of one pod share a shim), and
//! afterwards that shim must be the same process, the sentinel still running, and a next container
//! in it and one in a fresh shim must run. Needs containerd, ctr and root, like test/e2e.rs.

mod common;

use common::*;
use containerd_shim_wasmedge::image::writer::{self, Blob, Format, ImageSpec, Layer, LayerFile};
use oci_spec::image::MediaType;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the hello module prints without arguments.
const HELLO: &str = "Hello from WasmEdge!\n";
const HOSTILE_IMAGE: &str = "docker.io/library/hostile-wasm:test";
const SANDBOX_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";
const TIME_LIMIT_ANNOTATION: &str = "wasmedge.io/time-limit";
const WASM_HANDLER: &str = "run.oci.handler=wasm";
/// 64 MiB, for `ctr run --memory-limit`.
const MEMORY_64M: &str = "67108864";

// ---------------------------------------------------------------------------------------------
// Modules and images

/// images/hostile: membomb, membomb-try, spin, recurse, cat, write, ls.
fn hostile_module() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| example_module("hostile"))
}

fn hostile_image() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| pack(hostile_module(), HOSTILE_IMAGE, &[]))
}

/// `bytes` as /app.wasm of image `docker.io/library/hostile-NAME:test`; returns (tarball, name).
fn module_image(name: &str, bytes: &[u8]) -> (PathBuf, String) {
    let module = scratch_dir().join(format!("hostile-{name}.wasm"));
    fs::write(&module, bytes).unwrap();
    let tag = format!("docker.io/library/hostile-{name}:test");
    (pack(&module, &tag, &[]), tag)
}

fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).unwrap_or_else(|e| panic!("bad WAT in the test: {e}"))
}

/// Deterministic pseudo-random bytes (xorshift64*), so a failure reproduces.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

fn leb128(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// `module` with a custom section of `size` bytes appended: still a valid module.
fn with_custom_section(module: &[u8], size: usize) -> Vec<u8> {
    let name = b"hostile-padding";
    let mut payload = leb128(name.len() as u64);
    payload.extend_from_slice(name);
    let mut out = module.to_vec();
    out.push(0); // custom section
    out.extend(leb128((payload.len() + size) as u64));
    out.extend(payload);
    out.resize(out.len() + size, 0x5a);
    out
}

/// An entry of a hand-made image layer.
enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
}

/// A wasm image (`wasmedge-image`'s writer) with `entries` in a base layer under /app.wasm's
/// layer: the writer itself only writes regular files, an attacker's image has anything.
fn image_with_layer(tag: &str, module: &Path, entries: &[Entry]) -> PathBuf {
    let mut tar = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        match entry {
            Entry::File(path, data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(data.len() as u64);
                tar.append_data(&mut header, path.trim_start_matches('/'), *data).unwrap();
            }
            Entry::Symlink(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                tar.append_link(&mut header, path.trim_start_matches('/'), target).unwrap();
            }
        }
    }
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let layer = Layer {
        blob: Blob::new(MediaType::ImageLayerGzip, gz.finish().unwrap()),
        diff_id: writer::sha256_digest(&tar).to_string(),
    };
    let spec = ImageSpec {
        reference: tag.into(),
        files: vec![LayerFile { path: "/app.wasm".into(), data: fs::read(module).unwrap(), mode: 0o755 }],
        entrypoint: vec!["/app.wasm".into()],
        base_layers: vec![layer],
        ..Default::default()
    };
    let out = scratch_dir().join(format!("{}.tar", tag.rsplit('/').next().unwrap().replace(':', "-")));
    writer::build(&spec).unwrap().save(Format::Oci, &out).unwrap();
    out
}

// ---------------------------------------------------------------------------------------------
// A case: a containerd, and a sentinel whose shim the case runs in

struct Case {
    containerd: Containerd,
    /// The sandbox id the sentinel and the case's containers share, and so their shim.
    group: String,
    sentinel: String,
    shim: i32,
}

impl Case {
    /// A private containerd with hello and `images` imported, and the sentinel running.
    fn new(images: &[&Path]) -> Case {
        let containerd = Containerd::with_hello();
        for image in images {
            containerd.import(image);
        }
        let group = unique_id("pod");
        let sentinel = unique_id("sentinel");
        let annotation = format!("{SANDBOX_ANNOTATION}={group}");
        let started = exec_bounded(
            &mut containerd.run_command(&sentinel, HELLO_IMAGE, &["-d", "--annotation", &annotation], &["sleep", "600"]),
            None,
            CTR_TIMEOUT,
        );
        assert_eq!(started.code, 0, "starting the sentinel failed: {started:#?}");
        let shim = shim_of(&containerd, &sentinel).expect("the sentinel's shim is not running");
        Case { containerd, group, sentinel, shim }
    }

    /// `ctr run --rm IMAGE ID ARGV...` in the sentinel's shim; `argv` is the whole process.args.
    fn run(&self, image: &str, opts: &[&str], argv: &[&str]) -> Out {
        self.run_timed(image, opts, argv).0
    }

    fn run_timed(&self, image: &str, opts: &[&str], argv: &[&str]) -> (Out, Duration) {
        let annotation = format!("{SANDBOX_ANNOTATION}={}", self.group);
        let mut cmd = self.containerd.ctr_command(&["run", "--rm", "--platform", PLATFORM, "--runtime", RUNTIME]);
        cmd.args(["--annotation", &annotation]).args(opts).args([image, &unique_id("hostile")]).args(argv);
        let started = Instant::now();
        let out = exec_bounded(&mut cmd, Some(""), CTR_TIMEOUT);
        eprintln!("ctr run {opts:?} {image} {argv:?} -> {out:#?}");
        (out, started.elapsed())
    }

    /// The case's shim survived and serves: same process, sentinel running, a next container
    /// runs in it and one in a fresh shim; then the sentinel goes and nothing is left.
    fn finish(self) {
        assert_eq!(shim_of(&self.containerd, &self.sentinel), Some(self.shim), "the shim that ran the case is gone");
        let sentinel = self.containerd.task(&self.sentinel).map(|(_, status)| status);
        assert_eq!(sentinel.as_deref(), Some("RUNNING"), "the sentinel container did not survive the case");
        let next = self.run(HELLO_IMAGE, &[], &[]);
        assert_eq!((next.code, next.stdout.as_str()), (0, HELLO), "the case's shim does not serve the next container: {next:#?}");
        let fresh = self.containerd.run(&[], &[]);
        assert_eq!((fresh.code, fresh.stdout.as_str()), (0, HELLO), "a new shim does not serve: {fresh:#?}");

        self.containerd.ctr_ok(&["task", "kill", "-s", "SIGKILL", &self.sentinel]);
        wait_until("the sentinel to stop", Duration::from_secs(30), || {
            self.containerd.task(&self.sentinel).is_some_and(|(_, status)| status == "STOPPED")
        });
        assert_eq!(self.containerd.delete_task(&self.sentinel), 137);
        self.containerd.ctr_ok(&["container", "delete", &self.sentinel]);
        self.containerd.assert_no_leftovers(&self.sentinel);
    }
}

/// The pid of this containerd's shim daemon started for container `first` (the first container
/// of a sandbox: the shim's `-id`; later ones join it by the sandbox id).
fn shim_of(containerd: &Containerd, first: &str) -> Option<i32> {
    let sock = containerd.sock().to_string_lossy().into_owned();
    processes().into_iter().find_map(|(pid, argv)| {
        let is_shim = argv.first().is_some_and(|a| a.ends_with("containerd-shim-wasmedge-v1"));
        let serves = argv.windows(2).any(|w| w[0] == "-id" && w[1] == first) && argv.contains(&sock);
        (is_shim && serves && !argv.iter().any(|a| a == "start" || a == "delete")).then_some(pid)
    })
}

/// The line a container prints when the engine refused its module memory past the cap.
const OUT_OF_MEMORY: &str = "wasmedge: out of memory: the module's memory may not grow past its limit\n";

/// The one line a container's init prints when it fails (ctr passes the container's stderr on).
fn assert_failure(out: &Out, code: i32, stderr: &str) {
    assert_eq!((out.code, out.stdout.as_str(), out.stderr.as_str()), (code, "", stderr), "{out:#?}");
}

/// `ctr run` refused at create: ctr's own error line, ending with the shim's reason.
fn assert_create_refused(out: &Out, reason: &str) {
    let expected = format!("ctr: failed to create shim task: {reason}\n");
    assert_eq!((out.code, out.stdout.as_str(), out.stderr.as_str()), (1, "", expected.as_str()), "{out:#?}");
}

/// Checks that do not stop at the first mismatch, so one run shows every case of a loop.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn failure(&mut self, out: &Out, code: i32, stderr: &str) {
        if (out.code, out.stdout.as_str(), out.stderr.as_str()) != (code, "", stderr) {
            self.0.push(format!("expected {code} and stderr {stderr:?}, got {out:#?}"));
        }
    }

    fn create_refused(&mut self, out: &Out, reason: &str) {
        self.failure(out, 1, &format!("ctr: failed to create shim task: {reason}\n"));
    }

    fn done(self) {
        assert!(self.0.is_empty(), "{} mismatches:\n{}", self.0.len(), self.0.join("\n"));
    }
}

// ---------------------------------------------------------------------------------------------
// Modules that cannot load

#[test]
fn empty_module_fails_to_load_with_126() {
    // No magic, but the image says wasm (architecture wasm), so the engine gets to refuse it.
    let (tar, image) = module_image("empty", b"");
    let case = Case::new(&[&tar]);
    let out = case.run(&image, &[], &["/app.wasm"]);
    assert_failure(&out, 126, "wasmedge: cannot load module: unexpected end\n");
    let out = case.run(&image, &["--annotation", WASM_HANDLER], &["/app.wasm"]);
    assert_failure(&out, 126, "wasmedge: cannot load module: unexpected end\n");
    case.finish();
}

#[test]
fn truncated_module_fails_to_load_with_126() {
    let hello = fs::read(hello_wasm()).unwrap();
    let (tar, image) = module_image("truncated", &hello[..hello.len() / 2]);
    let case = Case::new(&[&tar]);
    let out = case.run(&image, &[], &["/app.wasm"]);
    assert_failure(&out, 126, "wasmedge: cannot load module: length out of bounds\n");
    case.finish();
}

#[test]
fn random_bytes_after_the_wasm_magic_fail_to_load_with_126() {
    let mut bytes = b"\0asm\x01\0\0\0".to_vec();
    bytes.extend(noise(64 * 1024, 0x5eed));
    let (tar, image) = module_image("noise", &bytes);
    let mut bad_version = b"\0asm".to_vec();
    bad_version.extend(noise(4096, 42));
    let (tar2, image2) = module_image("noise-version", &bad_version);
    let case = Case::new(&[&tar, &tar2]);
    let out = case.run(&image, &[], &["/app.wasm"]);
    assert_failure(&out, 126, "wasmedge: cannot load module: malformed section id\n");
    let out = case.run(&image2, &[], &["/app.wasm"]);
    assert_failure(&out, 126, "wasmedge: cannot load module: unknown binary version\n");
    case.finish();
}

#[test]
fn unknown_import_fails_to_load_with_126() {
    let module = wat(r#"(module
        (import "env" "launch_missiles" (func $launch))
        (func (export "_start") call $launch))"#);
    let (tar, image) = module_image("unknown-import", &module);
    let case = Case::new(&[&tar]);
    let out = case.run(&image, &[], &["/app.wasm"]);
    assert_failure(&out, 126, "wasmedge: cannot load module: unknown import\n");
    case.finish();
}

#[test]
fn module_without_start_fails_to_load_with_126() {
    let (tar, image) = module_image("no-start", &wat(r#"(module (func (export "main")))"#));
    let case = Case::new(&[&tar]);
    let out = case.run(&image, &[], &["/app.wasm"]);
    assert_failure(&out, 126, "wasmedge: cannot load module: the module exports no `_start` function\n");
    case.finish();
}

// ---------------------------------------------------------------------------------------------
// Entrypoints that are not there, or not files

#[test]
fn missing_entrypoint_exits_127() {
    let case = Case::new(&[]);
    let out = case.run(HELLO_IMAGE, &[], &["/nope.wasm"]);
    assert_failure(&out, 127, "wasmedge: entrypoint /nope.wasm not found in the container\n");
    let out = case.run(HELLO_IMAGE, &["--annotation", WASM_HANDLER], &["/nope.wasm"]);
    assert_failure(&out, 127, "wasmedge: entrypoint /nope.wasm not found in the container\n");
    case.finish();
}

#[test]
fn directory_as_entrypoint_fails_to_load_with_126() {
    let case = Case::new(&[]);
    let out = case.run(HELLO_IMAGE, &[], &["/data"]);
    assert_failure(&out, 126, "wasmedge: cannot read entrypoint /data: Is a directory (os error 21)\n");
    let out = case.run(HELLO_IMAGE, &["--annotation", WASM_HANDLER], &["/data"]);
    assert_failure(&out, 126, "wasmedge: cannot read entrypoint /data: Is a directory (os error 21)\n");
    case.finish();
}

/// A module that names a global it does not have, the index the call-depth counter gets: it is
/// refused as invalid, not run with a counter it could reset.
#[test]
fn a_forged_depth_counter_is_refused() {
    let (tar, image) = module_image("forged-depth", &wat(r#"(module (func $f (export "_start") i32.const 0 global.set 0 call $f))"#));
    let case = Case::new(&[&tar]);
    let out = case.run(&image, &[], &["/app.wasm"]);
    assert_eq!(out.code, 126, "{out:#?}");
    assert!(out.stderr.starts_with("wasmedge: cannot load module: "), "{out:#?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:#?}");
    case.finish();
}

/// The restricted Pod Security Standard: every capability dropped, and a non-root user.
#[test]
fn all_capabilities_dropped_with_a_non_root_user_runs() {
    let case = Case::new(&[]);
    // ctr's default set, every one dropped (ctr takes no `ALL`).
    let mut opts = vec!["--user", "1000:1000"];
    for cap in [
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
        "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
    ] {
        opts.extend(["--cap-drop", cap]);
    }
    let out = case.run(HELLO_IMAGE, &opts, &[]);
    assert_eq!((out.code, out.stdout.as_str(), out.stderr.as_str()), (0, HELLO, ""), "{out:#?}");
    case.finish();
}

/// `hostUsers: false` as ctr says it (`--uidmap/--gidmap`): root in the container is nobody
/// on the host. A host directory bind-mounted read-write holds a file only the host's root may
/// read and is writable by it alone: the same module that reads it as plain root cannot read it,
/// nor write beside it, as root of a user namespace.
#[test]
fn root_in_a_user_namespace_cannot_reach_the_host_roots_files() {
    let case = Case::new(&[]);
    // ctr remaps the rootfs of the image's linux/amd64 variant, whatever --platform says.
    case.containerd.ctr_ok(&["image", "import", "--all-platforms", hello_image().to_str().unwrap()]);
    let host = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(host.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let secret = host.path().join("secret.txt");
    fs::write(&secret, "the host's secret\n").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let mount = format!("type=bind,src={},dst=/host,options=rbind:rw", host.path().display());

    let plain = case.run(HELLO_IMAGE, &["--mount", &mount], &[ENTRYPOINT, "cat", "/host/secret.txt"]);
    assert_eq!((plain.code, plain.stdout.as_str()), (0, "the host's secret\n"), "without a user namespace root reads it: {plain:#?}");

    let maps = ["--mount", &mount, "--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"];
    let read = case.run(HELLO_IMAGE, &maps, &[ENTRYPOINT, "cat", "/host/secret.txt"]);
    assert_eq!((read.code, read.stdout.as_str()), (1, ""), "{read:#?}");
    assert!(read.stderr.starts_with("hello: cat /host/secret.txt: Permission denied"), "{read:#?}");
    let write = case.run(HELLO_IMAGE, &maps, &[ENTRYPOINT, "write", "/host/planted.txt", "x"]);
    assert_eq!((write.code, write.stdout.as_str()), (1, ""), "{write:#?}");
    assert!(write.stderr.starts_with("hello: write /host/planted.txt: Permission denied"), "{write:#?}");
    assert!(!host.path().join("planted.txt").exists(), "root of the user namespace wrote into the host's directory");
    case.finish();
}

/// An idmapped bind mount (ctr's `idmap` mount option) needs a user namespace: without one it is
/// refused at create, in one line, after containerd has asked the shim's `-info` whether it makes
/// idmapped mounts at all. With one (`--uidmap`), the mount takes the container's mappings: the
/// host root's file, which root of the namespace could not read through a plain bind (see
/// above), is the container root's.
#[test]
fn an_idmapped_mount_takes_the_containers_mappings_and_needs_a_user_namespace() {
    let case = Case::new(&[]);
    case.containerd.ctr_ok(&["image", "import", "--all-platforms", hello_image().to_str().unwrap()]);
    let host = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(host.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let secret = host.path().join("secret.txt");
    fs::write(&secret, "the host's secret\n").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let mount = format!("type=bind,src={},dst=/host,options=rbind:rw:idmap", host.path().display());

    let out = case.run(HELLO_IMAGE, &["--mount", &mount], &[ENTRYPOINT, "cat", "/host/secret.txt"]);
    assert_create_refused(&out, "mount /host: the wasmedge shim idmaps mounts of a container in a user namespace only (linux.namespaces: user)");

    let maps = ["--mount", &mount, "--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"];
    let read = case.run(HELLO_IMAGE, &maps, &[ENTRYPOINT, "cat", "/host/secret.txt"]);
    assert_eq!((read.code, read.stdout.as_str(), read.stderr.as_str()), (0, "the host's secret\n", ""), "{read:#?}");
    case.finish();
}

/// A module whose AOT compile costs LLVM seconds and much memory: thousands of long functions,
/// salted so that no cache has it.
fn compile_bomb() -> Vec<u8> {
    let salt = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u32;
    let mut text = String::from("(module (func (export \"_start\"))");
    for f in 0..1500u32 {
        text.push_str("(func (param i32) (result i32) local.get 0");
        for i in 0..400u32 {
            text.push_str(&format!(" i32.const {} i32.mul i32.const {} i32.xor", salt ^ f ^ i, i));
        }
        text.push(')');
    }
    text.push(')');
    wat(&text)
}

/// The compile sandboxes' cgroups: the children of their parent, in the unified hierarchy or in
/// each v1 one.
fn compile_sandbox_cgroups() -> Vec<PathBuf> {
    let hierarchies = fs::read_dir("/sys/fs/cgroup").unwrap().flatten().map(|e| e.path());
    let parents = hierarchies.chain([PathBuf::from("/sys/fs/cgroup")]).map(|h| h.join("containerd-shim-wasmedge-compile"));
    parents.filter(|p| p.is_dir()).flat_map(|p| fs::read_dir(p).unwrap().flatten().map(|e| e.path()).filter(|c| c.is_dir())).collect()
}

/// The compile of a hostile module stays in its sandbox's bounds (here a second and 64 MiB): it
/// is killed, the module runs in the interpreter, or with `aot_fallback = "fail"` the container
/// fails with the reason; nothing of the sandbox is left and the shim serves on.
#[test]
fn a_compile_bomb_is_bounded_by_the_compile_sandbox() {
    let (tar, image) = module_image("compile-bomb", &compile_bomb());
    let case = Case::new(&[&tar]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("options.toml");
    let bounds = "compile_memory_bytes = 67108864\ncompile_timeout = \"1s\"\n";
    fs::write(&file, bounds).unwrap();
    let out = case.run(&image, &["--runtime-config-path", file.to_str().unwrap()], &["/app.wasm"]);
    assert_eq!((out.code, out.stderr.as_str()), (0, ""), "{out:#?}");
    let log = case.containerd.log();
    assert!(log.contains("AOT compile failed, running in the interpreter: the compile sandbox"), "{log}");

    fs::write(&file, format!("{bounds}aot_fallback = \"fail\"\n")).unwrap();
    let out = case.run(&image, &["--runtime-config-path", file.to_str().unwrap()], &["/app.wasm"]);
    assert_eq!(out.code, 126, "{out:#?}");
    assert!(out.stderr.starts_with("wasmedge: cannot load module: AOT compile failed: the compile sandbox"), "{out:#?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:#?}");
    let left = compile_sandbox_cgroups();
    assert!(left.is_empty(), "compile sandbox cgroups are left: {left:?}");
    case.finish();
}

/// The pids of the `compile` processes serving containers whose AOT cache is `aot`.
fn compile_processes(aot: &Path) -> Vec<i32> {
    let aot = aot.to_string_lossy().into_owned();
    let procs = fs::read_dir("/proc").unwrap().flatten().filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok());
    procs
        .filter(|pid| {
            let argv = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv: Vec<String> = argv.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            argv.get(1).map(String::as_str) == Some(containerd_shim_wasmedge::protocol::COMPILE_ARG)
                && argv.get(2).is_some_and(|options| options.contains(&aot))
        })
        .collect()
}

/// A container killed while its module compiles takes the compile along: nobody waits for it,
/// so its sandbox is killed and nothing is stored (the compile would otherwise run on for as
/// long as its bound allows).
#[test]
fn a_container_killed_during_its_compile_stops_the_compile() {
    let (tar, image) = module_image("killed-compile", &compile_bomb());
    let case = Case::new(&[&tar]);
    let dir = tempfile::tempdir().unwrap();
    let aot = dir.path().join("aot");
    let file = dir.path().join("options.toml");
    fs::write(&file, format!("aot_dir = {:?}\ncompile_timeout = \"10m\"\n", aot.to_str().unwrap())).unwrap();
    let id = unique_id("hostile");
    let annotation = format!("{SANDBOX_ANNOTATION}={}", case.group);
    let mut cmd = case.containerd.ctr_command(&["run", "-d", "--platform", PLATFORM, "--runtime", RUNTIME]);
    cmd.args(["--annotation", &annotation, "--runtime-config-path", file.to_str().unwrap(), &image, &id, "/app.wasm"]);
    let started = exec_bounded(&mut cmd, None, CTR_TIMEOUT);
    assert_eq!(started.code, 0, "{started:#?}");
    wait_until("the compile of the module to start", Duration::from_secs(60), || !compile_processes(&aot).is_empty());
    let compilers = compile_processes(&aot);

    case.containerd.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    wait_until("the container to stop", Duration::from_secs(30), || {
        case.containerd.task(&id).is_some_and(|(_, status)| status == "STOPPED")
    });
    assert_eq!(case.containerd.delete_task(&id), 137);
    case.containerd.ctr_ok(&["container", "delete", &id]);
    wait_until("the compile to stop", Duration::from_secs(60), || compile_processes(&aot).is_empty());
    let stored: Vec<_> = fs::read_dir(&aot).unwrap().flatten().filter(|e| !e.file_name().to_string_lossy().starts_with('.')).collect();
    assert!(stored.is_empty(), "the compile of a killed container ran on and stored {stored:?}");
    // Its sandbox's cgroup (named after the compile process) went with it.
    let left = compile_sandbox_cgroups();
    let ours: Vec<_> = left.iter().filter(|p| compilers.iter().any(|pid| p.file_name().unwrap().to_string_lossy().starts_with(&format!("{pid}-")))).collect();
    assert!(ours.is_empty(), "the compile sandbox's cgroup is left: {ours:?}");
    case.finish();
}

/// Eight containers of one new module start at once: one compiles it, the seven others wait for
/// its entry and load it, and the cache holds it once with no temporary file left.
#[test]
fn concurrent_first_starts_of_one_module_compile_it_once() {
    let hello = fs::read(hello_wasm()).unwrap();
    // Salted in its padding: no cache has it.
    let salt = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos().to_le_bytes();
    let mut module = with_custom_section(&hello, salt.len());
    let at = module.len() - salt.len();
    module[at..].copy_from_slice(&salt);
    let (tar, image) = module_image("first-starts", &module);
    let case = Case::new(&[&tar]);
    let outs: Vec<Out> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..8).map(|_| s.spawn(|| case.run(&image, &[], &["/app.wasm"]))).collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for out in &outs {
        assert_eq!((out.code, out.stdout.as_str(), out.stderr.as_str()), (0, HELLO, ""), "{out:#?}");
    }
    let log = case.containerd.log();
    let loads: Vec<&str> = log.lines().filter(|l| l.contains("span load") && l.contains("bytes=")).collect();
    let module_len = fs::metadata(scratch_dir().join("hostile-first-starts.wasm")).unwrap().len();
    let ours: Vec<&&str> = loads.iter().filter(|l| l.contains(&format!("bytes={module_len}\""))).collect();
    assert_eq!(ours.len(), 8, "{loads:#?}");
    assert_eq!(ours.iter().filter(|l| l.contains("aot=compiled")).count(), 1, "{ours:#?}");
    assert_eq!(ours.iter().filter(|l| l.contains("aot=hit")).count(), 7, "{ours:#?}");
    let aot = Path::new(containerd_shim_wasmedge::engine::DEFAULT_AOT_DIR);
    let temporary: Vec<_> = fs::read_dir(aot).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-")).collect();
    assert!(temporary.is_empty(), "temporary files left: {temporary:?}");
    case.finish();
}

// ---------------------------------------------------------------------------------------------
// Size, memory, time, stack

/// The module is read and loaded by the confined process, so its bytes count against the
/// container's memory: a 100 MB module runs under 512 MiB, and under 64 MiB the kernel stops it
/// (137) while the shim serves on.
#[test]
fn hundred_megabyte_module_runs_within_the_containers_memory() {
    let hello = fs::read(hello_wasm()).unwrap();
    let (tar, image) = module_image("100mb", &with_custom_section(&hello, 100 << 20));
    let case = Case::new(&[&tar]);
    let (out, took) = case.run_timed(&image, &["--memory-limit", "536870912"], &["/app.wasm"]);
    assert_eq!((out.code, out.stdout.as_str(), out.stderr.as_str()), (0, HELLO, ""), "{out:#?}");
    eprintln!("the 100 MB module ran in {took:?}");
    let out = case.run(&image, &["--memory-limit", MEMORY_64M], &["/app.wasm"]);
    assert_eq!((out.code, out.stdout.as_str()), (137, ""), "{out:#?}");
    case.finish();
}

#[test]
fn memory_bomb_under_a_64_mib_limit_hits_the_engine_cap_first() {
    // The cap must be the container's limit, exactly.
    let grow = wat(GROW_WAT);
    let (tar, grow_image) = module_image("grow", &grow);
    let case = Case::new(&[&tar, hostile_image()]);
    let out = case.run(&grow_image, &["--memory-limit", MEMORY_64M], &["/app.wasm"]);
    assert_failure(&out, 64, OUT_OF_MEMORY);

    // A Rust program filling 1 MiB blocks: the allocator's failure aborts it (a trap), and the
    // kernel's OOM killer (137) must not have come first.
    let out = case.run(HOSTILE_IMAGE, &["--memory-limit", MEMORY_64M], &["/app.wasm", "membomb"]);
    assert_failure(
        &out,
        134,
        &format!(
            "memory allocation of 1048576 bytes failed\n\
             note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n\
             {OUT_OF_MEMORY}\
             wasmedge: module trapped: unreachable\n"
        ),
    );

    // The same program noticing the failure gets less than its limit and carries on; the
    // notice still says the cap refused it memory.
    let out = case.run(HOSTILE_IMAGE, &["--memory-limit", MEMORY_64M], &["/app.wasm", "membomb-try"]);
    assert_eq!((out.code, out.stderr.as_str()), (0, OUT_OF_MEMORY), "{out:#?}");
    let mib: u32 = out.stdout.trim().strip_prefix("allocation failed after ").and_then(|s| s.strip_suffix(" MiB")).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{out:#?}"));
    assert!((32..64).contains(&mib), "got {mib} MiB under a 64 MiB limit");
    case.finish();
}

#[test]
fn infinite_loop_under_a_2s_limit_exits_124() {
    let (tar, image) = module_image("loop", &wat(r#"(module (func (export "_start") (loop $forever (br $forever))))"#));
    let case = Case::new(&[&tar, hostile_image()]);
    let (out, took) = case.run_timed(&image, &["--annotation", &format!("{TIME_LIMIT_ANNOTATION}=2s")], &["/app.wasm"]);
    assert_failure(&out, 124, "wasmedge: time limit of 2s exceeded, module stopped\n");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(10), "stopped after {took:?}");

    let (out, took) =
        case.run_timed(HOSTILE_IMAGE, &["--annotation", &format!("{TIME_LIMIT_ANNOTATION}=1500ms")], &["/app.wasm", "spin"]);
    assert_failure(&out, 124, "wasmedge: time limit of 1.5s exceeded, module stopped\n");
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(10), "stopped after {took:?}");
    case.finish();
}

/// `call $f` alone: WasmEdge's AOT compiler would make it a jump to itself, an endless loop.
const SELF_CALL: &str = r#"(module (func $f (export "_start") call $f))"#;
/// Recursion that grows the native stack: the call is no tail call.
const DEEP_CALLS: &str = r#"(module (global $g (mut i32) (i32.const 0))
  (func $f (param i32) (call $f (i32.add (local.get 0) (i32.const 1))) (global.set $g (local.get 0)))
  (func (export "_start") (call $f (i32.const 0))))"#;
const CALL_STACK_EXHAUSTED: &str = "wasmedge: module trapped: call stack exhausted: more than 50000 nested calls\n";

#[test]
fn unbounded_recursion_ends_only_its_own_container() {
    let (tar, image) = module_image("recursion", &wat(SELF_CALL));
    let case = Case::new(&[&tar, hostile_image()]);
    // The time limit is only the backstop, should the trap not come.
    let out = case.run(&image, &["--annotation", &format!("{TIME_LIMIT_ANNOTATION}=5s")], &["/app.wasm"]);
    assert_failure(&out, 134, CALL_STACK_EXHAUSTED);
    // Rust keeps its frames in linear memory: the stack pointer runs off the bottom of it.
    let out = case.run(HOSTILE_IMAGE, &[], &["/app.wasm", "recurse"]);
    assert_failure(&out, 134, "wasmedge: module trapped: out of bounds memory access\n");
    case.finish();
}

#[test]
fn unbounded_recursion_traps_with_134() {
    let images = [module_image("recursion", &wat(SELF_CALL)), module_image("deep-calls", &wat(DEEP_CALLS))];
    let case = Case::new(&images.iter().map(|(tar, _)| tar.as_path()).collect::<Vec<_>>());
    let annotation = format!("{SANDBOX_ANNOTATION}={}", case.group);
    let outs: Vec<_> = images
        .iter()
        .map(|(_, image)| {
            let mut cmd = case.containerd.ctr_command(&["run", "--rm", "--platform", PLATFORM, "--runtime", RUNTIME]);
            let id = unique_id("recursion");
            cmd.args(["--annotation", &annotation, image, &id, "/app.wasm"]);
            let out = exec(&mut cmd, Some(""), Duration::from_secs(20));
            if out.is_err() {
                // ctr was killed: stop what it left running, so the sentinel's shim can go at the end.
                case.containerd.quiet_ctr(&["task", "kill", "-s", "SIGKILL", &id]);
                wait_until("the stuck container to stop", Duration::from_secs(30), || {
                    case.containerd.task(&id).is_none_or(|(_, status)| status == "STOPPED")
                });
                case.containerd.quiet_ctr(&["task", "delete", &id]);
                case.containerd.quiet_ctr(&["container", "delete", &id]);
            }
            out
        })
        .collect();
    case.finish();
    for out in outs {
        let out = out.unwrap_or_else(|out| panic!("still running after 20s: {out:#?}"));
        assert_failure(&out, 134, CALL_STACK_EXHAUSTED);
    }
}

// ---------------------------------------------------------------------------------------------
// The host's files

/// A file on the host that no container may read: (path, unique content).
fn host_secret() -> (PathBuf, String) {
    let content = format!("host secret {} {:?}\n", std::process::id(), Instant::now());
    let path = scratch_dir().join("host-secret.txt");
    fs::write(&path, &content).unwrap();
    (path, content)
}

/// The host's own /etc/shadow lines, to make sure none shows up in a container's output.
fn assert_nothing_of_the_host(out: &Out, secret: &str) {
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(!said.contains(secret.trim()), "the host's secret leaked: {out:#?}");
    let shadow = fs::read_to_string("/etc/shadow").unwrap_or_default();
    for line in shadow.lines().filter(|l| l.len() > 4) {
        assert!(!said.contains(line), "the host's /etc/shadow leaked: {out:#?}");
    }
}

#[test]
fn dot_dot_paths_never_reach_the_host() {
    let (secret_path, secret) = host_secret();
    let case = Case::new(&[hostile_image()]);
    // The secret, as seen from the container's rootfs (…/io.containerd.runtime.v2.task/NS/ID/rootfs).
    let secret_abs = secret_path.display().to_string();
    let secret_rel = format!("{}{}", "../".repeat(16), secret_abs.trim_start_matches('/'));
    let mut checks = Checks::default();
    for (path, reason) in [
        ("../../../../etc/shadow", "Operation not permitted (os error 63)"),
        ("/../../../../etc/shadow", "Operation not permitted (os error 63)"),
        ("/etc/shadow", "No such file or directory (os error 44)"),
        (&secret_rel, "Operation not permitted (os error 63)"),
        (&secret_abs, "No such file or directory (os error 44)"),
    ] {
        let out = case.run(HOSTILE_IMAGE, &[], &["/app.wasm", "cat", path]);
        assert_nothing_of_the_host(&out, &secret);
        checks.failure(&out, 1, &format!("hostile: cat {path}: {reason}\n"));
    }
    // All the module sees at / is the image and the spec's mounts.
    let out = case.run(HOSTILE_IMAGE, &[], &["/app.wasm", "ls", "/"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "app.wasm dev run\n"), "{out:#?}");
    let out = case.run(HOSTILE_IMAGE, &[], &["/app.wasm", "ls", "/.."]);
    assert_nothing_of_the_host(&out, &secret);
    checks.failure(&out, 1, "hostile: ls /..: Operation not permitted (os error 63)\n");
    checks.done();
    case.finish();
}

#[test]
fn symlinks_in_the_image_to_host_paths_stay_inside_the_container() {
    let (secret_path, secret) = host_secret();
    let host_module = scratch_dir().join("host-module.wasm");
    fs::copy(hello_wasm(), &host_module).unwrap(); // would print Hello if it ran
    let abs = |p: &Path| p.display().to_string();
    let rel = |p: &Path| format!("{}{}", "../".repeat(16), abs(p).trim_start_matches('/'));
    let (secret_abs, secret_rel) = (abs(&secret_path), rel(&secret_path));
    let (module_abs, module_rel) = (abs(&host_module), rel(&host_module));
    let scratch = abs(&scratch_dir());
    let image_tag = "docker.io/library/hostile-symlinks:test";
    let tar = image_with_layer(
        image_tag,
        hostile_module(),
        &[
            Entry::File("/etc/motd", b"inside the image\n"),
            Entry::Symlink("/motd", "etc/motd"),
            Entry::Symlink("/motd-abs", "/etc/motd"),
            Entry::Symlink("/secret", &secret_abs),
            Entry::Symlink("/secret-rel", &secret_rel),
            Entry::Symlink("/host-dir", &scratch),
            Entry::Symlink("/entry.wasm", &module_abs),
            Entry::Symlink("/entry-rel.wasm", &module_rel),
        ],
    );
    let case = Case::new(&[&tar]);

    // A relative symlink that stays inside the image works.
    let out = case.run(image_tag, &[], &["/app.wasm", "cat", "/motd"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "inside the image\n"), "{out:#?}");
    let mut checks = Checks::default();
    // WasmEdge's WASI refuses every absolute symlink, even one that would stay inside.
    let out = case.run(image_tag, &[], &["/app.wasm", "cat", "/motd-abs"]);
    checks.failure(&out, 1, "hostile: cat /motd-abs: Operation not permitted (os error 63)\n");
    // Ones that point at the host do not reach it.
    for (path, reason) in [
        ("/secret", "Operation not permitted (os error 63)"),
        ("/secret-rel", "Operation not permitted (os error 63)"),
        ("/host-dir/host-secret.txt", "Operation not permitted (os error 63)"),
    ] {
        let out = case.run(image_tag, &[], &["/app.wasm", "cat", path]);
        assert_nothing_of_the_host(&out, &secret);
        checks.failure(&out, 1, &format!("hostile: cat {path}: {reason}\n"));
    }
    let out = case.run(image_tag, &[], &["/app.wasm", "ls", "/host-dir"]);
    assert_nothing_of_the_host(&out, &secret);
    checks.failure(&out, 1, "hostile: ls /host-dir: Operation not permitted (os error 63)\n");
    // As the entrypoint, the host's module must not run.
    for entry in ["/entry.wasm", "/entry-rel.wasm"] {
        let out = case.run(image_tag, &[], &[entry]);
        assert!(!out.stdout.contains("Hello"), "the host's module ran: {out:#?}");
        checks.failure(&out, 127, &format!("wasmedge: entrypoint {entry} not found in the container\n"));
    }
    checks.done();
    case.finish();
}

/// A module that creates `path` (relative) through the root's preopen and exits with the WASI
/// errno (0 when it worked). wasi-libc would pick the longest matching preopen, this goes past a
/// mount's own read-only preopen: only the kernel is left to refuse. The root's fd is found by
/// its name, as WasmEdge numbers preopens in no fixed order.
fn create_through_the_root(path: &str) -> Vec<u8> {
    wat(&format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{path}")
  ;; the first preopen named "/" (prestat at 512, its name's length at 516, the name at 520);
  ;; no such preopen exits 99
  (func $root (result i32) (local $fd i32)
    (local.set $fd (i32.const 3))
    (loop $next
      (if (call $prestat (local.get $fd) (i32.const 512)) (then (call $exit (i32.const 99))))
      (if (i32.eq (i32.load (i32.const 516)) (i32.const 1))
        (then
          (drop (call $name (local.get $fd) (i32.const 520) (i32.const 1)))
          (if (i32.eq (i32.load8_u (i32.const 520)) (i32.const 47)) (then (return (local.get $fd))))))
      (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
      (br $next))
    (unreachable))
  ;; oflags 1 = creat, rights 64 = fd_write; the new fd goes to address 8
  (func (export "_start")
    (call $exit (call $open (call $root) (i32.const 0) (i32.const 16) (i32.const {len})
      (i32.const 1) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 8)))))"#,
        len = path.len()
    ))
}

/// WASI's errnos as exit codes of [`create_through_the_root`].
const ERRNO_ROFS: i32 = 69;
const ERRNO_NOTCAPABLE: i32 = 76;

#[test]
fn writes_to_read_only_mounts_and_rootfs_fail_and_leave_the_host_alone() {
    let (tar, creator) = module_image("create-new", &create_through_the_root("new.txt"));
    let case = Case::new(&[hostile_image(), &tar]);
    let host = tempfile::tempdir().unwrap();
    let mut checks = Checks::default();
    let ro = format!("type=bind,src={},dst=/mnt,options=rbind:ro", host.path().display());
    let out = case.run(HOSTILE_IMAGE, &["--mount", &ro], &["/app.wasm", "write", "/mnt/out.txt", "x"]);
    checks.failure(&out, 1, "hostile: write /mnt/out.txt: Capabilities insufficient (os error 76)\n");
    assert!(!host.path().join("out.txt").exists(), "the write reached the host");

    // A read-only root is a read-only preopen: WASI refuses before the kernel would, also
    // through the preopen's fd itself.
    let out = case.run(HOSTILE_IMAGE, &["--read-only"], &["/app.wasm", "write", "/new.txt", "x"]);
    checks.failure(&out, 1, "hostile: write /new.txt: Capabilities insufficient (os error 76)\n");
    let out = case.run(&creator, &["--read-only"], &["/app.wasm"]);
    checks.failure(&out, ERRNO_NOTCAPABLE, "");
    // The spec's tmpfs (ctr's /run) stays writable under it.
    let out = case.run(HOSTILE_IMAGE, &["--read-only"], &["/app.wasm", "write", "/run/new.txt", "x"]);
    if (out.code, out.stdout.as_str()) != (0, "wrote /run/new.txt\n") {
        checks.0.push(format!("the tmpfs under a read-only root is not writable: {out:#?}"));
    }
    checks.done();

    // The same write to a read-write mount works: the refusals above are the mounts' doing.
    let rw = format!("type=bind,src={},dst=/mnt,options=rbind:rw", host.path().display());
    let out = case.run(HOSTILE_IMAGE, &["--mount", &rw], &["/app.wasm", "write", "/mnt/out.txt", "x"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "wrote /mnt/out.txt\n"), "{out:#?}");
    assert_eq!(fs::read_to_string(host.path().join("out.txt")).unwrap(), "x");
    case.finish();
}

/// `ro` is recursive: a volume's own submounts are read-only in the container too, even to a
/// module that goes past the volume's read-only preopen.
#[test]
fn a_read_only_volume_makes_its_submounts_read_only() {
    let (tar, creator) = module_image("create-in-submount", &create_through_the_root("mnt/sub/new.txt"));
    let case = Case::new(&[hostile_image(), &tar]);
    // On the host: the volume, with a writable directory mounted at its `sub`.
    let (volume, submount) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sub = volume.path().join("sub");
    fs::create_dir(&sub).unwrap();
    let none: Option<&str> = None;
    nix::mount::mount(Some(submount.path()), &sub, none, nix::mount::MsFlags::MS_BIND, none).unwrap();

    let mut checks = Checks::default();
    let ro = format!("type=bind,src={},dst=/mnt,options=rbind:ro", volume.path().display());
    let out = case.run(HOSTILE_IMAGE, &["--mount", &ro], &["/app.wasm", "write", "/mnt/sub/out.txt", "x"]);
    checks.failure(&out, 1, "hostile: write /mnt/sub/out.txt: Capabilities insufficient (os error 76)\n");
    let out = case.run(&creator, &["--mount", &ro], &["/app.wasm"]);
    checks.failure(&out, ERRNO_ROFS, "");
    // The control: read-write, the same module creates its file.
    let rw = format!("type=bind,src={},dst=/mnt,options=rbind:rw", volume.path().display());
    let out = case.run(&creator, &["--mount", &rw], &["/app.wasm"]);
    checks.failure(&out, 0, "");
    let created = fs::read_dir(submount.path()).unwrap().map(|e| e.unwrap().file_name()).collect::<Vec<_>>();
    nix::mount::umount2(&sub, nix::mount::MntFlags::MNT_DETACH).unwrap();
    checks.done();
    assert_eq!(created, ["new.txt"], "only the read-write run may create a file in the submount");
    case.finish();
}

/// A mount destination through a symlink, of the image or of a volume mounted before it, is
/// refused: nothing is made or mounted where the symlink points. There is no separate check
/// to race: the destination is opened component by component, refusing symlinks, and the mount
/// goes onto that fd; so a co-tenant swapping a directory for a symlink at any time meets this
/// same refusal, which the cases here hit deterministically.
#[test]
fn mount_destinations_through_symlinks_are_refused() {
    let (host, volume, source) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::os::unix::fs::symlink(host.path(), volume.path().join("link")).unwrap();
    let image_tag = &HOSTILE_IMAGE.replace("-wasm:", "-mount-symlinks:");
    let host_path = host.path().display().to_string();
    let tar = image_with_layer(image_tag, hostile_module(), &[Entry::Symlink("/evil", &host_path), Entry::Symlink("/evil-rel", "../../../../../../..")]);
    let case = Case::new(&[&tar]);
    let bind = |dst: &str| format!("type=bind,src={},dst={dst},options=rbind:rw", source.path().display());
    let first = format!("type=bind,src={},dst=/vol,options=rbind:rw", volume.path().display());
    let mut checks = Checks::default();
    for (mounts, dest) in [
        (vec![bind("/evil/x")], "/evil/x"),
        (vec![bind("/evil")], "/evil"),
        (vec![bind("/evil-rel/tmp")], "/evil-rel/tmp"),
        (vec![first.clone(), bind("/vol/link/x")], "/vol/link/x"),
    ] {
        let opts: Vec<&str> = mounts.iter().flat_map(|m| ["--mount", m.as_str()]).collect();
        let out = case.run(image_tag, &opts, &["/app.wasm", "ls", "/"]);
        checks.failure(&out, 125, &format!("wasmedge: container setup failed: mount destination {dest} goes through a symlink\n"));
    }
    checks.done();
    assert_eq!(fs::read_dir(host.path()).unwrap().count(), 0, "a mount point was made on the host");
    assert!(!mount_points().iter().any(|m| m.starts_with(&host_path)), "something is mounted on the host");
    // The volume itself still mounts, symlink and all.
    let out = case.run(image_tag, &["--mount", &first], &["/app.wasm", "ls", "/vol"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "link\n"), "{out:#?}");
    case.finish();
}

// ---------------------------------------------------------------------------------------------
// Specs and options

#[test]
fn bad_time_limit_annotations_are_refused_at_create() {
    let case = Case::new(&[hostile_image()]);
    for (value, reason) in [
        ("soon", "annotation wasmedge.io/time-limit=soon: \"soon\" is not a duration like 30s or 500ms: cannot parse float from empty string"),
        ("-1s", "annotation wasmedge.io/time-limit=-1s: \"-1s\" is not a duration like 30s or 500ms: cannot parse float from empty string"),
        ("3 days", "annotation wasmedge.io/time-limit=3 days: \"3 days\" has an unknown unit (use ms, s, m or h)"),
    ] {
        let out = case.run(HOSTILE_IMAGE, &["--annotation", &format!("{TIME_LIMIT_ANNOTATION}={value}")], &["/app.wasm", "spin"]);
        assert_create_refused(&out, reason);
    }
    case.finish();
}

#[test]
fn huge_time_limit_annotation_is_refused_at_create() {
    let case = Case::new(&[hostile_image()]);
    let mut outcomes = Vec::new();
    for value in ["99999999999999999999s", "1e400s"] {
        let annotation = format!("{TIME_LIMIT_ANNOTATION}={value}");
        let mut cmd = case.containerd.ctr_command(&["run", "--rm", "--platform", PLATFORM, "--runtime", RUNTIME]);
        cmd.args(["--annotation", &format!("{SANDBOX_ANNOTATION}={}", case.group), "--annotation", &annotation]);
        cmd.args([HOSTILE_IMAGE, &unique_id("huge"), "/app.wasm", "spin"]);
        outcomes.push((value, exec(&mut cmd, Some(""), CTR_TIMEOUT)));
    }
    eprintln!("{outcomes:#?}");
    // First whether the shim lived through it, then what ctr was told.
    case.finish();
    for (value, outcome) in outcomes {
        let out = outcome.unwrap_or_else(|out| panic!("ctr run with {value} got no answer in {CTR_TIMEOUT:?}: {out:#?}"));
        // The wording is the lead's to choose; the annotation and its value must lead it.
        let prefix = format!("ctr: failed to create shim task: annotation wasmedge.io/time-limit={value}: ");
        assert!(out.code == 1 && out.stderr.starts_with(&prefix) && out.stderr.trim_end().lines().count() == 1, "{out:#?}");
    }
}

/// ctr's default spec (`ctr oci spec`) for a container of the hostile module at `rootfs`, in
/// the case's shim: to be broken by the caller and passed with `ctr run --config`.
fn base_spec(case: &Case, rootfs: &Path) -> serde_json::Value {
    let spec = case.containerd.ctr_ok(&["oci", "spec"]);
    let mut spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
    spec["process"]["args"] = serde_json::json!(["/app.wasm", "ls", "/"]);
    spec["process"]["terminal"] = serde_json::json!(false);
    spec["root"] = serde_json::json!({"path": rootfs, "readonly": false});
    spec["annotations"] = serde_json::json!({SANDBOX_ANNOTATION: case.group});
    spec
}

impl Case {
    /// `ctr run --rm --config FILE ID`: the whole spec comes from the file (no image). The
    /// spec gets the container's own cgroup, as ctr gives one to an image's container.
    fn run_config(&self, spec: &serde_json::Value) -> (Out, String) {
        let id = unique_id("config");
        let mut spec = spec.clone();
        spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{NAMESPACE}/{id}"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        fs::write(&file, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
        let mut cmd = self.containerd.ctr_command(&["run", "--rm", "--runtime", RUNTIME, "--config"]);
        cmd.arg(&file).arg(&id);
        let out = exec_bounded(&mut cmd, Some(""), CTR_TIMEOUT);
        eprintln!("ctr run --config {spec} -> {out:#?}");
        (out, id)
    }
}

type Breaker = Box<dyn Fn(&mut serde_json::Value)>;

/// A rootfs directory with the hostile module at /app.wasm, for `ctr run --config`.
fn hostile_rootfs() -> tempfile::TempDir {
    let rootfs = tempfile::tempdir().unwrap();
    fs::copy(hostile_module(), rootfs.path().join("app.wasm")).unwrap();
    rootfs
}

#[test]
fn malformed_config_json_is_refused_with_the_reason() {
    let case = Case::new(&[]);
    let rootfs = hostile_rootfs();
    // The spec as given works (the shim makes the mount points of ctr's /dev and /run tmpfs):
    // what follows is each one thing broken. Expected texts name the container as {id}.
    let (out, _) = case.run_config(&base_spec(&case, rootfs.path()));
    assert_eq!((out.code, out.stdout.as_str()), (0, "app.wasm dev run\n"), "{out:#?}");

    let cases: Vec<(&str, Breaker, i32, &str)> = vec![
        ("no process", Box::new(|s| drop(s.as_object_mut().unwrap().remove("process"))), 1, "config.json has no process"),
        ("empty args", Box::new(|s| s["process"]["args"] = serde_json::json!([])), 1, "config.json: process.args is empty: no entrypoint"),
        (
            "negative memory limit",
            Box::new(|s| s["linux"]["resources"]["memory"] = serde_json::json!({"limit": -5})),
            1,
            "setting limits on cgroup /test/{id}: Other: set mem limit: unable to write to a control group file \
             memory.limit_in_bytes, value -5 caused by: Os { code: 22, kind: InvalidInput, message: \"Invalid argument\" }",
        ),
        (
            "mount escaping the rootfs",
            Box::new(|s| {
                let escape = serde_json::json!({"destination": "/../../../../../../tmp/escaped", "type": "tmpfs", "source": "tmpfs"});
                s["mounts"].as_array_mut().unwrap().push(escape)
            }),
            125,
            "wasmedge: container setup failed: mount destination /../../../../../../tmp/escaped leaves the rootfs\n",
        ),
        (
            "relative cwd",
            Box::new(|s| s["process"]["cwd"] = serde_json::json!("nowhere/x")),
            125,
            "wasmedge: container setup failed: working directory nowhere/x does not exist: No such file or directory (os error 2)\n",
        ),
        (
            "missing cwd",
            Box::new(|s| s["process"]["cwd"] = serde_json::json!("/nowhere")),
            125,
            "wasmedge: container setup failed: working directory /nowhere does not exist: No such file or directory (os error 2)\n",
        ),
    ];
    let mut checks = Checks::default();
    for (what, break_it, code, reason) in cases {
        let mut spec = base_spec(&case, rootfs.path());
        break_it(&mut spec);
        eprintln!("--- {what}");
        let (out, id) = case.run_config(&spec);
        let reason = reason.replace("{id}", &id);
        if code == 1 {
            checks.create_refused(&out, &reason);
        } else {
            checks.failure(&out, code, &reason);
        }
    }
    assert!(!Path::new("/tmp/escaped").exists(), "a mount escaped the rootfs");
    checks.done();
    case.finish();
}

#[test]
fn config_json_the_shim_cannot_parse_is_refused_with_what_is_wrong() {
    let case = Case::new(&[]);
    let rootfs = hostile_rootfs();
    let mut checks = Checks::default();
    let cases: Vec<(Breaker, &str)> = vec![
        (Box::new(|s| s["linux"]["namespaces"] = serde_json::json!([{"type": "bogus"}])), "bogus"),
        (Box::new(|s| s["process"]["rlimits"] = serde_json::json!([{"type": "RLIMIT_BOGUS", "hard": 1, "soft": 1}])), "RLIMIT_BOGUS"),
        (Box::new(|s| s["process"]["capabilities"]["bounding"] = serde_json::json!(["CAP_BOGUS"])), "CAP_BOGUS"),
    ];
    for (break_it, culprit) in cases {
        let mut spec = base_spec(&case, rootfs.path());
        break_it(&mut spec);
        let (out, _) = case.run_config(&spec);
        let clear = out.code == 1
            && out.stderr.starts_with("ctr: failed to create shim task: malformed config.json: ")
            && out.stderr.contains(culprit)
            && out.stderr.trim_end().lines().count() == 1;
        if !clear {
            checks.0.push(format!("no clear reason naming {culprit}: {out:#?}"));
        }
    }
    checks.done();
    case.finish();
}

#[test]
fn malformed_runtime_options_are_refused_with_the_reason() {
    let case = Case::new(&[hostile_image()]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("options.toml");
    let with_options = |body: &[u8]| {
        fs::write(&file, body).unwrap();
        case.run(HOSTILE_IMAGE, &["--runtime-config-path", file.to_str().unwrap()], &["/app.wasm", "ls", "/"])
    };
    let mut checks = Checks::default();
    for (body, first_line) in [
        (&b"this is = = not toml\n"[..], "malformed runtime options: TOML parse error at line 1, column 6"),
        (b"time_limit = 30\n", "malformed runtime options: TOML parse error at line 1, column 14"),
        (b"colour = \"blue\"\n", "malformed runtime options: TOML parse error at line 1, column 1"),
    ] {
        let out = with_options(body);
        let got = out.stderr.lines().next().unwrap_or_default();
        if out.code != 1 || !got.starts_with(&format!("ctr: failed to create shim task: {first_line}:")) {
            checks.0.push(format!("expected `{first_line}` first: {out:#?}"));
        }
    }
    let out = with_options(b"time_limit = \"soon\"\n");
    checks.create_refused(&out, "malformed runtime options: time_limit: \"soon\" is not a duration like 30s or 500ms: cannot parse float from empty string");
    let out = with_options(b"\x00\x01\x02binary\xff");
    checks.create_refused(&out, &format!("reading runtime options {}: stream did not contain valid UTF-8", file.display()));
    let missing = dir.path().join("missing.toml");
    let out = case.run(HOSTILE_IMAGE, &["--runtime-config-path", missing.to_str().unwrap()], &["/app.wasm", "ls", "/"]);
    checks.create_refused(&out, &format!("reading runtime options {}: No such file or directory (os error 2)", missing.display()));
    checks.done();

    // A good file's time limit is the default for containers without the annotation.
    fs::write(&file, "time_limit = \"1s\"\n").unwrap();
    let (out, took) = case.run_timed(HOSTILE_IMAGE, &["--runtime-config-path", file.to_str().unwrap()], &["/app.wasm", "spin"]);
    assert_failure(&out, 124, "wasmedge: time limit of 1s exceeded, module stopped\n");
    assert!(took < Duration::from_secs(10), "stopped after {took:?}");
    // The annotation overrides it.
    let (out, _) = case.run_timed(
        HOSTILE_IMAGE,
        &["--runtime-config-path", file.to_str().unwrap(), "--annotation", &format!("{TIME_LIMIT_ANNOTATION}=2s")],
        &["/app.wasm", "spin"],
    );
    assert_failure(&out, 124, "wasmedge: time limit of 2s exceeded, module stopped\n");
    case.finish();
}

#[test]
fn runtime_option_errors_are_one_line() {
    let case = Case::new(&[hostile_image()]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("options.toml");
    fs::write(&file, "time_limit = 30\n").unwrap();
    let out = case.run(HOSTILE_IMAGE, &["--runtime-config-path", file.to_str().unwrap()], &["/app.wasm", "ls", "/"]);
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{out:#?}");
    assert!(out.stderr.starts_with("ctr: failed to create shim task: malformed runtime options: "), "{out:#?}");
    case.finish();
}

// ---------------------------------------------------------------------------------------------
// The zygote

const ZYGOTE_SOCKET: &str = "/run/containerd-wasmedge/zygote.sock";

fn is_dead(pid: i32) -> bool {
    state_and_parent(pid).is_none_or(|(state, _)| state == 'Z')
}

/// Asks this node's zygotes to retire (SIGTERM: it gives up its socket), so that the next container
/// starts a fresh one.
fn retire_zygotes() {
    for pid in zygotes() {
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    wait_until("the zygotes to give up their socket", Duration::from_secs(30), || !Path::new(ZYGOTE_SOCKET).exists());
}

/// Starts `sleep 600` in the background as container `id`; returns its pid.
fn start_sleeper(containerd: &Containerd, id: &str) -> i32 {
    let out = exec_bounded(&mut containerd.run_command(id, HELLO_IMAGE, &["-d"], &["sleep", "600"]), None, CTR_TIMEOUT);
    assert_eq!(out.code, 0, "starting {id} failed: {out:#?}");
    containerd.task(id).expect("the task is not listed").0 as i32
}

fn remove_container(containerd: &Containerd, id: &str) {
    containerd.ctr_ok(&["container", "delete", id]);
}

#[test]
fn containers_of_a_killed_zygote_are_killed_and_reported_and_a_new_zygote_serves() {
    const SECRET: &str = "Authorization=Bearer zygote-test-token";
    let containerd = Containerd::start_with(config_toml, &[("OTEL_EXPORTER_OTLP_HEADERS", SECRET)]);
    containerd.import(hello_image());
    retire_zygotes();
    let ids: Vec<String> = (0..3).map(|_| unique_id("zygote-load")).collect();
    let pids: Vec<i32> = ids.iter().map(|id| start_sleeper(&containerd, id)).collect();
    let zygote = state_and_parent(pids[0]).unwrap().1;
    assert!(zygotes().contains(&zygote), "container {} is no child of a zygote", pids[0]);
    assert!(pids.iter().all(|&pid| state_and_parent(pid).unwrap().1 == zygote), "the containers have several parents");

    // The shim's environment reaches neither the zygote nor the containers.
    let environ = |pid: i32| String::from_utf8_lossy(&fs::read(format!("/proc/{pid}/environ")).unwrap()).into_owned();
    let shim = shim_of(&containerd, &ids[0]).expect("the shim of the first container");
    assert!(environ(shim).contains(SECRET), "the test's secret did not reach the shim");
    for pid in [zygote, pids[0]] {
        assert!(!environ(pid).contains("OTEL_"), "process {pid} got the shim's environment: {}", environ(pid));
    }

    unsafe { libc::kill(zygote, libc::SIGKILL) };
    for (id, &pid) in ids.iter().zip(&pids) {
        wait_until(&format!("container {id} ({pid}) to die"), Duration::from_secs(60), || is_dead(pid));
        wait_until(&format!("task {id} to stop"), Duration::from_secs(60), || {
            containerd.task(id).is_some_and(|(_, status)| status == "STOPPED")
        });
        assert_eq!(containerd.delete_task(id), 137, "the exit status of {id}");
        remove_container(&containerd, id);
    }

    let next = containerd.run(&[], &[]);
    assert_eq!((next.code, next.stdout.as_str()), (0, HELLO), "the next container does not run: {next:#?}");
    let id = unique_id("zygote-next");
    let pid = start_sleeper(&containerd, &id);
    let parent = state_and_parent(pid).unwrap().1;
    assert!(parent != zygote && zygotes().contains(&parent), "the next container's parent {parent} is no new zygote");
    containerd.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    wait_until("the last container to stop", Duration::from_secs(30), || {
        containerd.task(&id).is_some_and(|(_, status)| status == "STOPPED")
    });
    assert_eq!(containerd.delete_task(&id), 137);
    remove_container(&containerd, &id);
}

/// A shim killed while its container runs takes the container with it: the zygote sees the
/// shim's connection close and kills the container, so no container runs on that nobody can
/// stop or report; the next container runs.
#[test]
fn a_container_whose_shim_is_killed_is_killed_too() {
    let containerd = Containerd::start_with(config_toml, &[]);
    containerd.import(hello_image());
    let id = unique_id("shim-lost");
    let pid = start_sleeper(&containerd, &id);
    let shim = shim_of(&containerd, &id).expect("the container's shim");
    assert!(zygotes().contains(&state_and_parent(pid).unwrap().1), "container {pid} is no child of a zygote");
    unsafe { libc::kill(shim, libc::SIGKILL) };
    wait_until(&format!("container {id} ({pid}) to die with its shim"), Duration::from_secs(30), || is_dead(pid));
    // containerd cleans up after a dead shim by itself (the shim binary's `delete`).
    let _ = containerd.ctr(&["task", "delete", "--force", &id]);
    remove_container(&containerd, &id);
    let next = containerd.run(&[], &[]);
    assert_eq!((next.code, next.stdout.as_str()), (0, HELLO), "the next container does not run: {next:#?}");
}

/// A zygote of another build (played by python) answers the hello with its own build; the shim
/// must not use it, but replace it with a zygote of its own.
const OTHER_BUILD_ZYGOTE: &str = r#"
import json, os, socket, struct, sys
path = sys.argv[1]
os.makedirs(os.path.dirname(path), exist_ok=True)
server = socket.socket(socket.AF_UNIX)
server.bind(path)
server.listen()
print("ready", flush=True)
held = []
hello = json.dumps({"protocol": 1, "build": "0.0.0 another-build"}).encode()
while True:
    conn, _ = server.accept()
    conn.sendall(struct.pack("<I", len(hello)) + hello)
    held.append(conn)
"#;

#[test]
fn a_zygote_of_another_build_is_replaced() {
    let containerd = Containerd::with_hello();
    retire_zygotes();
    let mut fake = std::process::Command::new("python3")
        .args(["-c", OTHER_BUILD_ZYGOTE, ZYGOTE_SOCKET])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(fake.stdout.take().unwrap()), &mut ready).unwrap();
    assert_eq!(ready, "ready\n");
    let before = zygotes();

    let id = unique_id("zygote-replaced");
    let pid = start_sleeper(&containerd, &id);
    let status = wait_timeout(&mut fake, Duration::from_secs(60));
    assert_eq!(status.map(code_of), Some(128 + libc::SIGTERM), "the zygote of another build was not asked to go");
    let parent = state_and_parent(pid).unwrap().1;
    assert!(zygotes().contains(&parent) && !before.contains(&parent), "container {pid}'s parent {parent} is no new zygote");
    containerd.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    wait_until("the container to stop", Duration::from_secs(30), || {
        containerd.task(&id).is_some_and(|(_, status)| status == "STOPPED")
    });
    assert_eq!(containerd.delete_task(&id), 137);
    remove_container(&containerd, &id);
}
