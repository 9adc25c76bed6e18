//! CRI v1 (runtime.v1) as kubelet speaks it, for the suites that drive containerd's CRI API
//! (test/e2e_cri.rs, test/e2e_nodes.rs): the messages written out from the CRI v1 proto
//! (k8s.io/cri-api), only the fields used (prost derives their encoding, tonic's generic client
//! sends them), a blocking client, and the images a pod needs: a pause image built from
//! busybox-static and the hello module, both for linux/amd64.

use super::*;
use containerd_shim_wasmedge::image::writer::{self, Format, ImageSpec as OciImageSpec, LayerFile};
use std::collections::HashMap;

pub const HANDLER: &str = "wasmedge";
pub const CRI_NAMESPACE: &str = "k8s.io";
pub const BUSYBOX_IMAGE: &str = "docker.io/library/e2e-busybox:cri";
pub const WASM_IMAGE: &str = "docker.io/library/hello-wasm:cri";

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
    #[prost(message, optional, tag = "5")]
    pub userns_options: Option<UserNamespace>,
}
/// A pod's user namespace: `hostUsers: false` is mode POD with kubelet's ID mappings.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UserNamespace {
    #[prost(int32, tag = "1")]
    pub mode: i32,
    #[prost(message, repeated, tag = "2")]
    pub uids: Vec<IdMapping>,
    #[prost(message, repeated, tag = "3")]
    pub gids: Vec<IdMapping>,
}
#[derive(Clone, PartialEq, prost::Message)]
pub struct IdMapping {
    #[prost(uint32, tag = "1")]
    pub host_id: u32,
    #[prost(uint32, tag = "2")]
    pub container_id: u32,
    #[prost(uint32, tag = "3")]
    pub length: u32,
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
    #[prost(message, repeated, tag = "6")]
    pub uid_mappings: Vec<IdMapping>,
    #[prost(message, repeated, tag = "7")]
    pub gid_mappings: Vec<IdMapping>,
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
pub struct AuthConfig {
    #[prost(string, tag = "1")]
    pub username: String,
    #[prost(string, tag = "2")]
    pub password: String,
}
#[derive(Clone, PartialEq, prost::Message)]
pub struct PullImageRequest {
    #[prost(message, optional, tag = "1")]
    pub image: Option<ImageSpec>,
    #[prost(message, optional, tag = "2")]
    pub auth: Option<AuthConfig>,
    #[prost(message, optional, tag = "3")]
    pub sandbox_config: Option<PodSandboxConfig>,
}
#[derive(Clone, PartialEq, prost::Message)]
pub struct PullImageResponse {
    #[prost(string, tag = "1")]
    pub image_ref: String,
}
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageStatusResponse {
    #[prost(message, optional, tag = "1")]
    pub image: Option<Image>,
}

/// A CRI client on containerd's socket: calls block on a runtime of their own.
pub struct Cri {
    rt: tokio::runtime::Runtime,
    channel: tonic::transport::Channel,
}

impl Cri {
    pub fn connect(sock: &Path) -> Cri {
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

    pub fn call<Req, Resp>(&self, method: &str, request: Req) -> Result<Resp, tonic::Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let service = if method.starts_with("Image") || method == "PullImage" { "ImageService" } else { "RuntimeService" };
        let path = format!("/runtime.v1.{service}/{method}").parse().unwrap();
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        self.rt.block_on(async {
            grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
            Ok(grpc.unary(tonic::Request::new(request), path, codec).await?.into_inner())
        })
    }

    pub fn ok<Req, Resp>(&self, method: &str, request: Req) -> Resp
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        self.call(method, request).unwrap_or_else(|e| panic!("CRI {method} failed: {e}"))
    }

    pub fn status(&self, id: &str) -> ContainerStatus {
        let response: ContainerStatusResponse = self.ok("ContainerStatus", ContainerIdRequest { container_id: id.into() });
        response.status.expect("a container status")
    }

    pub fn try_exec_sync(&self, id: &str, cmd: &[&str]) -> Result<ExecSyncResponse, tonic::Status> {
        let request = ExecSyncRequest { container_id: id.into(), cmd: cmd.iter().map(|s| s.to_string()).collect(), timeout: 30 };
        self.call("ExecSync", request)
    }

