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
/// commands every example answers, plus its realistic one.
fn check_example(src: &str, hello: &str, data: &[&str], realistic: &[&str], expected: &str) {
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
    check(&[], realistic, "", 0, expected);
}

#[test]
fn rust_example_runs_through_the_shim() {
    check_example("images/rust", "Hello from Rust!\n", &["images/rust/text.txt:/data/text.txt"], &["wordfreq", "/data/text.txt"], WORDFREQ);
}

#[test]
fn c_example_runs_through_the_shim() {
    check_example("images/c", "Hello from C!\n", &[], &["primes", "100000"], "9592 primes below 100000, the largest is 99991\n");
}

#[test]
fn cpp_example_runs_through_the_shim() {
    check_example("images/cpp", "Hello from C++!\n", &["images/cpp/text.txt:/data/text.txt"], &["wordfreq", "/data/text.txt"], WORDFREQ);
}

#[test]
fn go_example_runs_through_the_shim() {
    check_example("images/go", "Hello from Go!\n", &["images/go/orders.json:/data/orders.json"], &["orders", "/data/orders.json"], ORDERS);
}

#[test]
fn javascript_example_runs_through_the_shim() {
    check_example(
        "images/javascript/app.js",
        "Hello from JavaScript!\n",
        &["images/javascript/orders.json:/data/orders.json"],
        &["orders", "/data/orders.json"],
        ORDERS,
    );
}

#[test]
fn typescript_example_runs_through_the_shim() {
    // A project directory: package.json names src/main.ts, which imports ./orders; orders.json
    // is data and lands in /app beside the bundle.
    check_example("images/typescript", "Hello from TypeScript!\n", &[], &["orders", "/app/orders.json"], ORDERS);
}

#[test]
fn python_example_runs_through_the_shim() {
    // main.py imports orders.py; the directory is the program, orders.json included.
    check_example("images/python", "Hello from Python!\n", &[], &["orders", "/app/orders.json"], ORDERS);
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
    let known = "rust (rs), c, c++ (cpp), go (golang), javascript (js), typescript (ts), python (py), wasm";
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
    assert_eq!(layers.len(), 2, "interpreter layer + program layer: {image:#}");
    let paths = |i: usize| -> Vec<String> {
        layers[i]["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(paths(0), ["/python/lib/python311.zip", "/python/python.wasm"]);
    assert!(paths(1).contains(&"/app/main.py".to_string()), "{:?}", paths(1));

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
        "/python/python.wasm (19.4 MB)",
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
