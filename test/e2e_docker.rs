//! End-to-end tests of the Docker door: `docker run --runtime=io.containerd.wasmedge.v1`. Each
//! test starts a private containerd (common::Containerd) and a private dockerd on it, with the
//! containerd image store, no iptables and no bridge, its data and exec roots in a temp dir;
//! loads the hello image packed by `wasmedge-image pack --format docker`, and drives it with the
//! docker CLI. Needs dockerd and the docker CLI (the dev root has them) and root.

mod common;

use common::docker::{Docker, DOCKER_TIMEOUT};
use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const DOCKER_HELLO: &str = "docker.io/library/hello-wasm:docker";
const DOCKER_MEMORY: &str = "docker.io/library/memory-wasm:docker";
const WASM: &[&str] = &["--runtime", RUNTIME, "--platform", PLATFORM];

/// The hello module with /data/greeting.txt, as a docker-archive.
fn docker_hello() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let greeting = scratch_dir().join("greeting.txt");
        fs::write(&greeting, GREETING).unwrap();
        pack_docker(hello_wasm(), DOCKER_HELLO, &[format!("{}:/data/greeting.txt", greeting.display())])
    })
}

/// A module that touches 64 MiB of its memory, then blocks reading stdin: its container's
/// memory use is known.
fn docker_memory() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let module = wat::parse_str(
            r#"(module
              (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
              (memory (export "memory") 1040)
              (func (export "_start")
                (local $p i32)
                (block $done
                  (loop $touch
                    (br_if $done (i32.ge_u (local.get $p) (i32.const 67108864)))
                    (i32.store8 (local.get $p) (i32.const 1))
                    (local.set $p (i32.add (local.get $p) (i32.const 4096)))
                    (br $touch)))
                (i32.store (i32.const 67108864) (i32.const 67108880))
                (i32.store (i32.const 67108868) (i32.const 16))
                (drop (call $fd_read (i32.const 0) (i32.const 67108864) (i32.const 1) (i32.const 67108900)))))"#,
        )
        .expect("the memory module's WAT");
        let path = scratch_dir().join("memory.wasm");
        fs::write(&path, module).unwrap();
        pack_docker(&path, DOCKER_MEMORY, &[])
    })
}

/// `docker run --rm` of the hello image with the wasm runtime and `args` for the module.
fn run(docker: &Docker, opts: &[&str], args: &[&str]) -> Out {
    let mut cmd = docker.command(&["run", "--rm"]);
    cmd.args(WASM).args(opts).arg(DOCKER_HELLO).args(args);
    exec_bounded(&mut cmd, None, DOCKER_TIMEOUT)
}