    pub fn exec_sync(&self, id: &str, cmd: &[&str]) -> ExecSyncResponse {
        self.try_exec_sync(id, cmd).unwrap_or_else(|e| panic!("CRI ExecSync {cmd:?} failed: {e}"))
    }
}

/// The tests' containerd config with its CRI plugin back on: runtime handler `wasmedge` for this
/// shim, our busybox image as the pause image.
pub fn cri_config(root: &Path, state: &Path, sock: &Path) -> String {
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

/// [`cri_config`] with pod networks, for pods that cannot use the node's network (a pod with a
/// user namespace needs its own): CNI's ptp, a veth pair per pod that goes with the pod's network
/// namespace, addresses from a range this containerd keeps in its root.
pub fn cri_config_with_cni(root: &Path, state: &Path, sock: &Path) -> String {
    let conf_dir = root.join("cni");
    fs::create_dir_all(&conf_dir).unwrap();
    let network = format!(
        r#"{{"cniVersion": "1.0.0", "name": "e2e-ptp", "plugins": [{{"type": "ptp", "ipMasq": false,
            "ipam": {{"type": "host-local", "subnet": "10.254.0.0/16", "dataDir": "{}"}}}}]}}"#,
        root.join("cni-ipam").display()
    );
    fs::write(conf_dir.join("10-e2e-ptp.conflist"), network).unwrap();
    format!(
        r#"{}
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ["/usr/lib/cni"]
  conf_dir = "{}"
"#,
        cri_config(root, state, sock),
        conf_dir.display()
    )
}

/// `ctr -n NAMESPACE ARGS` on this containerd; its stdout.
pub fn containerd_in(containerd: &Containerd, namespace: &str, args: &[&str]) -> String {
    let mut cmd = Command::new("ctr");
    cmd.arg("-a").arg(containerd.sock()).args(["-n", namespace]).args(args);
    let out = exec_bounded(&mut cmd, None, CTR_TIMEOUT);
    assert_eq!(out.code, 0, "ctr -n {namespace} {args:?} failed: {out:#?}");
    out.stdout
}

pub fn save(image: writer::Image, name: &str) -> PathBuf {
    let path = scratch_dir().join(name);
    image.save(Format::Oci, &path).unwrap();
    path
}

/// busybox-static as /bin/busybox; as the pause image it sleeps.
pub fn busybox_image() -> PathBuf {
    let busybox = fs::read("/bin/busybox").expect("/bin/busybox (busybox-static) is needed");
    let spec = OciImageSpec {
        reference: BUSYBOX_IMAGE.into(),
        files: vec![LayerFile { path: "/bin/busybox".into(), data: busybox, mode: 0o755 }],
        entrypoint: vec!["/bin/busybox".into(), "sleep".into(), "2147483647".into()],
        platforms: vec!["linux/amd64".parse().unwrap()],
        ..Default::default()
    };
    save(writer::build(&spec).unwrap(), "e2e-busybox-cri.tar")
}

/// The hello module as /app.wasm, with the default platforms: CRI resolves linux/amd64.
pub fn wasm_image() -> PathBuf {
    let spec = OciImageSpec {
        reference: WASM_IMAGE.into(),
        files: vec![
            LayerFile { path: "/app.wasm".into(), data: fs::read(hello_wasm()).unwrap(), mode: 0o755 },
            LayerFile { path: "/data/greeting.txt".into(), data: GREETING.as_bytes().to_vec(), mode: 0o644 },
        ],
        entrypoint: vec!["/app.wasm".into()],
        ..Default::default()
    };
    save(writer::build(&spec).unwrap(), "hello-wasm-cri.tar")
}

/// The pods this test made, removed (best effort) even when it fails, before containerd stops,
/// and their cgroup parent.
pub struct Pods<'a> {
    pub cri: &'a Cri,
    pub ids: Vec<String>,
    pub cgroup_parent: String,
}

impl Drop for Pods<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            let _: Result<Empty, _> = self.cri.call("StopPodSandbox", PodSandboxIdRequest { pod_sandbox_id: id.clone() });
            let _: Result<Empty, _> = self.cri.call("RemovePodSandbox", PodSandboxIdRequest { pod_sandbox_id: id.clone() });
        }
        remove_cgroup_parent(&self.cgroup_parent);
    }
}

