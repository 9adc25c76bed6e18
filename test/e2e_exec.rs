//! End-to-end tests of exec (`ctr task exec`) into running containers: a wasm container, where
//! the shim runs another module inside the container's namespaces, root and cgroup, and a Linux
//! container, which runc runs. Needs containerd, ctr, runc and root (`make test` runs them inside
//! the dev root).

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::time::Duration;

/// A wasm container running `sleep 600`, deleted (with its task) when dropped.
struct Sleeper<'a> {
    containerd: &'a Containerd,
    id: String,
}

impl<'a> Sleeper<'a> {
    fn start(containerd: &'a Containerd, opts: &[&str]) -> Sleeper<'a> {
        let id = unique_id("sleeper");
        let out = exec_bounded(&mut containerd.run_command(&id, HELLO_IMAGE, &[&["-d"], opts].concat(), &["sleep", "600"]), None, CTR_TIMEOUT);
        assert_eq!(out.code, 0, "ctr run -d failed: {out:#?}");
        Sleeper { containerd, id }
    }

    fn init_pid(&self) -> u32 {
        self.containerd.task(&self.id).expect("task listed").0
    }

    /// `ctr task exec` in the foreground; `args` is the exec's whole argv.
    fn exec(&self, args: &[&str]) -> Out {
        self.exec_with(&[], args)
    }

    /// The same with `opts` (such as `--user`) before the container id.
    fn exec_with(&self, opts: &[&str], args: &[&str]) -> Out {
        let exec_id = unique_id("exec");
        let mut cmd = self.containerd.ctr_command(&["task", "exec", "--exec-id", &exec_id]);
        cmd.args(opts).arg(&self.id).args(args);
        exec_bounded(&mut cmd, Some(""), CTR_TIMEOUT)
    }
}

impl Drop for Sleeper<'_> {
    fn drop(&mut self) {
        self.containerd.quiet_ctr(&["task", "kill", "-s", "SIGKILL", &self.id]);
        for _ in 0..50 {
            if self.containerd.quiet_ctr(&["task", "ls"]).lines().any(|l| l.starts_with(&self.id) && l.contains("STOPPED")) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.containerd.quiet_ctr(&["task", "delete", "-f", &self.id]);
        self.containerd.quiet_ctr(&["container", "delete", &self.id]);
    }
}

fn link(path: String) -> String {
    fs::read_link(&path).unwrap_or_else(|e| panic!("{path}: {e}")).to_string_lossy().into_owned()
}

#[test]
fn exec_runs_a_module_inside_a_running_wasm_container() {
    let containerd = Containerd::with_hello();
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("in.txt"), "mounted\n").unwrap();
    let mount = format!("type=bind,src={},dst=/mnt,options=rbind:rw", host.path().display());
    let sleeper = Sleeper::start(&containerd, &["--mount", &mount]);

