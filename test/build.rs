//! End-to-end tests of the build helper: each example under images/<language>/ is built from
//! source by `wasmedge-image build`, imported into a private containerd, run through the shim,
//! and its output compared. Also: the compile cache, compile errors, unknown languages, `run`
//! and `inspect`. Needs containerd, ctr, root and the toolchains (the first test installs what
//! is missing with `wasmedge-image toolchains`, from the package registries). `make test` runs
//! it inside the dev root.
//!
//! Compiles go to a cache of this test binary, emptied once per run so every example is really
//! compiled; the prepared toolchains (JavaScript runtime, Python layer) are the machine's, so
//! only a machine's first run pays for them.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Bound of a build; generous for a machine's first (toolchain installs, runtime builds).
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);
/// Bound of one container run: the first run of a module AOT-compiles it (CPython: minutes).
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
const ORDERS: &str = "linus 2 1012.74\ngrace 1 189.00\nada 2 89.48\ntotal 1291.22\n";
const WORDFREQ: &str = "the 4\ndog 3\nfox 3\n";
const PRIMES: &str = "9592 primes below 100000, the largest is 99991\n";
const ORDERS_TABLE: &str = "customer      orders    total
----------  --------  -------
linus              2  1012.74
grace              1   189.00
ada                2    89.48
";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn scratch() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("build");
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// This run's compile cache of the examples, emptied on first use: each example is compiled.
fn cache_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch().join("cache");
        let _ = fs::remove_dir_all(&dir);
        dir
    })
}

/// The compile cache of the other tests, apart so they do not turn an example's build into a hit.
fn aux_cache_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch().join("cache-aux");
        let _ = fs::remove_dir_all(&dir);
        dir
    })
}

/// `wasmedge-image toolchains` once per test binary: installs what is missing, prepares the
/// JavaScript runtime and the Python layer. Idempotent and quick when all is there.
fn toolchains_ready() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let started = Instant::now();
        let out = exec_bounded(Command::new(IMAGE_TOOL).arg("toolchains"), None, BUILD_TIMEOUT);
        assert_eq!(out.code, 0, "wasmedge-image toolchains failed:\n{}", out.stderr);
        eprintln!("toolchains ready in {:.1}s", started.elapsed().as_secs_f64());
    });
}

/// `wasmedge-image ARGS... --cache-dir CACHE`, run in the repository.
fn image_tool(args: &[&str], cache: &Path) -> Out {
    let mut cmd = Command::new(IMAGE_TOOL);
    cmd.args(args).arg("--cache-dir").arg(cache).current_dir(repo());
    exec_bounded(&mut cmd, None, BUILD_TIMEOUT)
}

/// The greeting file every example reads as /data/greeting.txt.
fn greeting_file() -> String {
    let path = scratch().join("greeting.txt");
    fs::write(&path, GREETING).unwrap();
    format!("{}:/data/greeting.txt", path.display())
}

/// The image's entrypoint, as `inspect --json` reports it: ctr replaces the whole argv, so
/// arguments go after it.
fn entrypoint_of(tar: &Path) -> Vec<String> {
    let out = exec_bounded(Command::new(IMAGE_TOOL).args(["inspect", "--json"]).arg(tar), None, CTR_TIMEOUT);
    assert_eq!(out.code, 0, "inspect failed: {out:#?}");
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    serde_json::from_value(report["images"][0]["entrypoint"].clone()).unwrap()
}

/// `ctr run --rm` of `image` with `args` after `entrypoint`, stdin open with `stdin` written.
fn run(containerd: &Containerd, image: &str, entrypoint: &[String], opts: &[&str], args: &[&str], stdin: &str) -> Out {
    let mut cmd = containerd.ctr_command(&["run", "--rm", "--platform", PLATFORM, "--runtime", RUNTIME]);
    cmd.args(opts).arg(image).arg(unique_id("build"));
    if !args.is_empty() {
        cmd.args(entrypoint).args(args);
    }
    exec_bounded(&mut cmd, Some(stdin), RUN_TIMEOUT)
}

