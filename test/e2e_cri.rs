//! End-to-end test of the Kubernetes door: containerd's CRI API driven as kubelet drives it, a
//! pod on runtime handler `wasmedge` with a wasm container and a Linux (busybox) sidecar. The
//! pause image is built here from busybox-static; pods use the node's network (no CNI).
//! Needs containerd (with its CRI plugin), runc, /bin/busybox and root (`make test` runs it in
//! the dev root).
//!
//! The CRI messages are written out below from the CRI v1 proto (k8s.io/cri-api), only the fields
//! used: prost derives their encoding, tonic's generic client sends them.

mod common;

use common::*;
use containerd_shim_wasmedge::image::writer::{self, Blob, Format, ImageSpec, LayerFile};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const HANDLER: &str = "wasmedge";
const CRI_NAMESPACE: &str = "k8s.io";
const BUSYBOX_IMAGE: &str = "docker.io/library/e2e-busybox:cri";
const WASM_IMAGE: &str = "docker.io/library/hello-wasm:cri";

/// CRI v1 messages (runtime.v1), the fields kubelet sets for this test.
#[allow(dead_code)]
mod cri {
    use std::collections::HashMap;

    /// NamespaceMode
    pub const POD: i32 = 0;
    pub const CONTAINER: i32 = 1;
    pub const NODE: i32 = 2;
    /// ContainerState
    pub const CONTAINER_RUNNING: i32 = 1;
    pub const CONTAINER_EXITED: i32 = 2;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct VersionRequest {
        #[prost(string, tag = "1")]
        pub version: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct VersionResponse {
        #[prost(string, tag = "1")]
        pub version: String,
        #[prost(string, tag = "2")]
        pub runtime_name: String,
        #[prost(string, tag = "3")]
        pub runtime_version: String,
        #[prost(string, tag = "4")]
        pub runtime_api_version: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxMetadata {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub uid: String,
        #[prost(string, tag = "3")]
        pub namespace: String,
        #[prost(uint32, tag = "4")]
        pub attempt: u32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamespaceOption {
        #[prost(int32, tag = "1")]
        pub network: i32,
        #[prost(int32, tag = "2")]
        pub pid: i32,
        #[prost(int32, tag = "3")]
        pub ipc: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LinuxSandboxSecurityContext {
        #[prost(message, optional, tag = "1")]
        pub namespace_options: Option<NamespaceOption>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LinuxPodSandboxConfig {
        #[prost(string, tag = "1")]
        pub cgroup_parent: String,
        #[prost(message, optional, tag = "2")]
        pub security_context: Option<LinuxSandboxSecurityContext>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxConfig {
        #[prost(message, optional, tag = "1")]
        pub metadata: Option<PodSandboxMetadata>,
        #[prost(string, tag = "2")]
        pub hostname: String,
        #[prost(string, tag = "3")]
        pub log_directory: String,
        #[prost(map = "string, string", tag = "6")]
        pub labels: HashMap<String, String>,
        #[prost(map = "string, string", tag = "7")]
        pub annotations: HashMap<String, String>,
        #[prost(message, optional, tag = "8")]
        pub linux: Option<LinuxPodSandboxConfig>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RunPodSandboxRequest {
        #[prost(message, optional, tag = "1")]
        pub config: Option<PodSandboxConfig>,
        #[prost(string, tag = "2")]
        pub runtime_handler: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RunPodSandboxResponse {
        #[prost(string, tag = "1")]
        pub pod_sandbox_id: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxIdRequest {
        #[prost(string, tag = "1")]
        pub pod_sandbox_id: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Empty {}
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerMetadata {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(uint32, tag = "2")]
        pub attempt: u32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ImageSpec {
        #[prost(string, tag = "1")]
        pub image: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Mount {
        #[prost(string, tag = "1")]
        pub container_path: String,
        #[prost(string, tag = "2")]
        pub host_path: String,
        #[prost(bool, tag = "3")]
        pub readonly: bool,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LinuxContainerSecurityContext {
        #[prost(message, optional, tag = "3")]
        pub namespace_options: Option<NamespaceOption>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LinuxContainerResources {
        #[prost(int64, tag = "5")]
        pub oom_score_adj: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LinuxContainerConfig {
        #[prost(message, optional, tag = "1")]
        pub resources: Option<LinuxContainerResources>,
        #[prost(message, optional, tag = "2")]
        pub security_context: Option<LinuxContainerSecurityContext>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerConfig {
        #[prost(message, optional, tag = "1")]
        pub metadata: Option<ContainerMetadata>,
        #[prost(message, optional, tag = "2")]
        pub image: Option<ImageSpec>,
        #[prost(string, repeated, tag = "3")]
        pub command: Vec<String>,
        #[prost(string, repeated, tag = "4")]
        pub args: Vec<String>,
        #[prost(message, repeated, tag = "6")]
        pub envs: Vec<KeyValue>,
        #[prost(message, repeated, tag = "7")]
        pub mounts: Vec<Mount>,
        #[prost(string, tag = "11")]
        pub log_path: String,
        #[prost(message, optional, tag = "15")]
        pub linux: Option<LinuxContainerConfig>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CreateContainerRequest {
        #[prost(string, tag = "1")]
        pub pod_sandbox_id: String,
        #[prost(message, optional, tag = "2")]
        pub config: Option<ContainerConfig>,
        #[prost(message, optional, tag = "3")]
        pub sandbox_config: Option<PodSandboxConfig>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CreateContainerResponse {
        #[prost(string, tag = "1")]
        pub container_id: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerIdRequest {
        #[prost(string, tag = "1")]
        pub container_id: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerStatusResponse {
        #[prost(message, optional, tag = "1")]
        pub status: Option<ContainerStatus>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerStatus {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(int32, tag = "3")]
        pub state: i32,
        #[prost(int32, tag = "7")]
        pub exit_code: i32,
        #[prost(string, tag = "10")]
        pub reason: String,
        #[prost(string, tag = "11")]
        pub message: String,
        #[prost(string, tag = "15")]
        pub log_path: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExecSyncRequest {
        #[prost(string, tag = "1")]
        pub container_id: String,
        #[prost(string, repeated, tag = "2")]
        pub cmd: Vec<String>,
        #[prost(int64, tag = "3")]
        pub timeout: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExecSyncResponse {
        #[prost(bytes = "vec", tag = "1")]
        pub stdout: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub stderr: Vec<u8>,
        #[prost(int32, tag = "3")]
        pub exit_code: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ImageStatusRequest {
        #[prost(message, optional, tag = "1")]
        pub image: Option<ImageSpec>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Image {
        #[prost(string, tag = "1")]
        pub id: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ImageStatusResponse {
        #[prost(message, optional, tag = "1")]
        pub image: Option<Image>,
    }
}

/// A CRI client on containerd's socket: calls block on a runtime of their own.
struct Cri {
    rt: tokio::runtime::Runtime,
    channel: tonic::transport::Channel,
}

impl Cri {
    fn connect(sock: &Path) -> Cri {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let path = sock.to_path_buf();
        let connector = tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        });
        let endpoint = tonic::transport::Endpoint::from_static("http://containerd").timeout(Duration::from_secs(60));
        let channel = rt.block_on(endpoint.connect_with_connector(connector)).expect("connecting to containerd's CRI");
        Cri { rt, channel }
    }

    fn call<Req, Resp>(&self, method: &str, request: Req) -> Result<Resp, tonic::Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let service = if method.starts_with("Image") { "ImageService" } else { "RuntimeService" };
        let path = format!("/runtime.v1.{service}/{method}").parse().unwrap();
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        self.rt.block_on(async {
            grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
            Ok(grpc.unary(tonic::Request::new(request), path, codec).await?.into_inner())
        })
    }

    fn ok<Req, Resp>(&self, method: &str, request: Req) -> Resp
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        self.call(method, request).unwrap_or_else(|e| panic!("CRI {method} failed: {e}"))
    }

    fn status(&self, id: &str) -> cri::ContainerStatus {
        let response: cri::ContainerStatusResponse = self.ok("ContainerStatus", cri::ContainerIdRequest { container_id: id.into() });
        response.status.expect("a container status")
    }

    fn try_exec_sync(&self, id: &str, cmd: &[&str]) -> Result<cri::ExecSyncResponse, tonic::Status> {
        let request = cri::ExecSyncRequest { container_id: id.into(), cmd: cmd.iter().map(|s| s.to_string()).collect(), timeout: 30 };
        self.call("ExecSync", request)
    }

    fn exec_sync(&self, id: &str, cmd: &[&str]) -> cri::ExecSyncResponse {
        self.try_exec_sync(id, cmd).unwrap_or_else(|e| panic!("CRI ExecSync {cmd:?} failed: {e}"))
    }
}

/// The tests' containerd config with its CRI plugin back on: runtime handler `wasmedge` for this
/// shim, our busybox image as the pause image.
fn cri_config(root: &Path, state: &Path, sock: &Path) -> String {
    let base = config_toml(root, state, sock).replace("  \"io.containerd.grpc.v1.cri\",\n", "");
    format!(
        r#"{base}
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "{BUSYBOX_IMAGE}"

# This sandbox lacks CAP_SYS_RESOURCE: the pause container's oom_score_adj of -998 cannot be set.
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.{HANDLER}]
  runtime_type = "io.containerd.wasmedge.v1"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"#
    )
}

/// Rewrites a built image's config and index for `linux/amd64`: CRI resolves images for the
/// node's platform, and the shim still tells wasm by the module's magic.
fn for_linux(mut image: writer::Image) -> writer::Image {
    use oci_spec::image::MediaType;
    let mut config: serde_json::Value = serde_json::from_slice(&image.config.data).unwrap();
    config["architecture"] = "amd64".into();
    config["os"] = "linux".into();
    image.config = Blob::new(MediaType::ImageConfig, serde_json::to_vec(&config).unwrap());
    let mut manifest: serde_json::Value = serde_json::from_slice(&image.manifest.data).unwrap();
    manifest["config"]["digest"] = image.config.digest.to_string().into();
    manifest["config"]["size"] = image.config.data.len().into();
    image.manifest = Blob::new(MediaType::ImageManifest, serde_json::to_vec(&manifest).unwrap());
    let mut index = serde_json::to_value(&image.index).unwrap();
    index["manifests"][0]["digest"] = image.manifest.digest.to_string().into();
    index["manifests"][0]["size"] = image.manifest.data.len().into();
    index["manifests"][0]["platform"] = serde_json::json!({"architecture": "amd64", "os": "linux"});
    image.index = serde_json::from_value(index).unwrap();
    image
}

fn save(image: writer::Image, name: &str) -> PathBuf {
    let path = scratch_dir().join(name);
    image.save(Format::Oci, &path).unwrap();
    path
}

/// busybox-static as /bin/busybox; as the pause image it sleeps.
fn busybox_image() -> PathBuf {
    let busybox = fs::read("/bin/busybox").expect("/bin/busybox (busybox-static) is needed");
    let spec = ImageSpec {
        reference: BUSYBOX_IMAGE.into(),
        files: vec![LayerFile { path: "/bin/busybox".into(), data: busybox, mode: 0o755 }],
        entrypoint: vec!["/bin/busybox".into(), "sleep".into(), "2147483647".into()],
        ..Default::default()
    };
    save(for_linux(writer::build(&spec).unwrap()), "e2e-busybox-cri.tar")
}

/// The hello module as /app.wasm, in an image CRI can resolve.
fn wasm_image() -> PathBuf {
    let spec = ImageSpec {
        reference: WASM_IMAGE.into(),
        files: vec![
            LayerFile { path: "/app.wasm".into(), data: fs::read(hello_wasm()).unwrap(), mode: 0o755 },
            LayerFile { path: "/data/greeting.txt".into(), data: GREETING.as_bytes().to_vec(), mode: 0o644 },
        ],
        entrypoint: vec!["/app.wasm".into()],
        ..Default::default()
    };
    save(for_linux(writer::build(&spec).unwrap()), "hello-wasm-cri.tar")
}

/// The pods this test made, removed (best effort) even when it fails, before containerd stops,
/// and their cgroup parent.
struct Pods<'a> {
    cri: &'a Cri,
    ids: Vec<String>,
    cgroup_parent: String,
}

impl Drop for Pods<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            let _: Result<cri::Empty, _> = self.cri.call("StopPodSandbox", cri::PodSandboxIdRequest { pod_sandbox_id: id.clone() });
            let _: Result<cri::Empty, _> = self.cri.call("RemovePodSandbox", cri::PodSandboxIdRequest { pod_sandbox_id: id.clone() });
        }
        remove_cgroup_parent(&self.cgroup_parent);
    }
}

fn container(name: &str, image: &str, command: &[&str], args: &[&str], namespaces: &cri::NamespaceOption) -> cri::ContainerConfig {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: image.into() }),
        command: strings(command),
        args: strings(args),
        log_path: format!("{name}/0.log"),
        linux: Some(cri::LinuxContainerConfig {
            resources: None,
            security_context: Some(cri::LinuxContainerSecurityContext { namespace_options: Some(namespaces.clone()) }),
        }),
        ..Default::default()
    }
}

/// The messages of a CRI log file (`TIME STREAM TAG MESSAGE` lines).
fn log_messages(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(4, ' ');
            let (_, stream, _, message) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            Some(format!("{stream}: {message}"))
        })
        .collect()
}

/// `ctr -n NAMESPACE ARGS` on this containerd; its stdout.
fn containerd_in(containerd: &Containerd, namespace: &str, args: &[&str]) -> String {
    let mut cmd = Command::new("ctr");
    cmd.arg("-a").arg(containerd.sock()).args(["-n", namespace]).args(args);
    let out = exec_bounded(&mut cmd, None, CTR_TIMEOUT);
    assert_eq!(out.code, 0, "ctr -n {namespace} {args:?} failed: {out:#?}");
    out.stdout
}

fn shims_of(sock: &str) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|(_, argv)| argv.first().is_some_and(|a| a.ends_with("containerd-shim-wasmedge-v1")) && argv.iter().any(|a| a == sock))
        .map(|(pid, _)| pid)
        .collect()
}

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
    let namespaces = cri::NamespaceOption { network: cri::NODE, pid: cri::POD, ipc: cri::POD };
    let cgroup_parent = format!("/e2e-cri-{}", std::process::id());
    let pod_config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata { name: "wasm-pod".into(), uid: unique_id("uid"), namespace: "default".into(), attempt: 0 }),
        // No hostname: a pod on the node's network has the node's (and no UTS namespace).
        log_directory: logs.path().display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.clone(),
            security_context: Some(cri::LinuxSandboxSecurityContext { namespace_options: Some(namespaces.clone()) }),
        }),
        ..Default::default()
    };
    let mut pods = Pods { cri: &cri, ids: Vec::new(), cgroup_parent: cgroup_parent.clone() };
    let pod: cri::RunPodSandboxResponse =
        cri.ok("RunPodSandbox", cri::RunPodSandboxRequest { config: Some(pod_config.clone()), runtime_handler: HANDLER.into() });
    let pod = pod.pod_sandbox_id;
    pods.ids.push(pod.clone());

    let create = |config: cri::ContainerConfig| -> String {
        let request = cri::CreateContainerRequest { pod_sandbox_id: pod.clone(), config: Some(config), sandbox_config: Some(pod_config.clone()) };
        let created: cri::CreateContainerResponse = cri.ok("CreateContainer", request);
        let _: cri::Empty = cri.ok("StartContainer", cri::ContainerIdRequest { container_id: created.container_id.clone() });
        created.container_id
    };
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
    let score = || fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap_or_default().trim().to_string();
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
    let _: cri::Empty = cri.ok("StopPodSandbox", cri::PodSandboxIdRequest { pod_sandbox_id: pod.clone() });
    for id in [&wasm, &sidecar] {
        assert_eq!(cri.status(id).state, cri::CONTAINER_EXITED, "{id} still runs after StopPodSandbox");
    }
    let _: cri::Empty = cri.ok("RemovePodSandbox", cri::PodSandboxIdRequest { pod_sandbox_id: pod.clone() });
    pods.ids.clear();
    wait_until("the pod's shim to exit", Duration::from_secs(30), || shims_of(&sock).is_empty());
    assert!(cri.call::<_, cri::ContainerStatusResponse>("ContainerStatus", cri::ContainerIdRequest { container_id: wasm.clone() }).is_err());
}

/// CRI leaves the pod's cgroup parent to whoever made it up (kubelet): remove it, and what a
/// failed test left in it, in each v1 hierarchy (or the v2 tree), deepest first.
fn remove_cgroup_parent(parent: &str) {
    let Ok(entries) = fs::read_dir("/sys/fs/cgroup") else { return };
    let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path().join(parent.trim_start_matches('/'))).collect();
    dirs.push(Path::new("/sys/fs/cgroup").join(parent.trim_start_matches('/')));
    for dir in dirs {
        if let Ok(children) = fs::read_dir(&dir) {
            for child in children.flatten().filter(|c| c.path().is_dir()) {
                let _ = fs::remove_dir(child.path());
            }
        }
        let _ = fs::remove_dir(dir);
    }
}