#[test]
fn docker_run_passes_args_env_volumes_stdin_and_exit_codes() {
    let docker = Docker::with(&[docker_hello()]);

    let out = run(&docker, &[], &[]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "Hello from WasmEdge!\n"), "{out:#?}");
    let out = run(&docker, &[], &["echo", "a", "b c"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "a b c\n"), "{out:#?}");
    let out = run(&docker, &["-e", "E2E_NAME=from docker"], &["env", "E2E_NAME"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "from docker\n"), "{out:#?}");
    let out = run(&docker, &[], &["cat", "/data/greeting.txt"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, GREETING), "{out:#?}");
    let out = run(&docker, &[], &["stderr", "to stderr"]);
    // The CLI adds its own warnings (no IPv4 forwarding here) to stderr.
    let stderr: Vec<&str> = out.stderr.lines().filter(|l| !l.starts_with("WARNING:")).collect();
    assert_eq!((out.code, out.stdout.as_str(), stderr), (0, "", vec!["to stderr"]), "{out:#?}");

    // -v: read and write through a bind mount; :ro keeps the host's files safe.
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("in.txt"), "from the host\n").unwrap();
    let volume = format!("{}:/mnt", host.path().display());
    let out = run(&docker, &["-v", &volume], &["cat", "/mnt/in.txt"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "from the host\n"), "{out:#?}");
    let out = run(&docker, &["-v", &volume], &["write", "/mnt/out.txt", "from docker"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(fs::read_to_string(host.path().join("out.txt")).unwrap(), "from docker");
    let out = run(&docker, &["-v", &format!("{volume}:ro")], &["write", "/mnt/ro.txt", "x"]);
    assert_ne!(out.code, 0, "wrote through a read-only volume: {out:#?}");
    assert!(!host.path().join("ro.txt").exists());

    // Exit codes: the module's own, and the shim's for a missing entrypoint.
    assert_eq!(run(&docker, &[], &["exit", "42"]).code, 42);
    let out = run(&docker, &["--entrypoint", "/missing.wasm"], &[]);
    assert_eq!(out.code, 127, "{out:#?}");

    // -i: stdin reaches the module.
    let mut cmd = docker.command(&["run", "--rm", "-i"]);
    cmd.args(WASM).arg(DOCKER_HELLO).arg("stdin");
    let out = exec_bounded(&mut cmd, Some("ping\n"), DOCKER_TIMEOUT);
    assert_eq!((out.code, out.stdout.as_str()), (0, "got: ping\n"), "{out:#?}");
}

#[test]
fn docker_detached_container_logs_stats_exec_and_stops() {
    let docker = Docker::with(&[docker_hello(), docker_memory()]);

    // run -d, then logs once it is done.
    let mut cmd = docker.command(&["run", "-d", "--name", "logger"]);
    cmd.args(WASM).arg(DOCKER_HELLO).args(["echo", "logged", "line"]);
    assert_eq!(exec_bounded(&mut cmd, None, DOCKER_TIMEOUT).code, 0);
    docker.wait_status("logger", "exited");
    assert_eq!(docker.inspect("logger", "{{.State.ExitCode}}"), "0");
    assert_eq!(docker.ok(&["logs", "logger"]), "logged line\n");

    // stats: the container's cgroup holds the 64 MiB the module touched.
    let mut cmd = docker.command(&["run", "-d", "-i", "--name", "memory"]);
    cmd.args(WASM).arg(DOCKER_MEMORY);
    let out = exec_bounded(&mut cmd, None, DOCKER_TIMEOUT);
    assert_eq!(out.code, 0, "{out:#?}");
    docker.wait_status("memory", "running");
    let mut usage = String::new();
    wait_until("docker stats to show the module's 64 MiB", Duration::from_secs(30), || {
        usage = docker.ok(&["stats", "--no-stream", "--format", "{{.MemUsage}}", "memory"]);
        bytes(usage.split('/').next().unwrap_or_default()) >= 64 << 20
    });
    let limit = bytes(usage.split('/').nth(1).unwrap_or_default());
    assert!(limit > 64 << 20, "no memory limit in docker stats: {usage}");

    // exec: another module run inside the running container, with its own exit code.
    let mut cmd = docker.command(&["run", "-d", "--name", "sleeper"]);
    cmd.args(WASM).arg(DOCKER_HELLO).args(["sleep", "600"]);
    assert_eq!(exec_bounded(&mut cmd, None, DOCKER_TIMEOUT).code, 0);
    docker.wait_status("sleeper", "running");
    assert_eq!(docker.ok(&["exec", "sleeper", "/app.wasm", "echo", "from", "exec"]), "from exec\n");
    assert_eq!(docker.ok(&["exec", "sleeper", "/app.wasm", "cat", "/data/greeting.txt"]), GREETING);
    assert_eq!(docker.docker(&["exec", "sleeper", "/app.wasm", "exit", "3"]).code, 3);
    assert_eq!(docker.ok(&["exec", "-e", "WHO=exec", "sleeper", "/app.wasm", "env", "WHO"]), "exec\n");
    // exec -u: the exec's process runs as that user (docker top's first column), under Docker's
    // default seccomp profile like the container.
    docker.ok(&["exec", "-d", "-u", "1000:1001", "sleeper", "/app.wasm", "sleep", "600"]);
    wait_until("the exec as uid 1000 in docker top", Duration::from_secs(30), || {
        docker.ok(&["top", "sleeper"]).lines().any(|l| l.split_whitespace().next() == Some("1000"))
    });

    // stop: SIGTERM ends the module at once (143)...
    let started = Instant::now();
    docker.ok(&["stop", "--time", "10", "sleeper"]);
    assert!(started.elapsed() < Duration::from_secs(8), "docker stop waited for the timeout: {:?}", started.elapsed());
    assert_eq!(docker.inspect("sleeper", "{{.State.ExitCode}}"), "143");
    // ...and a stop signal the module does not end on is followed by SIGKILL (137).
    let mut cmd = docker.command(&["run", "-d", "--stop-signal", "SIGUSR1", "--name", "stubborn"]);
    cmd.args(WASM).arg(DOCKER_HELLO).args(["sleep", "600"]);
    assert_eq!(exec_bounded(&mut cmd, None, DOCKER_TIMEOUT).code, 0);
    docker.wait_status("stubborn", "running");
    let started = Instant::now();
    docker.ok(&["stop", "--time", "1", "stubborn"]);
    assert!(started.elapsed() >= Duration::from_secs(1), "SIGUSR1 stopped the module");
    assert_eq!(docker.inspect("stubborn", "{{.State.ExitCode}}"), "137");

    for name in ["logger", "memory", "sleeper", "stubborn"] {
        docker.ok(&["rm", "-f", name]);
    }
    // Every shim of this containerd is gone once its containers are.
    let sock = docker.containerd.sock().to_string_lossy().into_owned();
    wait_until("the shims to exit", Duration::from_secs(15), || {
        processes().iter().all(|(_, argv)| !(argv.iter().any(|a| a.contains("containerd-shim-wasmedge")) && argv.contains(&sock)))
    });
}

#[test]
fn docker_update_changes_the_limits_of_a_running_container() {
    let docker = Docker::with(&[docker_hello()]);
    let mut cmd = docker.command(&["run", "-d", "--name", "updated", "--memory", "64m", "--cpus", "0.5"]);
    cmd.args(WASM).arg(DOCKER_HELLO).args(["sleep", "600"]);
    assert_eq!(exec_bounded(&mut cmd, None, DOCKER_TIMEOUT).code, 0);
    docker.wait_status("updated", "running");
    let pid: u32 = docker.inspect("updated", "{{.State.Pid}}").parse().unwrap();
    let memory = cgroup_file(pid, "memory", "memory.limit_in_bytes", "memory.max");
    let cpu = cgroup_file(pid, "cpu", "cpu.cfs_quota_us", "cpu.max");
    let read = |path: &Path| fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_string();
    // cgroup v1 has the quota alone, v2 the quota and the period.
    let quota = |text: String| text.split_whitespace().next().unwrap_or_default().to_string();
    assert_eq!((read(&memory), quota(read(&cpu))), ("67108864".into(), "50000".into()), "the limits of docker run");

    // Task.Update through docker: the shim rewrites the running container's cgroup.
    docker.ok(&["update", "--memory", "96m", "--memory-swap", "192m", "--cpus", "1.5", "updated"]);
    assert_eq!((read(&memory), quota(read(&cpu))), ("100663296".into(), "150000".into()), "the limits of docker update");
    assert_eq!(docker.inspect("updated", "{{.State.Status}}"), "running");
    assert_eq!(docker.ok(&["exec", "updated", "/app.wasm", "echo", "still", "serving"]), "still serving\n");
    docker.ok(&["rm", "-f", "updated"]);
}

/// `64.5MiB` → bytes, as docker prints sizes.
fn bytes(text: &str) -> u64 {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = match unit.trim() {
        "B" => 1.0,
        "KiB" | "kB" => 1024.0,
        "MiB" | "MB" => 1024.0 * 1024.0,
        "GiB" | "GB" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unknown unit {other:?} in {text:?}"),
    };
    (number.parse::<f64>().unwrap_or(0.0) * unit) as u64
}