/// Builds `src` (relative to the repo) with `--lang`-free detection, imports it and checks the
/// commands every example answers, plus its realistic ones (`(args, stdout)`), which include
/// the use of its dependency where it has one.
fn check_example(src: &str, hello: &str, data: &[&str], realistic: &[(&[&str], &str)]) {
    toolchains_ready();
    let lang = src.split('/').nth(1).unwrap();
    let tag = format!("docker.io/library/example-{lang}:test");
    let tar = scratch().join(format!("example-{lang}.tar"));
    let mut args = vec!["build", src, "--tag", &tag, "--out", tar.to_str().unwrap()];
    let greeting = greeting_file();
    let data: Vec<String> = data.iter().map(|d| format!("{}/{d}", repo().display())).collect();
    for file in std::iter::once(&greeting).chain(&data) {
        args.extend(["--file", file]);
    }
    let started = Instant::now();
    let built = image_tool(&args, cache_dir());
    assert_eq!(built.code, 0, "building {src} failed:\n{}", built.stderr);
    assert!(built.stderr.contains("cache miss"), "{}", built.stderr);
    eprintln!(
        "{src}: built in {:.1}s, image {} KB",
        started.elapsed().as_secs_f64(),
        fs::metadata(&tar).unwrap().len() >> 10
    );

    let containerd = Containerd::start();
    containerd.import(&tar);
    let entry = entrypoint_of(&tar);
    let check = |opts: &[&str], args: &[&str], stdin: &str, code: i32, stdout: &str| {
        let started = Instant::now();
        let out = run(&containerd, &tag, &entry, opts, args, stdin);
        assert_eq!((out.code, out.stdout.as_str()), (code, stdout), "{src} {args:?}: {out:#?}");
        eprintln!("{src} {args:?}: {:.2}s", started.elapsed().as_secs_f64());
    };
    check(&[], &[], "", 0, hello);
    check(&[], &["echo", "a", "b c", "--flag"], "", 0, "a b c --flag\n");
    check(&["--env", "EXAMPLE_NAME=wasm value"], &["env", "EXAMPLE_NAME"], "", 0, "wasm value\n");
    check(&[], &["stdin"], "ping\n", 0, "got: ping\n");
    check(&[], &["cat", "/data/greeting.txt"], "", 0, GREETING);
    check(&[], &["exit", "42"], "", 42, "");
    for (args, expected) in realistic {
        check(&[], args, "", 0, expected);
    }
}

