//! End-to-end test of the Kubernetes door: containerd's CRI API driven as kubelet drives it, a
//! pod on runtime handler `wasmedge` with a wasm container and a Linux (busybox) sidecar, and a
//! `hostUsers: false` pod. The pause image is built here from busybox-static; pods use the
//! node's network (no CNI), except the `hostUsers: false` one (CNI's ptp).
//! Needs containerd (with its CRI plugin), runc, /bin/busybox and root (`make test` runs it in
//! the dev root).
//! The CRI messages, client and images are in test/common/cri.rs (test/e2e_nodes.rs uses them too).

mod common;

use common::cri::{self, busybox_image, container, containerd_in, cri_config, log_messages, shims_of, wasm_image, Cri};
use common::cri::{BUSYBOX_IMAGE, CRI_NAMESPACE, WASM_IMAGE};
use common::*;
use std::path::Path;
use std::time::Duration;

#[test]
fn pod_with_a_wasm_container_and_a_linux_sidecar_runs_through_cri() {
    let (busybox, wasm) = (busybox_image(), wasm_image());
    let containerd = Containerd::start_with_config(cri_config);
    for tar in [&busybox, &wasm] {
        containerd_in(&containerd, CRI_NAMESPACE, &["image", "import", "--platform", "linux/amd64", tar.to_str().unwrap()]);
    }
    let cri = Cri::connect(&containerd.sock());
    let version: cri::VersionResponse = cri.ok("Version", cri::VersionRequest { version: "v1".into() });
    assert_eq!(version.runtime_api_version, "v1", "{version:?}");
    for image in [BUSYBOX_IMAGE, WASM_IMAGE] {
        wait_until(&format!("CRI to know {image}"), Duration::from_secs(15), || {
            let status: cri::ImageStatusResponse = cri.ok("ImageStatus", cri::ImageStatusRequest { image: Some(cri::ImageSpec { image: image.into() }) });
            status.image.is_some()
        });
    }

    // The pod: the node's network, one IPC and one PID namespace for all its containers
    // (shareProcessNamespace), so wasm containers join the pause container's.
    let logs = tempfile::tempdir().unwrap();
    let cgroup_parent = format!("/e2e-cri-{}", std::process::id());
    let mut pod = cri.run_pod(logs.path(), &cgroup_parent);
    let (namespaces, create) = (pod.namespaces.clone(), |config| pod.start(config));

    // A wasm container that prints and ends, a long-running one, and a Linux sidecar.
    let once = create(container("wasm-once", WASM_IMAGE, &[], &["echo", "hello from a wasm pod"], &namespaces));
    // kubelet gives a BestEffort container an oom_score_adj of 1000; this one is raised to 500.
    let mut long_running = container("wasm", WASM_IMAGE, &[], &["sleep", "600"], &namespaces);
    long_running.linux.as_mut().unwrap().resources = Some(cri::LinuxContainerResources { oom_score_adj: 500 });
    let wasm = create(long_running);
    let sidecar = create(container("sidecar", BUSYBOX_IMAGE, &["/bin/busybox", "sh", "-c"], &["echo sidecar up; exec /bin/busybox sleep 600"], &namespaces));

    // ContainerStatus and the log file, as kubelet reads them.
    wait_until("the wasm container to exit", Duration::from_secs(30), || cri.status(&once).state == cri::CONTAINER_EXITED);
    let status = cri.status(&once);
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"), "{status:?}");
    assert_eq!(log_messages(Path::new(&status.log_path)), vec!["stdout: hello from a wasm pod"], "{status:?}");
    assert_eq!(cri.status(&wasm).state, cri::CONTAINER_RUNNING);
    assert_eq!(cri.status(&sidecar).state, cri::CONTAINER_RUNNING);
    let sidecar_log = logs.path().join("sidecar/0.log");
    wait_until("the sidecar's log line", Duration::from_secs(15), || log_messages(&sidecar_log) == vec!["stdout: sidecar up"]);

    // One shim serves the whole pod.
    let sock = containerd.sock().to_string_lossy().into_owned();
    assert_eq!(shims_of(&sock).len(), 1, "a pod's containers must share one shim");

    // The wasm container's process takes the oom_score_adj its spec asks for as it confines
    // itself, after loading its module.
    let tasks = containerd_in(&containerd, CRI_NAMESPACE, &["task", "ls"]);
    let pid = tasks.lines().find_map(|l| l.strip_prefix(wasm.as_str())?.split_whitespace().next()?.parse::<u32>().ok()).expect("the wasm task listed");
    let score = || std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap_or_default().trim().to_string();
    wait_until("the wasm container's oom_score_adj to be 500", Duration::from_secs(60), || score() == "500");

    // ExecSync: on the Linux sidecar (through runc) and into the wasm container.
    let out = cri.exec_sync(&sidecar, &["/bin/busybox", "sh", "-c", "echo from the sidecar; echo oops >&2; exit 3"]);
    assert_eq!((out.exit_code, out.stdout.as_slice(), out.stderr.as_slice()), (3, &b"from the sidecar\n"[..], &b"oops\n"[..]), "{out:?}");
    let out = cri.exec_sync(&wasm, &["/app.wasm", "echo", "exec in a wasm container"]);
    assert_eq!((out.exit_code, String::from_utf8_lossy(&out.stdout).as_ref()), (0, "exec in a wasm container\n"), "{out:?}");
    let out = cri.exec_sync(&wasm, &["/app.wasm", "cat", "/data/greeting.txt"]);
    assert_eq!((out.exit_code, String::from_utf8_lossy(&out.stdout).as_ref()), (0, GREETING), "{out:?}");
    assert_eq!(cri.exec_sync(&wasm, &["/app.wasm", "exit", "5"]).exit_code, 5);
    // The shared PID namespace: the sidecar sees the wasm container's process.
    let out = cri.exec_sync(&sidecar, &["/bin/busybox", "sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("containerd-wasmedge-init"), "{out:?}");

    // Execs that fail: runc cannot start a program that does not exist, and a wasm exec of a
    // module that does not exist ends with 127. Each must still end for containerd, or the
    // shim could not leave with the pod (below).
    let failed = cri.try_exec_sync(&sidecar, &["/no/such/program"]).expect_err("an exec of a program that does not exist");
    assert!(failed.message().contains("/no/such/program"), "{failed:?}");
    let out = cri.exec_sync(&wasm, &["/no/such/module.wasm"]);
    assert_eq!(out.exit_code, 127, "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"), "{out:?}");

    // Stop and remove the pod: every container ends and the shim exits.
    let _: cri::Empty = cri.ok("StopPodSandbox", cri::PodSandboxIdRequest { pod_sandbox_id: pod.id.clone() });
    for id in [&wasm, &sidecar] {
        assert_eq!(cri.status(id).state, cri::CONTAINER_EXITED, "{id} still runs after StopPodSandbox");
    }
    let _: cri::Empty = cri.ok("RemovePodSandbox", cri::PodSandboxIdRequest { pod_sandbox_id: pod.id.clone() });
    pod.guard.ids.clear();
    wait_until("the pod's shim to exit", Duration::from_secs(30), || shims_of(&sock).is_empty());
    assert!(cri.call::<_, cri::ContainerStatusResponse>("ContainerStatus", cri::ContainerIdRequest { container_id: wasm.clone() }).is_err());
}

/// `hostUsers: false`: kubelet gives the pod a user namespace over a range of host IDs of its
/// own, and a network namespace (CNI) of its own. The pause container (runc) makes the user
/// namespace, the wasm container joins it by path; its rootfs layers and its volume are
/// idmapped (the rootfs by the snapshotter's options, the volume by `mounts[].uidMappings`), so
/// that what the host's root owns is the container's root's, while the container's root is an
/// unprivileged host user.
#[test]
fn a_pod_without_host_users_runs_its_wasm_containers_as_an_unprivileged_host_user() {
    let (busybox, wasm) = (busybox_image(), wasm_image());
    let containerd = Containerd::start_with_config(cri::cri_config_with_cni);
    for tar in [&busybox, &wasm] {
        containerd_in(&containerd, CRI_NAMESPACE, &["image", "import", "--platform", "linux/amd64", tar.to_str().unwrap()]);
    }
    let cri = Cri::connect(&containerd.sock());
    let logs = tempfile::tempdir().unwrap();
    let cgroup_parent = format!("/e2e-cri-userns-{}", std::process::id());
    const HOST_ID: u32 = 300000;
    let pod = cri.run_pod_without_host_users(logs.path(), &cgroup_parent, HOST_ID);

    // A volume of the host's root: a file only root may read, in a directory only root may
    // write. Kubelet asks for it idmapped with the pod's mappings.
    let volume = tempfile::tempdir().unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::set_permissions(volume.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let note = volume.path().join("note.txt");
    std::fs::write(&note, "the host root's note\n").unwrap();
    std::fs::set_permissions(&note, std::fs::Permissions::from_mode(0o600)).unwrap();
    let range = cri::IdMapping { host_id: HOST_ID, container_id: 0, length: 65536 };
    let mount = cri::Mount {
        container_path: "/vol".into(),
        host_path: volume.path().display().to_string(),
        readonly: false,
        uid_mappings: vec![range.clone()],
        gid_mappings: vec![range],
    };
    let mut config = container("wasm", WASM_IMAGE, &[], &["sleep", "600"], &pod.namespaces);
    config.mounts.push(mount);
    let wasm = pod.start(config);
    assert_eq!(cri.status(&wasm).state, cri::CONTAINER_RUNNING);

    // Its root is HOST_ID on the host, in the pause container's user namespace.
    let tasks = containerd_in(&containerd, CRI_NAMESPACE, &["task", "ls"]);
    let pid = tasks.lines().find_map(|l| l.strip_prefix(wasm.as_str())?.split_whitespace().next()?.parse::<i32>().ok()).unwrap_or_else(|| panic!("{wasm} not in {tasks}: {:?} {}", cri.status(&wasm), std::fs::read_to_string(cri.status(&wasm).log_path).unwrap_or_default()));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids: Vec<u32> = status.lines().find(|l| l.starts_with("Uid:")).unwrap().split_whitespace().skip(1).map(|u| u.parse().unwrap()).collect();
    assert_eq!(uids, [HOST_ID; 4], "{status}");
    let userns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap_or_default();
    assert_ne!(userns(pid), userns(std::process::id() as i32));
    let pause = processes().into_iter().filter(|(_, argv)| argv == &["/bin/busybox", "sleep", "2147483647"]).map(|(pid, _)| pid);
    assert!(pause.into_iter().any(|p| userns(p) == userns(pid)), "the wasm container is not in its pause container's user namespace");

    // The rootfs layers, owned by the host's root, are the container's root's to read.
    let out = cri.exec_sync(&wasm, &["/app.wasm", "cat", "/data/greeting.txt"]);
    assert_eq!((out.exit_code, String::from_utf8_lossy(&out.stdout).as_ref()), (0, GREETING), "{out:?}");
    // Through the idmapped volume the root-only file is readable and the directory writable,
    // and what the container writes is the host root's.
    let out = cri.exec_sync(&wasm, &["/app.wasm", "cat", "/vol/note.txt"]);
    assert_eq!((out.exit_code, String::from_utf8_lossy(&out.stdout).as_ref()), (0, "the host root's note\n"), "{out:?}");
    let out = cri.exec_sync(&wasm, &["/app.wasm", "write", "/vol/written.txt", "from the pod"]);
    assert_eq!(out.exit_code, 0, "{out:?}");
    let written = std::fs::metadata(volume.path().join("written.txt")).unwrap();
    assert_eq!((written.uid(), written.gid()), (0, 0));
    assert_eq!(std::fs::read_to_string(volume.path().join("written.txt")).unwrap(), "from the pod");

    let _: cri::Empty = cri.ok("StopPodSandbox", cri::PodSandboxIdRequest { pod_sandbox_id: pod.id.clone() });
    assert_eq!(cri.status(&wasm).state, cri::CONTAINER_EXITED);
}