    let out = sleeper.exec(&["/app.wasm", "echo", "from", "exec"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "from exec\n"), "{out:#?}");
    // The container's root: the image's files and the container's mounts, nothing of the host.
    let out = sleeper.exec(&["/app.wasm", "cat", "/data/greeting.txt"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, GREETING), "{out:#?}");
    let out = sleeper.exec(&["/app.wasm", "cat", "/mnt/in.txt"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "mounted\n"), "{out:#?}");
    let out = sleeper.exec(&["/app.wasm", "write", "/mnt/out.txt", "from exec"]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(fs::read_to_string(host.path().join("out.txt")).unwrap(), "from exec");
    let out = sleeper.exec(&["/app.wasm", "cat", &format!("{}/in.txt", host.path().display())]);
    assert_ne!(out.code, 0, "a host path was readable from the exec: {out:#?}");
    // Its own stdio, env and exit code.
    let out = sleeper.exec(&["/app.wasm", "stderr", "to", "stderr"]);
    assert_eq!((out.code, out.stdout.as_str(), out.stderr.as_str()), (0, "", "to stderr\n"), "{out:#?}");
    // The exec's environment is its own process's (ctr gives it the container's).
    let out = sleeper.exec(&["/app.wasm", "env", "PWD"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "/\n"), "{out:#?}");
    assert_eq!(sleeper.exec(&["/app.wasm", "exit", "7"]).code, 7);
    let out = sleeper.exec(&["/nope.wasm"]);
    assert_eq!(out.code, 127, "{out:#?}");
    assert!(out.stderr.contains("not found"), "{out:#?}");

    // The container itself runs on.
    assert_eq!(containerd.task(&sleeper.id).unwrap().1, "RUNNING");
}

/// `ctr task exec --user` (`docker exec -u`): the module runs as that user and group, as the
/// files it writes show, and a detached one's /proc status too.
#[test]
fn exec_runs_as_its_user() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let containerd = Containerd::with_hello();
    let host = tempfile::tempdir().unwrap();
    fs::set_permissions(host.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let mount = format!("type=bind,src={},dst=/mnt,options=rbind:rw", host.path().display());
    let sleeper = Sleeper::start(&containerd, &["--mount", &mount]);

    let out = sleeper.exec_with(&["--user", "1000:1001"], &["/app.wasm", "write", "/mnt/by-user.txt", "x"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let owner = fs::metadata(host.path().join("by-user.txt")).unwrap();
    assert_eq!((owner.uid(), owner.gid()), (1000, 1001), "the exec's file is not its user's");
    let out = sleeper.exec(&["/app.wasm", "write", "/mnt/by-root.txt", "x"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let owner = fs::metadata(host.path().join("by-root.txt")).unwrap();
    assert_eq!((owner.uid(), owner.gid()), (0, 0), "an exec without --user is the container's user");

    let exec_id = unique_id("bg");
    containerd.ctr_ok(&["task", "exec", "--detach", "--user", "1000:1001", "--exec-id", &exec_id, &sleeper.id, "/app.wasm", "sleep", "600"]);
    let init = sleeper.init_pid();
    let mut status = String::new();
    wait_until("the exec to run its module", Duration::from_secs(30), || {
        let ps = containerd.ctr_ok(&["task", "ps", &sleeper.id]);
        let pid = ps.lines().skip(1).filter_map(|l| l.split_whitespace().next()?.parse::<u32>().ok()).find(|p| *p != init);
        status = pid.and_then(|pid| fs::read_to_string(format!("/proc/{pid}/status")).ok()).unwrap_or_default();
        status.contains("\nUid:\t1000\t")
    });
    assert!(status.contains("\nUid:\t1000\t1000\t1000\t1000\n") && status.contains("\nGid:\t1001\t1001\t1001\t1001\n"), "{status}");
    containerd.ctr_ok(&["task", "kill", "--exec-id", &exec_id, "-s", "SIGKILL", &sleeper.id]);
}

#[test]
fn exec_shares_the_containers_namespaces_and_cgroup_and_can_be_killed() {
    let containerd = Containerd::with_hello();
    let sleeper = Sleeper::start(&containerd, &[]);
    let init = sleeper.init_pid();
    let exec_id = unique_id("bg");
    containerd.ctr_ok(&["task", "exec", "--detach", "--exec-id", &exec_id, &sleeper.id, "/app.wasm", "sleep", "600"]);

    // `ctr task ps` lists the exec next to the init.
    let mut exec_pid = 0;
    wait_until("the exec to show in ctr task ps", Duration::from_secs(15), || {
        let ps = containerd.ctr_ok(&["task", "ps", &sleeper.id]);
        exec_pid = ps.lines().skip(1).filter_map(|l| l.split_whitespace().next()?.parse().ok()).find(|p| *p != init).unwrap_or(0);
        exec_pid != 0
    });
    for ns in ["pid", "mnt", "net", "ipc", "uts", "cgroup"] {
        let (a, b) = (link(format!("/proc/{init}/ns/{ns}")), link(format!("/proc/{exec_pid}/ns/{ns}")));
        if ns == "mnt" && a != b {
            // Allowed (see process::exec): the root alone is the container's; check it.
            let root = link(format!("/proc/{exec_pid}/root"));
            assert_ne!(root, "/", "exec process is not in the container's root");
            continue;
        }
        assert_eq!(a, b, "the exec is not in the container's {ns} namespace");
    }
    let cgroups = |pid: u32| fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    wait_until("the exec to join the container's cgroup", Duration::from_secs(15), || cgroups(init) == cgroups(exec_pid));

    containerd.ctr_ok(&["task", "kill", "--exec-id", &exec_id, "-s", "SIGKILL", &sleeper.id]);
    wait_until("the exec to end", Duration::from_secs(15), || !Path::new(&format!("/proc/{exec_pid}")).exists());
    assert_eq!(containerd.task(&sleeper.id).unwrap().1, "RUNNING", "killing the exec stopped the container");
}

#[test]
fn exec_into_a_linux_container_runs_through_runc() {
    let containerd = Containerd::start();
    let rootfs = containerd.dir.path().join("busybox-rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("/bin/busybox (busybox-static) is needed");
    let id = unique_id("linux");
    let mut cmd = containerd.ctr_command(&["run", "-d", "--runtime", RUNTIME, "--rootfs"]);
    cmd.arg(&rootfs).args([id.as_str(), "/bin/busybox", "sleep", "600"]);
    let out = exec_bounded(&mut cmd, None, CTR_TIMEOUT);
    assert_eq!(out.code, 0, "{out:#?}");

    let mut cmd = containerd.ctr_command(&["task", "exec", "--exec-id", "e1", &id, "/bin/busybox", "sh", "-c", "echo in $0; exit 3"]);
    cmd.arg("busybox");
    let out = exec_bounded(&mut cmd, Some(""), CTR_TIMEOUT);
    assert_eq!((out.code, out.stdout.as_str()), (3, "in busybox\n"), "{out:#?}");

    containerd.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    wait_until(&format!("{id} to stop"), Duration::from_secs(30), || {
        containerd.task(&id).is_some_and(|(_, status)| status == "STOPPED")
    });
    assert_eq!(containerd.delete_task(&id), 137);
    containerd.ctr_ok(&["container", "delete", &id]);
    containerd.assert_no_leftovers(&id);
}