#[test]
fn rust_example_runs_through_the_shim() {
    check_example(
        "images/rust",
        "Hello from Rust!\n",
        &["images/rust/text.txt:/data/text.txt"],
        &[(&["wordfreq", "/data/text.txt"], WORDFREQ), (&["json", r#"{"b": [1, 2], "a": "x"}"#], "{\"a\":\"x\",\"b\":[1,2]}\n")],
    );
}

#[test]
fn c_example_runs_through_the_shim() {
    check_example("images/c", "Hello from C!\n", &[], &[(&["primes", "100000"], PRIMES)]);
}

#[test]
fn cpp_example_runs_through_the_shim() {
    check_example("images/cpp", "Hello from C++!\n", &["images/cpp/text.txt:/data/text.txt"], &[(&["wordfreq", "/data/text.txt"], WORDFREQ)]);
}

#[test]
fn go_example_runs_through_the_shim() {
    check_example("images/go", "Hello from Go!\n", &["images/go/orders.json:/data/orders.json"], &[(&["orders", "/data/orders.json"], ORDERS)]);
}

#[test]
fn javascript_example_runs_through_the_shim() {
    // A project directory: package.json names app.js; its dependency, slugify, is installed from
    // npm by its package-lock.json and bundled.
    check_example(
        "images/javascript",
        "Hello from JavaScript!\n",
        &["images/javascript/orders.json:/data/orders.json"],
        &[(&["orders", "/data/orders.json"], ORDERS), (&["slug", "Hello, Wasm World!"], "hello-wasm-world\n")],
    );
}

#[test]
fn typescript_example_runs_through_the_shim() {
    // A project directory: package.json names src/main.ts, which imports ./orders; orders.json
    // is data and lands in /app beside the bundle.
    // Its dependency, ms, is installed from npm by its package-lock.json and bundled.
    check_example(
        "images/typescript",
        "Hello from TypeScript!\n",
        &[],
        &[(&["orders", "/app/orders.json"], ORDERS), (&["ms", "1.5h"], "5400000\n"), (&["ms", "90000"], "2m\n")],
    );
}

#[test]
fn assemblyscript_example_runs_through_the_shim() {
    // Detected by asconfig.json; asc and the WASI shim are the pinned ones from npm.
    check_example(
        "images/assemblyscript",
        "Hello from AssemblyScript!\n",
        &[],
        &[(&["primes", "100000"], PRIMES)],
    );
}

#[test]
fn python_example_runs_through_the_shim() {
    // main.py imports orders.py; the directory is the program, orders.json included.
    // Its dependency, tabulate, is a pure wheel from PyPI (requirements.txt) in a layer of its own.
    check_example(
        "images/python",
        "Hello from Python!\n",
        &[],
        &[(&["orders", "/app/orders.json"], ORDERS), (&["table", "/app/orders.json"], ORDERS_TABLE)],
    );
}

#[test]
fn second_build_is_a_cache_hit() {
    toolchains_ready();
    let cache = tempfile::tempdir().unwrap();
    let tar = scratch().join("cache-hit.tar");
    let args = ["build", "images/c", "--tag", "cache-hit:test", "--out", tar.to_str().unwrap()];
    let first = image_tool(&args, cache.path());
    assert_eq!(first.code, 0, "{first:#?}");
    assert!(first.stderr.contains("cache miss: c "), "{}", first.stderr);
    let second = image_tool(&args, cache.path());
    assert_eq!(second.code, 0, "{second:#?}");
    assert!(second.stderr.contains("cache hit: c "), "{}", second.stderr);
    assert!(!second.stderr.contains("compiled"), "a hit must not compile: {}", second.stderr);
    // Same sources, same image, down to the digest.
    assert_eq!(first.stdout, second.stdout);

    let forced = image_tool(&[&args[..], &["--no-cache"]].concat(), cache.path());
    assert_eq!(forced.code, 0, "{forced:#?}");
    assert!(forced.stderr.contains("--no-cache: c "), "{}", forced.stderr);
    assert_eq!(first.stdout, forced.stdout, "the build is reproducible");

    // Another source is another key.
    let other = image_tool(&["build", "images/cpp", "--tag", "cache-hit:test", "--out", tar.to_str().unwrap()], cache.path());
    assert!(other.stderr.contains("cache miss: c++ "), "{}", other.stderr);
}

/// Runs `cmd` directly (as a user would) and returns its stderr: what the build must pass on.
fn direct_stderr(cmd: &mut Command) -> String {
    let out = exec_bounded(cmd, None, BUILD_TIMEOUT);
    assert_ne!(out.code, 0, "the broken source compiled: {out:#?}");
    out.stderr
}

#[test]
fn compile_errors_are_reported_verbatim_and_leave_no_image() {
    toolchains_ready();
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, &str, Command)> = vec![
        (
            "broken.c",
            "int main(void) {\n    return undefined_thing;\n}\n",
            {
                let mut c = Command::new("clang");
                c.args(["--target=wasm32-wasi", "-O2", "-fsyntax-only", "broken.c"]);
                c
            },
        ),
        (
            "broken.go",
            "package main\n\nfunc main() {\n\tundefinedThing()\n}\n",
            {
                let mut c = Command::new("go");
                c.args(["build", "-o", "/dev/null", "broken.go"]).env("GOOS", "wasip1").env("GOARCH", "wasm");
                c
            },
        ),
        (
            "broken.ts",
            "const x: number = ;\n",
            {
                let mut c = Command::new("esbuild");
                c.args(["broken.ts", "--log-level=warning"]);
                c
            },
        ),
        (
            "broken.rs",
            "fn main() {\n    let x: u32 = \"text\";\n}\n",
            {
                let mut c = Command::new("rustc");
                c.args(["--edition", "2021", "--target", "wasm32-wasip1", "--emit=metadata", "-o", "/dev/null", "broken.rs"]);
                c
            },
        ),
    ];
    for (name, text, mut direct) in cases {
        fs::write(dir.path().join(name), text).unwrap();
        let expected = direct_stderr(direct.current_dir(dir.path()));
        // The first diagnostic line (file:line: error...) as the compiler itself prints it.
        let line = expected
            .lines()
            .find(|l| l.to_lowercase().contains("error") || l.contains(name))
            .unwrap_or_else(|| panic!("{name}: no error line in {expected:?}"))
            .trim()
            .to_string();
        let tar = dir.path().join(format!("{name}.tar"));
        let cache = dir.path().join("cache");
        let mut cmd = Command::new(IMAGE_TOOL);
        cmd.args(["build", name, "--tag", "broken:test", "--out"])
            .arg(&tar)
            .arg("--cache-dir")
            .arg(&cache)
            .current_dir(dir.path());
        let out = exec_bounded(&mut cmd, None, BUILD_TIMEOUT);
        assert_ne!(out.code, 0, "{name}: a broken build succeeded: {out:#?}");
        assert!(out.stderr.contains(&line), "{name}: {line:?} is not in the build's stderr:\n{}", out.stderr);
        assert!(out.stdout.is_empty(), "{name}: {out:#?}");
        assert!(!tar.exists(), "{name}: a failed build left {}", tar.display());
        // Nothing half-written was cached either.
        let entries = fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
        assert_eq!(entries, 0, "{name}: a failed build was cached");
    }
}

#[test]
fn unknown_language_is_refused_with_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("hello.cob"), "DISPLAY 'HELLO'.\n").unwrap();
    let known = "rust (rs), c, c++ (cpp), go (golang), javascript (js), typescript (ts), assemblyscript (as), python (py), wasm";
    let tar = dir.path().join("x.tar");
    for args in [&["--lang", "cobol"][..], &[]] {
        let mut cmd = Command::new(IMAGE_TOOL);
        cmd.args(["build", "hello.cob", "--tag", "x:y", "--out"]).arg(&tar).args(args).current_dir(dir.path());
        let out = exec_bounded(&mut cmd, None, CTR_TIMEOUT);
        assert_ne!(out.code, 0, "{out:#?}");
        assert!(out.stderr.contains(known), "the known languages are not listed: {}", out.stderr);
        assert!(!tar.exists());
    }
    let out = exec_bounded(
        Command::new(IMAGE_TOOL).args(["build", "hello.cob", "--lang", "cobol", "--out", "x.tar"]).current_dir(dir.path()),
        None,
        CTR_TIMEOUT,
    );
    assert!(out.stderr.contains("unknown language \"cobol\""), "{}", out.stderr);
}

