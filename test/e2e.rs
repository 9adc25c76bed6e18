//! End-to-end tests against a real containerd: each test starts a private containerd with the
//! shim cargo just built first on its PATH, imports the images/hello module packed by
//! `wasmedge-image`, and drives it with `ctr`. Needs containerd, ctr and root (`make test` runs
//! them inside the dev root). Every external command is bounded so a hang fails instead of
//! blocking CI.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Tests

/// The shims' sockets (containerd names them by a hash of the container id).
fn shim_sockets() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir("/run/containerd/s")
        .map(|dir| dir.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn hello_prints_greeting_and_leaves_nothing_behind() {
    let containerd = Containerd::with_hello();
    let sockets = shim_sockets();
    let id = unique_id("hello");
    let out = containerd.run_image(&id, HELLO_IMAGE, &[], &[], None);
    assert_eq!((out.code, out.stdout.as_str()), (0, "Hello from WasmEdge!\n"), "{out:#?}");
    containerd.assert_no_leftovers(&id);
    // A socket left behind would make the next shim of this id probe it for a second.
    assert_eq!(shim_sockets(), sockets, "the shim's socket is left behind");
    let out = containerd.run_image(&id, HELLO_IMAGE, &[], &[], None);
    assert_eq!((out.code, out.stdout.as_str()), (0, "Hello from WasmEdge!\n"), "the same id again: {out:#?}");
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

/// A Linux rootfs (a pod's pause container, a sidecar) runs through runc in the same shim.
#[test]
fn non_wasm_rootfs_runs_through_runc() {
    let containerd = Containerd::start();
    let rootfs = containerd.dir.path().join("busybox-rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("/bin/busybox (busybox-static) is needed");

    let id = unique_id("linux");
    let mut cmd = containerd.ctr_command(&["run", "--rm", "--runtime", RUNTIME, "--rootfs"]);
    cmd.arg(&rootfs).args([id.as_str(), "/bin/busybox", "echo", "hi"]);
    let out = exec_bounded(&mut cmd, Some(""), CTR_TIMEOUT);
    assert_eq!((out.code, out.stdout.as_str()), (0, "hi\n"), "{out:#?}");
    containerd.assert_no_leftovers(&id);
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

#[test]
fn memory_limit_pause_resume_and_metrics_act_on_the_containers_cgroup() {
    let containerd = Containerd::with_hello();
    let id = unique_id("limits");
    let started = exec_bounded(
        &mut containerd.run_command(&id, HELLO_IMAGE, &["-d", "--memory-limit", "268435456"], &["spin", "600"]),
        None,
        CTR_TIMEOUT,
    );
    assert_eq!(started.code, 0, "ctr run -d failed: {started:#?}");
    let (pid, _) = containerd.task(&id).expect("task listed");
    let limit = cgroup_file(pid, "memory", "memory.limit_in_bytes", "memory.max");
    assert_eq!(std::fs::read_to_string(&limit).unwrap().trim(), "268435456", "the spec's memory limit");

    containerd.ctr_ok(&["task", "pause", &id]);
    assert_eq!(containerd.task(&id).unwrap().1, "PAUSED");
    let freezer = cgroup_file(pid, "freezer", "freezer.state", "cgroup.freeze");
    let frozen = std::fs::read_to_string(&freezer).unwrap();
    assert!(frozen.trim() == "FROZEN" || frozen.trim() == "1", "freezer says {frozen:?}");
    containerd.ctr_ok(&["task", "resume", &id]);
    assert_eq!(containerd.task(&id).unwrap().1, "RUNNING");

    let metrics = containerd.ctr_ok(&["task", "metrics", &id]);
    assert!(metrics.contains("memory.usage_in_bytes") || metrics.contains("memory.usage"), "{metrics}");

    containerd.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    wait_until(&format!("{id} to stop"), Duration::from_secs(30), || {
        containerd.task(&id).is_some_and(|(_, status)| status == "STOPPED")
    });
    assert_eq!(containerd.delete_task(&id), 137);
    containerd.ctr_ok(&["container", "delete", &id]);
}

/// The dirs of cgroup `path` (relative to the hierarchies' roots): one per v1 hierarchy, or the
/// one of the unified tree.
fn cgroup_dirs(path: &str) -> Vec<std::path::PathBuf> {
    let (root, path) = (Path::new("/sys/fs/cgroup"), path.trim_start_matches('/'));
    let mut dirs: Vec<_> = fs::read_dir(root).unwrap().flatten().filter(|e| e.path().join("cgroup.procs").exists()).map(|e| e.path().join(path)).collect();
    if root.join("cgroup.procs").exists() {
        dirs = vec![root.join(path)];
    }
    dirs
}

/// Runs `sleep` in the cgroup `cgroup` (ctr's `--cgroup`) with a memory limit, checks that it is
/// in the cgroupfs dir `expected` with that limit, and that the dir goes with the container.
/// Slices the run made are removed afterwards, as systemd would keep them.
fn run_in_cgroup(containerd: &Containerd, cgroup: &str, opts: &[&str], expected: &str) {
    let parents: Vec<String> = expected.match_indices('/').skip(1).map(|(at, _)| expected[..at].to_string()).collect();
    let new_parents: Vec<&String> = parents.iter().filter(|p| cgroup_dirs(p).iter().all(|d| !d.exists())).collect();
    let id = cgroup.rsplit(':').next().unwrap();
    let opts = [&["-d", "--cgroup", cgroup, "--memory-limit", "268435456"], opts].concat();
    let started = exec_bounded(&mut containerd.run_command(id, HELLO_IMAGE, &opts, &["sleep", "600"]), None, CTR_TIMEOUT);
    assert_eq!(started.code, 0, "ctr run -d --cgroup {cgroup} failed: {started:#?}");
    let (pid, _) = containerd.task(id).expect("task listed");
    let limit = cgroup_file(pid, "memory", "memory.limit_in_bytes", "memory.max");
    assert!(limit.parent().unwrap().ends_with(expected.trim_start_matches('/')), "{cgroup} put the container in {}", limit.display());
    assert_eq!(fs::read_to_string(&limit).unwrap().trim(), "268435456", "the spec's memory limit");

    containerd.ctr_ok(&["task", "kill", "-s", "SIGKILL", id]);
    wait_until(&format!("{id} to stop"), Duration::from_secs(30), || containerd.task(id).is_some_and(|(_, status)| status == "STOPPED"));
    assert_eq!(containerd.delete_task(id), 137);
    containerd.ctr_ok(&["container", "delete", id]);
    for dir in cgroup_dirs(expected) {
        assert!(!dir.exists(), "{} is left after delete", dir.display());
    }
    for parent in new_parents.iter().rev() {
        for dir in cgroup_dirs(parent) {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// systemd's `slice:prefix:name` (kubeadm's cgroup driver) on a node where systemd is not PID 1:
/// the shim makes the scope where systemd would, inside the slice (nested by its dashes).
#[test]
fn systemd_cgroups_paths_land_in_their_scopes() {
    let containerd = Containerd::with_hello();
    let id = unique_id("systemd");
    run_in_cgroup(&containerd, &format!("system.slice:wasmedge:{id}"), &[], &format!("/system.slice/wasmedge-{id}.scope"));
    let pod = format!("kubepods-besteffort-pod{}", std::process::id());
    let id = unique_id("systemd");
    let expected = format!("/kubepods.slice/kubepods-besteffort.slice/{pod}.slice/cri-containerd-{id}.scope");
    run_in_cgroup(&containerd, &format!("{pod}.slice:cri-containerd:{id}"), &[], &expected);

    // With the runtime option SystemdCgroup, an empty slice is system.slice; without it, the
    // same path would name a cgroupfs dir.
    let options = containerd.dir.path().join("systemd.toml");
    fs::write(&options, "SystemdCgroup = true\n").unwrap();
    let id = unique_id("systemd");
    let opts = ["--runtime-config-path", options.to_str().unwrap()];
    run_in_cgroup(&containerd, &format!(":wasmedge:{id}"), &opts, &format!("/system.slice/wasmedge-{id}.scope"));

    // With it, a path that is not systemd's form is refused at create, in one line.
    let id = unique_id("systemd");
    let out = containerd.run_image(&id, HELLO_IMAGE, &["--cgroup", &format!("/e2e/{id}"), opts[0], opts[1]], &[], None);
    assert_ne!(out.code, 0, "{out:#?}");
    let reason: Vec<&str> = out.stderr.lines().filter(|l| l.contains("is not systemd's slice:prefix:name")).collect();
    assert_eq!(reason.len(), 1, "{out:#?}");
    containerd.assert_no_leftovers(&id);
}

/// The `Uid:` or `Gid:` line of /proc/PID/status: real, effective, saved and filesystem IDs.
fn status_ids(pid: u32, field: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix(field)).unwrap().split_whitespace().collect::<Vec<_>>().join(" ")
}

/// With `ctr run --uidmap/--gidmap` (ctr chowns a copy of the rootfs to the mapped IDs), root in
/// the container is the mapped host user, not 0, seen from the host; the module still reads its
/// image's files and prints; an exec joins the same user namespace.
#[test]
fn a_uid_mapping_runs_the_container_as_the_mapped_host_user() {
    let containerd = Containerd::start();
    // ctr remaps the rootfs of the image's manifest for its own platform (linux/amd64, which
    // the image carries as a compat variant with the same layer), whatever --platform says.
    containerd.ctr_ok(&["image", "import", "--all-platforms", hello_image().to_str().unwrap()]);
    let maps = ["--uidmap", "0:100000:65536", "--gidmap", "0:200000:65536"];
    let out = containerd.run_image(&unique_id("userns"), HELLO_IMAGE, &maps, &["cat", "/data/greeting.txt"], None);
    assert_eq!((out.code, out.stdout.as_str()), (0, GREETING), "{out:#?}");

    let id = unique_id("userns-sleeper");
    let started = exec_bounded(&mut containerd.run_command(&id, HELLO_IMAGE, &[&["-d"][..], &maps].concat(), &["sleep", "600"]), None, CTR_TIMEOUT);
    assert_eq!(started.code, 0, "ctr run -d failed: {started:#?}");
    let (pid, status) = containerd.task(&id).expect("task not listed after ctr run -d");
    assert_eq!(status, "RUNNING");
    assert_eq!(status_ids(pid, "Uid:"), "100000 100000 100000 100000");
    assert_eq!(status_ids(pid, "Gid:"), "200000 200000 200000 200000");
    let uid_map = fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    assert_eq!(uid_map.split_whitespace().collect::<Vec<_>>(), ["0", "100000", "65536"]);
    let own_ns = fs::read_link("/proc/self/ns/user").unwrap();
    let its_ns = fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();
    assert_ne!(its_ns, own_ns, "the container is in the host's user namespace");

    let exec = exec_bounded(&mut containerd.ctr_command(&["task", "exec", "--exec-id", &unique_id("exec"), &id, "/app.wasm", "echo", "from", "exec"]), None, CTR_TIMEOUT);
    assert_eq!((exec.code, exec.stdout.as_str()), (0, "from exec\n"), "{exec:#?}");

    containerd.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    wait_until(&format!("{id} to stop"), Duration::from_secs(30), || containerd.task(&id).is_some_and(|(_, status)| status == "STOPPED"));
    assert_eq!(containerd.delete_task(&id), 137);
    containerd.ctr_ok(&["container", "delete", &id]);
    containerd.assert_no_leftovers(&id);
}

/// Mappings that leave out the process's user cannot be honoured: create fails with one line,
/// nothing is left.
#[test]
fn a_uid_mapping_without_the_process_user_is_refused_at_create() {
    let containerd = Containerd::with_hello();
    let id = unique_id("userns-unmapped");
    let out = containerd.run_image(&id, HELLO_IMAGE, &["--user", "70000", "--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"], &[], None);
    assert_ne!(out.code, 0, "{out:#?}");
    let reason: Vec<&str> = out.stderr.lines().filter(|l| l.contains("process.user.uid 70000 is not mapped by linux.uidMappings")).collect();
    assert_eq!(reason.len(), 1, "{out:#?}");
    containerd.assert_no_leftovers(&id);
}