/// A pod on runtime handler `wasmedge`, as kubelet makes one: the node's network, one PID and IPC
/// namespace for its containers, its logs in a directory and its cgroups under a parent of its
/// own. Its guard removes it (best effort) even when the test fails.
pub struct Pod<'a> {
    pub id: String,
    pub config: PodSandboxConfig,
    pub namespaces: NamespaceOption,
    pub guard: Pods<'a>,
}

impl Cri {
    pub fn run_pod(&self, log_dir: &Path, cgroup_parent: &str) -> Pod<'_> {
        self.run_pod_in(log_dir, cgroup_parent, NamespaceOption { network: NODE, pid: POD, ipc: POD, userns_options: None })
    }

    /// A pod with a network namespace of its own (CNI, [`cri_config_with_cni`]) and a user
    /// namespace mapped to `host_id`.. `host_id` + 65536, as kubelet makes a `hostUsers: false` pod.
    pub fn run_pod_without_host_users(&self, log_dir: &Path, cgroup_parent: &str, host_id: u32) -> Pod<'_> {
        let range = IdMapping { host_id, container_id: 0, length: 65536 };
        let userns = UserNamespace { mode: POD, uids: vec![range.clone()], gids: vec![range] };
        self.run_pod_in(log_dir, cgroup_parent, NamespaceOption { network: POD, pid: POD, ipc: POD, userns_options: Some(userns) })
    }

    fn run_pod_in(&self, log_dir: &Path, cgroup_parent: &str, namespaces: NamespaceOption) -> Pod<'_> {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata { name: "wasm-pod".into(), uid: unique_id("uid"), namespace: "default".into(), attempt: 0 }),
            // No hostname: a pod on the node's network has the node's (and no UTS namespace).
            log_directory: log_dir.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: cgroup_parent.into(),
                security_context: Some(LinuxSandboxSecurityContext { namespace_options: Some(namespaces.clone()) }),
            }),
            ..Default::default()
        };
        let mut guard = Pods { cri: self, ids: Vec::new(), cgroup_parent: cgroup_parent.into() };
        let response: RunPodSandboxResponse = self.ok("RunPodSandbox", RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: HANDLER.into() });
        guard.ids.push(response.pod_sandbox_id.clone());
        Pod { id: response.pod_sandbox_id, config, namespaces, guard }
    }
}

impl Pod<'_> {
    /// Creates and starts a container in the pod; its id.
    pub fn start(&self, config: ContainerConfig) -> String {
        let request = CreateContainerRequest { pod_sandbox_id: self.id.clone(), config: Some(config), sandbox_config: Some(self.config.clone()) };
        let created: CreateContainerResponse = self.guard.cri.ok("CreateContainer", request);
        let _: Empty = self.guard.cri.ok("StartContainer", ContainerIdRequest { container_id: created.container_id.clone() });
        created.container_id
    }
}

pub fn container(name: &str, image: &str, command: &[&str], args: &[&str], namespaces: &NamespaceOption) -> ContainerConfig {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    ContainerConfig {
        metadata: Some(ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(ImageSpec { image: image.into() }),
        command: strings(command),
        args: strings(args),
        log_path: format!("{name}/0.log"),
        linux: Some(LinuxContainerConfig {
            resources: None,
            security_context: Some(LinuxContainerSecurityContext { namespace_options: Some(namespaces.clone()) }),
        }),
        ..Default::default()
    }
}

/// The messages of a CRI log file (`TIME STREAM TAG MESSAGE` lines).
pub fn log_messages(path: &Path) -> Vec<String> {
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

pub fn shims_of(sock: &str) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|(_, argv)| argv.first().is_some_and(|a| a.ends_with("containerd-shim-wasmedge-v1")) && argv.iter().any(|a| a == sock))
        .map(|(pid, _)| pid)
        .collect()
}

/// CRI leaves the pod's cgroup parent to whoever made it up (kubelet): remove it, and what a
/// failed test left in it, in each v1 hierarchy (or the v2 tree), deepest first.
pub fn remove_cgroup_parent(parent: &str) {
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