#[test]
fn run_builds_imports_and_returns_the_exit_code() {
    toolchains_ready();
    let containerd = Containerd::start();
    let tool_run = |target: &str, args: &[&str], stdin: &str| {
        let mut cmd = Command::new(IMAGE_TOOL);
        cmd.arg("run")
            .arg("--address")
            .arg(containerd.sock())
            .args(["--namespace", NAMESPACE, "--tag", "docker.io/library/run-js:test", "--cache-dir"])
            .arg(aux_cache_dir())
            .arg(target)
            .args(args)
            .current_dir(repo());
        exec_bounded(&mut cmd, Some(stdin), RUN_TIMEOUT)
    };
    // From source: build, import, run; only the module writes to stdout.
    let out = tool_run("images/javascript/app.js", &["echo", "through", "run"], "");
    assert_eq!((out.code, out.stdout.as_str()), (0, "through run\n"), "{out:#?}");
    assert!(out.stderr.contains("wasmedge-image: running docker.io/library/run-js:test"), "{}", out.stderr);
    let out = tool_run("images/javascript/app.js", &["exit", "7"], "");
    assert_eq!(out.code, 7, "{out:#?}");
    assert!(out.stderr.contains("cache hit"), "{}", out.stderr);
    // By name, once imported: the entrypoint comes from the image in containerd.
    let out = tool_run("docker.io/library/run-js:test", &["stdin"], "from the terminal\n");
    assert_eq!((out.code, out.stdout.as_str()), (0, "got: from the terminal\n"), "{out:#?}");
    let out = tool_run("run-js:test", &[], "");
    assert_eq!((out.code, out.stdout.as_str()), (0, "Hello from JavaScript!\n"), "{out:#?}");
}

#[test]
fn inspect_shows_layers_entrypoint_and_why_wasm() {
    toolchains_ready();
    let tar = scratch().join("inspect-python.tar");
    let built = image_tool(&["build", "images/python", "--tag", "inspect-py:test", "--out", tar.to_str().unwrap()], aux_cache_dir());
    assert_eq!(built.code, 0, "{built:#?}");
    let out = exec_bounded(Command::new(IMAGE_TOOL).args(["inspect", "--json"]).arg(&tar), None, CTR_TIMEOUT);
    assert_eq!(out.code, 0, "{out:#?}");
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let image = &report["images"][0];
    assert_eq!(image["name"], "docker.io/library/inspect-py:test");
    assert_eq!(image["platform"], "wasi/wasm");
    assert_eq!(image["entrypoint"], serde_json::json!(["/python/python.wasm", "/app/main.py"]));
    assert_eq!(image["wasm"], true);
    assert!(image["why"].as_str().unwrap().contains("compat-smart"), "{image:#}");
    let layers = image["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "interpreter layer + dependency layer + program layer: {image:#}");
    let paths = |i: usize| -> Vec<String> {
        layers[i]["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(paths(0), ["/python/lib/python311.zip", "/python/python.wasm"]);
    assert!(paths(1).contains(&"/python/deps/tabulate/__init__.py".to_string()), "{:?}", paths(1));
    assert!(paths(2).contains(&"/app/main.py".to_string()), "{:?}", paths(2));

    // The same from containerd, by name, as text.
    let containerd = Containerd::start();
    containerd.import(&tar);
    let out = exec_bounded(
        Command::new(IMAGE_TOOL)
            .arg("inspect")
            .arg("--address")
            .arg(containerd.sock())
            .args(["--namespace", NAMESPACE, "inspect-py:test"]),
        None,
        CTR_TIMEOUT,
    );
    assert_eq!(out.code, 0, "{out:#?}");
    for line in [
        "image:       docker.io/library/inspect-py:test",
        "platform:    wasi/wasm",
        "entrypoint:  [\"/python/python.wasm\",\"/app/main.py\"]",
        "env:         PYTHONHOME=/python",
        "/python/python.wasm (19.4 MiB)",
        "wasm:        yes: annotation module.wasm.image/variant=compat-smart and a .wasm entrypoint",
    ] {
        assert!(out.stdout.contains(line), "{line:?} missing in:\n{}", out.stdout);
    }
}

#[test]
fn precompile_makes_the_first_start_a_cache_hit() {
    toolchains_ready();
    let containerd = Containerd::start();
    let aot = tempfile::tempdir().unwrap(); // a cache of its own: the first compile is a miss
    let precompile = |module: &Path| {
        let mut cmd = Command::new(IMAGE_TOOL);
        cmd.args(["precompile", "--aot-dir"]).arg(aot.path()).arg(module);
        let out = exec_bounded(&mut cmd, None, RUN_TIMEOUT);
        assert_eq!(out.code, 0, "{out:#?}");
        out.stdout
    };
    // A module file: compiled once, then found.
    assert!(precompile(hello_wasm()).contains(": Compiled in "), "first precompile");
    assert!(precompile(hello_wasm()).contains(": Hit in "), "second precompile");

    // `build --precompile`: the JavaScript runtime the image starts is compiled at build time,
    // and the image's first container loads it from that cache.
    let tag = "docker.io/library/precompiled-js:test";
    let mut cmd = Command::new(IMAGE_TOOL);
    cmd.args(["build", "images/javascript/app.js", "--tag", tag, "--import", "--namespace", NAMESPACE, "--precompile"])
        .arg("--address")
        .arg(containerd.sock())
        .arg("--aot-dir")
        .arg(aot.path())
        .arg("--cache-dir")
        .arg(aux_cache_dir())
        .current_dir(repo());
    let out = exec_bounded(&mut cmd, None, BUILD_TIMEOUT);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stdout.contains(": Compiled in ") || out.stdout.contains(": Hit in "), "{out:#?}");

    let options = aot.path().join("options.toml");
    fs::write(&options, format!("aot_dir = {:?}\n", aot.path().display().to_string())).unwrap();
    let id = unique_id("precompiled");
    let out = containerd.run_image(&id, tag, &["--runtime-config-path", options.to_str().unwrap()], &[], None);
    assert_eq!((out.code, out.stdout.as_str()), (0, "Hello from JavaScript!\n"), "{out:#?}");
    let log = containerd.log();
    let load = log.lines().find(|l| l.contains(&format!("{id}: span load "))).unwrap_or_else(|| panic!("no load span:\n{log}"));
    assert!(load.contains("aot=hit"), "the first start compiled: {load}");
}

/// `build` of a C project in `dir` with the cache of the other tests: (exit code, stderr).
fn build_dir(dir: &Path) -> (i32, String, bool) {
    let tar = dir.with_extension("tar");
    let _ = fs::remove_file(&tar);
    let out = image_tool(&["build", dir.to_str().unwrap(), "--lang", "c", "--tag", "sources:test", "--out", tar.to_str().unwrap()], aux_cache_dir());
    (out.code, out.stderr, tar.exists())
}

#[test]
fn sources_stay_sources() {
    toolchains_ready();
    let base = tempfile::tempdir().unwrap();
    let outside = base.path().join("secret.txt");
    fs::write(&outside, "not for the image\n").unwrap();
    let project = |name: &str| {
        let dir = base.path().join(name);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("main.c"), "#include <stdio.h>\nint main(void) { puts(\"hi\"); return 0; }\n").unwrap();
        dir
    };

    // A link that stays inside is a source like any other.
    let fine = project("fine");
    std::os::unix::fs::symlink("main.c", fine.join("alias.c.txt")).unwrap();
    let (code, stderr, made) = build_dir(&fine);
    assert!(code == 0 && made, "an inside link was refused: {stderr}");

    // Links that leave the directory: absolute, relative, and through a linked directory.
    for (name, target) in [("abs", outside.to_str().unwrap()), ("rel", "../secret.txt"), ("etc", "/etc")] {
        let dir = project(name);
        let link = dir.join("key");
        std::os::unix::fs::symlink(target, &link).unwrap();
        let (code, stderr, made) = build_dir(&dir);
        assert!(code != 0 && !made, "{name}: built with a link out: {stderr}");
        let expected = format!("{}: a symbolic link to {target}, which is not inside the source directory", link.display());
        assert!(stderr.contains(&expected), "{name}: {expected:?} not in {stderr}");
    }

    // Special files: a fifo, a socket, a device.
    let fifo = project("fifo");
    let made = Command::new("mkfifo").arg(fifo.join("pipe")).status().unwrap();
    assert!(made.success());
    let socket = project("socket");
    let _listener = std::os::unix::net::UnixListener::bind(socket.join("sock")).unwrap();
    let device = project("device");
    let made = Command::new("mknod").arg(device.join("null")).args(["c", "1", "3"]).status().unwrap();
    assert!(made.success());
    for (dir, file, kind) in [(&fifo, "pipe", "fifo"), (&socket, "sock", "socket"), (&device, "null", "device")] {
        let (code, stderr, made) = build_dir(dir);
        assert!(code != 0 && !made, "built with a {kind}: {stderr}");
        let expected = format!("{}: a {kind} is not a source file", dir.join(file).display());
        assert!(stderr.contains(&expected), "{expected:?} not in {stderr}");
    }

    // Sizes: one file past 64 MiB, and files under it that pass 256 MiB together (sparse).
    let big = project("big");
    fs::File::create(big.join("big.bin")).unwrap().set_len(65 << 20).unwrap();
    let (code, stderr, made) = build_dir(&big);
    assert!(code != 0 && !made, "built a 65 MiB source: {stderr}");
    assert!(stderr.contains("big.bin: 65 MiB, over the bound of 64 MiB a source file"), "{stderr}");
    let many = project("many");
    for i in 0..5 {
        fs::File::create(many.join(format!("part{i}.bin"))).unwrap().set_len(60 << 20).unwrap();
    }
    let (code, stderr, made) = build_dir(&many);
    assert!(code != 0 && !made, "built 300 MiB of sources: {stderr}");
    assert!(stderr.contains("the sources pass the bound of 256 MiB in all"), "{stderr}");
}

/// `build` of the project `files` (written to a new directory) with the aux cache: (code, stderr).
fn build_project(lang: &str, files: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        fs::write(dir.path().join(name), text).unwrap();
    }
    let tar = dir.path().join("out.tar");
    let out = image_tool(&["build", dir.path().to_str().unwrap(), "--lang", lang, "--tag", "deps:test", "--out", tar.to_str().unwrap()], aux_cache_dir());
    assert_eq!(out.code == 0, tar.exists(), "{out:#?}");
    (out.code, out.stderr)
}

#[test]
fn dependencies_that_cannot_run_are_refused_at_build_time() {
    toolchains_ready();
    // numpy has native code: PyPI has no pure wheel of it.
    let (code, stderr) = build_project("python", &[("main.py", "import numpy\n"), ("requirements.txt", "numpy\n")]);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("numpy: no pure-Python wheel (py3-none-any) on the package index"), "{stderr}");
    // Requirements from elsewhere than the index are not taken.
    let (code, stderr) = build_project("python", &[("main.py", ""), ("requirements.txt", "--index-url http://127.0.0.1:9/simple\nsix\n")]);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("only package names with versions are taken"), "{stderr}");

    // mkdirp needs Node's path module, which the runtime does not offer: named with its importer.
    let (code, stderr) = build_project(
        "javascript",
        &[
            ("package.json", r#"{"main": "index.js", "dependencies": {"mkdirp": "1.0.4"}}"#),
            ("index.js", "const mkdirp = require(\"mkdirp\");\nmkdirp.sync(\"/tmp/x\");\n"),
        ],
    );
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("the program needs Node modules the runtime does not offer"), "{stderr}");
    assert!(stderr.contains("path (imported by "), "{stderr}");
    assert!(stderr.contains("mkdirp"), "{stderr}");
}

/// Sets the last use of every entry of the compile cache `cache` to `secs` seconds ago.
fn age_cache_entries(cache: &Path, secs: u64) {
    let when = std::time::SystemTime::now() - Duration::from_secs(secs);
    for entry in fs::read_dir(cache).unwrap().flatten().filter(|e| !e.file_name().to_string_lossy().starts_with('.')) {
        fs::File::open(entry.path().join("entry.json")).unwrap().set_modified(when).unwrap();
    }
}

#[test]
fn cache_entries_expire_after_the_ttl_and_cache_ls_and_prune_show_and_remove_them() {
    toolchains_ready();
    let cache = tempfile::tempdir().unwrap();
    let tar = scratch().join("cache-ttl.tar");
    let build = |extra: &[&str], ttl_env: Option<&str>| {
        let mut cmd = Command::new(IMAGE_TOOL);
        cmd.args(["build", "images/c", "--tag", "cache-ttl:test", "--out", tar.to_str().unwrap(), "--cache-dir"])
            .arg(cache.path())
            .args(extra)
            .current_dir(repo());
        if let Some(ttl) = ttl_env {
            cmd.env("WASM_CACHE_TTL", ttl);
        }
        let out = exec_bounded(&mut cmd, None, BUILD_TIMEOUT);
        assert_eq!(out.code, 0, "{out:#?}");
        out.stderr
    };
    assert!(build(&[], None).contains("cache miss: c "));
    let ls = image_tool(&["cache", "ls"], cache.path());
    assert_eq!(ls.code, 0, "{ls:#?}");
    assert_eq!(ls.stdout.lines().count(), 1, "{ls:#?}");
    assert!(ls.stdout.contains("/app.wasm"), "{ls:#?}");

    // Last used two minutes ago: within the default hour and WASM_CACHE_TTL=600, past --cache-ttl 60.
    age_cache_entries(cache.path(), 120);
    assert!(build(&[], Some("600")).contains("cache hit: c "));
    age_cache_entries(cache.path(), 120);
    assert!(build(&[], None).contains("cache hit: c "));
    age_cache_entries(cache.path(), 120);
    assert!(build(&["--cache-ttl", "60"], Some("600")).contains("cache miss: c "), "the flag wins over the variable");
    age_cache_entries(cache.path(), 120);
    assert!(build(&[], Some("60")).contains("cache miss: c "));

    // Two hours: past the default TTL, so prune removes it.
    age_cache_entries(cache.path(), 7200);
    let ls = image_tool(&["cache", "ls"], cache.path());
    assert!(ls.stdout.contains("7200s ago") || ls.stdout.contains("7201s ago"), "{ls:#?}");
    let pruned = image_tool(&["cache", "prune"], cache.path());
    assert_eq!(pruned.code, 0, "{pruned:#?}");
    assert!(pruned.stderr.contains("removed 1 entry"), "{pruned:#?}");
    assert_eq!(image_tool(&["cache", "ls"], cache.path()).stdout, "");

    // A fresh entry stays with prune, and goes with prune --all.
    build(&[], None);
    assert!(image_tool(&["cache", "prune"], cache.path()).stderr.contains("removed 0 entries"));
    assert!(image_tool(&["cache", "prune", "--all"], cache.path()).stderr.contains("removed 1 entry"));
    assert_eq!(image_tool(&["cache", "ls"], cache.path()).stdout, "");
}

#[test]
fn rust_build_scripts_run_in_the_build_sandbox() {
    toolchains_ready();
    // The build script connects to an address off the host: in the sandbox's network namespace
    // only the loopback is up, so no route leads there (ENETUNREACH). It reads a file of
    // the host outside the crate, and writes into the crate and /tmp: the sandbox has none of
    // them, or read-only.
    let host = tempfile::tempdir().unwrap();
    let secret = host.path().join("secret");
    fs::write(&secret, "host secret").unwrap();
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("src")).unwrap();
    fs::write(
        dir.path().join("Cargo.toml"),
        "[package]\nname = \"offline\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    let escape = host.path().join("escaped");
    fs::write(
        dir.path().join("build.rs"),
        format!(
            r#"fn main() {{
    match std::net::TcpStream::connect_timeout(&([192, 0, 2, 1], 9).into(), std::time::Duration::from_secs(5)) {{
        Err(e) if e.raw_os_error() == Some(101) => println!("cargo:warning=no network in the build"),
        other => panic!("the build script reached a network: {{other:?}}"),
    }}
    match std::fs::read({secret:?}) {{
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => println!("cargo:warning=no host file in the build"),
        other => panic!("the build script read a host file: {{other:?}}"),
    }}
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    match std::fs::write(format!("{{manifest_dir}}/written"), "x") {{
        Err(e) if e.raw_os_error() == Some(30) => println!("cargo:warning=the crate is read-only in the build"),
        other => panic!("the build script wrote into the crate: {{other:?}}"),
    }}
    let _ = std::fs::create_dir_all({parent:?});
    let _ = std::fs::write({escape:?}, "x");
}}
"#,
            secret = secret.to_str().unwrap(),
            parent = host.path().to_str().unwrap(),
            escape = escape.to_str().unwrap(),
        ),
    )
    .unwrap();
    fs::write(dir.path().join("src/main.rs"), "fn main() { println!(\"built offline\"); }\n").unwrap();
    let tar = dir.path().join("offline.tar");
    // Only the build scripts in the sandbox (the default), then the whole compile (--sandbox).
    for mode in [&["--no-cache"][..], &["--no-cache", "--sandbox"]] {
        let mut args = vec!["build", dir.path().to_str().unwrap(), "--tag", "offline:test", "--out", tar.to_str().unwrap()];
        args.extend(mode);
        let out = image_tool(&args, aux_cache_dir());
        assert_eq!(out.code, 0, "{mode:?}: {out:#?}");
        for seen in ["no network in the build", "no host file in the build", "the crate is read-only in the build"] {
            assert!(out.stderr.contains(seen), "{mode:?}: {seen:?} missing in:\n{}", out.stderr);
        }
        assert!(!escape.exists(), "{mode:?}: the build script wrote {} on the host", escape.display());
        assert!(!dir.path().join("written").exists());
    }
}

#[test]
fn sandbox_compiles_see_the_sources_and_toolchains_only() {
    toolchains_ready();
    // A header of the host outside the sources: the compiler finds it on the host, and with
    // --sandbox it does not exist.
    let host = tempfile::tempdir().unwrap();
    let secret = host.path().join("secret.h");
    fs::write(&secret, "static const char *secret = \"host secret\";\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("leak.c", format!("#include <stdio.h>\n#include \"{}\"\nint main(void) {{ puts(secret); return 0; }}\n", secret.display())),
        ("leak.rs", format!("fn main() {{ print!(\"{{}}\", include_str!(\"{}\")); }}\n", secret.display())),
    ];
    for (name, text) in &cases {
        fs::write(dir.path().join(name), text).unwrap();
        let src = dir.path().join(name);
        let build = |extra: &[&str]| {
            let mut args = vec!["build", src.to_str().unwrap(), "--no-cache", "--tag", "leak:test", "--out"];
            let tar = dir.path().join("leak.tar");
            args.push(tar.to_str().unwrap());
            args.extend(extra);
            image_tool(&args, aux_cache_dir())
        };
        let open = build(&[]);
        assert_eq!(open.code, 0, "{name}: the host's header should be found without the sandbox: {open:#?}");
        let sandboxed = build(&["--sandbox"]);
        assert_ne!(sandboxed.code, 0, "{name}: the sandboxed compile read the host's file: {sandboxed:#?}");
        assert!(sandboxed.stderr.contains("the compile in the build sandbox failed"), "{name}: {}", sandboxed.stderr);
        let missing = ["file not found", "No such file or directory"];
        assert!(missing.iter().any(|m| sandboxed.stderr.contains(m)), "{name}: {}", sandboxed.stderr);
    }
    // A project with npm dependencies: fetched here, then bundled in the sandbox, offline.
    let containerd = Containerd::start();
    let mut cmd = Command::new(IMAGE_TOOL);
    cmd.arg("run")
        .arg("--address")
        .arg(containerd.sock())
        .args(["--namespace", NAMESPACE, "--tag", "docker.io/library/sandboxed-js:test", "--sandbox", "--no-cache", "--cache-dir"])
        .arg(aux_cache_dir())
        .args(["images/javascript", "slug", "Built in a Sandbox"])
        .current_dir(repo());
    let out = exec_bounded(&mut cmd, None, RUN_TIMEOUT);
    assert_eq!((out.code, out.stdout.as_str()), (0, "built-in-a-sandbox\n"), "{out:#?}");
}
