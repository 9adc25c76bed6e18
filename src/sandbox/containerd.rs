//! containerd, through its gRPC API (containerd-client's generated clients): the service's
//! lease, layers unpacked into committed snapshots, and one container's life (create, start,
//! wait, kill, delete). Everything the service makes lives in its own containerd namespace.
use anyhow::{anyhow, Context, Result};
use containerd_client::services::v1::{
    container::Runtime,
    containers_client::ContainersClient,
    content_client::ContentClient,
    diff_client::DiffClient,
    leases_client::LeasesClient,
    snapshots::{
        snapshots_client::SnapshotsClient, CommitSnapshotRequest, ListSnapshotsRequest, PrepareSnapshotRequest,
        RemoveSnapshotRequest, StatSnapshotRequest,
    },
    tasks_client::TasksClient,
    version_client::VersionClient,
    ApplyRequest, Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest, DeleteContentRequest,
    DeleteTaskRequest, KillRequest, ListContainersRequest, StartRequest, WaitRequest, WriteAction,
    WriteContentRequest,
};
use containerd_client::types::{Descriptor, Mount};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// The lease that keeps the service's committed snapshots from containerd's garbage collector.
const LEASE: &str = "wasmedge-sandbox";
/// Label on every container the service creates, so a restarted service finds what a crash left.
pub const OWNER_LABEL: &str = "io.wasmedge.sandbox";
const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// Blobs are sent to the content store in pieces of this size (containerd takes up to 16 MiB).
const CHUNK: usize = 1 << 20;

#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    namespace: String,
    snapshotter: String,
}

/// A container to create: its id, runtime, OCI spec and rootfs snapshot (none: the spec's
/// root path is used as it is).
pub struct ContainerSpec<'a> {
    pub id: &'a str,
    pub runtime: &'a str,
    pub spec: &'a serde_json::Value,
    pub snapshot_key: Option<&'a str>,
}

/// Where a task's stdio goes: paths the shim opens (empty = /dev/null).
pub struct Stdio<'a> {
    pub stdin: &'a str,
    pub stdout: &'a str,
    pub stderr: &'a str,
}

fn status(what: impl std::fmt::Display) -> impl FnOnce(Status) -> anyhow::Error {
    move |s| anyhow!("{what}: {:?}: {}", s.code(), s.message())
}

impl Containerd {
    /// Connects lazily: the first call dials `socket`, and a containerd restarted later is
    /// dialled again.
    pub async fn connect(socket: &Path, namespace: &str, snapshotter: &str) -> Result<Containerd> {
        let channel = containerd_client::connect(socket)
            .await
            .with_context(|| format!("connecting to containerd at {}", socket.display()))?;
        Ok(Containerd { channel, namespace: namespace.into(), snapshotter: snapshotter.into() })
    }

    fn req<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let md = request.metadata_mut();
        md.insert("containerd-namespace", self.namespace.parse().expect("a valid namespace"));
        md.insert("containerd-lease", LEASE.parse().expect("a valid lease id"));
        request
    }

    /// containerd's version: a cheap probe of the connection.
    pub async fn version(&self) -> Result<String> {
        let mut client = VersionClient::new(self.channel.clone());
        let v = client.version(()).await.map_err(status("containerd version"))?.into_inner();
        Ok(v.version)
    }

    /// The service's lease (created once; it never expires).
    pub async fn ensure_lease(&self) -> Result<()> {
        let mut client = LeasesClient::new(self.channel.clone());
        let mut request = Request::new(containerd_client::services::v1::CreateRequest { id: LEASE.into(), labels: Default::default() });
        request.metadata_mut().insert("containerd-namespace", self.namespace.parse()?);
        match client.create(request).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => Ok(()),
            Err(s) => Err(status("creating the lease")(s)),
        }
    }

    pub async fn snapshot_exists(&self, key: &str) -> Result<bool> {
        let mut client = SnapshotsClient::new(self.channel.clone());
        let request = self.req(StatSnapshotRequest { snapshotter: self.snapshotter.clone(), key: key.into() });
        match client.stat(request).await {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(status(format!("stat of snapshot {key}"))(s)),
        }
    }

    /// An active snapshot on `parent`, and the mounts that make it a rootfs.
    pub async fn prepare(&self, key: &str, parent: &str) -> Result<Vec<Mount>> {
        let mut client = SnapshotsClient::new(self.channel.clone());
        let request = self.req(PrepareSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key: key.into(),
            parent: parent.into(),
            labels: Default::default(),
        });
        Ok(client.prepare(request).await.map_err(status(format!("preparing snapshot {key}")))?.into_inner().mounts)
    }

    pub async fn remove_snapshot(&self, key: &str) -> Result<()> {
        let mut client = SnapshotsClient::new(self.channel.clone());
        let request = self.req(RemoveSnapshotRequest { snapshotter: self.snapshotter.clone(), key: key.into() });
        match client.remove(request).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(status(format!("removing snapshot {key}"))(s)),
        }
    }

    /// Every snapshot of the namespace, name to parent (empty: none).
    pub async fn snapshots(&self) -> Result<HashMap<String, String>> {
        let mut client = SnapshotsClient::new(self.channel.clone());
        let request = self.req(ListSnapshotsRequest { snapshotter: self.snapshotter.clone(), filters: Vec::new() });
        let mut stream = client.list(request).await.map_err(status("listing snapshots"))?.into_inner();
        let mut all = HashMap::new();
        while let Some(page) = stream.message().await.map_err(status("listing snapshots"))? {
            all.extend(page.info.into_iter().map(|info| (info.name, info.parent)));
        }
        Ok(all)
    }

    /// Removes the snapshots named `prefix...` that are neither one of `keep` nor under one, the
    /// children before their parents; one with a child it may not remove stays. Returns how
    /// many it removed.
    pub async fn remove_unused_snapshots(&self, prefix: &str, keep: &HashSet<String>) -> Result<usize> {
        let all = self.snapshots().await?;
        let mut live = HashSet::new();
        for top in keep {
            let mut name = top.as_str();
            while !name.is_empty() && live.insert(name.to_string()) {
                name = all.get(name).map_or("", String::as_str);
            }
        }
        let mut doomed: HashSet<&str> =
            all.keys().map(String::as_str).filter(|n| n.starts_with(prefix) && !live.contains(*n)).collect();
        let mut removed = 0;
        loop {
            // Leaves: no snapshot left has them as parent.
            let leaves: Vec<&str> = doomed
                .iter()
                .copied()
                .filter(|d| !all.iter().any(|(n, p)| p == d && (doomed.contains(n.as_str()) || !n.starts_with(prefix))))
                .collect();
            if leaves.is_empty() {
                return Ok(removed);
            }
            for leaf in leaves {
                self.remove_snapshot(leaf).await?;
                doomed.remove(leaf);
                removed += 1;
            }
        }
    }

    /// Applies layer `blob` (a tar, gzip or not, as `media_type` says) on `parent` and commits
    /// the result as snapshot `name`. A name that exists already is kept: same name, same
    /// layers.
    pub async fn unpack_layer(&self, name: &str, parent: &str, media_type: &str, blob: &[u8]) -> Result<()> {
        if self.snapshot_exists(name).await? {
            return Ok(());
        }
        let digest = format!("sha256:{}", crate::sandbox::hex_sha256(blob));
        self.write_blob(&digest, blob).await?;
        let key = format!("{name}-extract-{}", std::process::id());
        self.remove_snapshot(&key).await?;
        let result = async {
            let mounts = self.prepare(&key, parent).await?;
            let mut diff = DiffClient::new(self.channel.clone());
            let desc = Descriptor { media_type: media_type.into(), digest: digest.clone(), size: blob.len() as i64, annotations: Default::default() };
            diff.apply(self.req(ApplyRequest { diff: Some(desc), mounts, payloads: Default::default(), sync_fs: false }))
                .await
                .map_err(status(format!("applying layer {digest}")))?;
            let mut snapshots = SnapshotsClient::new(self.channel.clone());
            let commit = CommitSnapshotRequest { snapshotter: self.snapshotter.clone(), name: name.into(), key: key.clone(), labels: Default::default() };
            match snapshots.commit(self.req(commit)).await {
                Ok(_) => Ok(()),
                // Another request committed the same layers first.
                Err(s) if s.code() == Code::AlreadyExists => Ok(()),
                Err(s) => Err(status(format!("committing snapshot {name}"))(s)),
            }
        }
        .await;
        if result.is_err() {
            let _ = self.remove_snapshot(&key).await;
        }
        let mut content = ContentClient::new(self.channel.clone());
        let _ = content.delete(self.req(DeleteContentRequest { digest })).await;
        result
    }

    /// Writes `blob` into the content store under `digest` (checked by containerd).
    async fn write_blob(&self, digest: &str, blob: &[u8]) -> Result<()> {
        let reference = format!("wasmedge-sandbox-{digest}");
        let total = blob.len() as i64;
        let mut messages = Vec::new();
        let mut offset = 0usize;
        for chunk in blob.chunks(CHUNK) {
            messages.push(WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: reference.clone(),
                total,
                offset: offset as i64,
                data: chunk.to_vec(),
                ..Default::default()
            });
            offset += chunk.len();
        }
        messages.push(WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: reference.clone(),
            total,
            offset: offset as i64,
            expected: digest.into(),
            ..Default::default()
        });
        let mut client = ContentClient::new(self.channel.clone());
        let request = self.req(tokio_stream_of(messages));
        match client.write(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => {}
                        Ok(None) => return Ok(()),
                        Err(s) if s.code() == Code::AlreadyExists => return Ok(()),
                        Err(s) => return Err(status(format!("writing {digest}"))(s)),
                    }
                }
            }
            Err(s) if s.code() == Code::AlreadyExists => Ok(()),
            Err(s) => Err(status(format!("writing {digest}"))(s)),
        }
    }

    /// Creates the container and its task (not started), stdio as given.
    pub async fn create(&self, c: &ContainerSpec<'_>, rootfs: Vec<Mount>, stdio: &Stdio<'_>) -> Result<()> {
        let spec = serde_json::to_vec(c.spec).context("encoding the OCI spec")?;
        let container = Container {
            id: c.id.into(),
            labels: [(OWNER_LABEL.to_string(), "1".to_string())].into(),
            runtime: Some(Runtime { name: c.runtime.into(), options: None }),
            spec: Some(prost_types::Any { type_url: SPEC_TYPE.into(), value: spec }),
            snapshotter: if c.snapshot_key.is_some() { self.snapshotter.clone() } else { String::new() },
            snapshot_key: c.snapshot_key.unwrap_or_default().into(),
            ..Default::default()
        };
        let mut containers = ContainersClient::new(self.channel.clone());
        containers
            .create(self.req(CreateContainerRequest { container: Some(container) }))
            .await
            .map_err(status(format!("creating container {}", c.id)))?;
        let mut tasks = TasksClient::new(self.channel.clone());
        let task = CreateTaskRequest {
            container_id: c.id.into(),
            rootfs,
            stdin: stdio.stdin.into(),
            stdout: stdio.stdout.into(),
            stderr: stdio.stderr.into(),
            ..Default::default()
        };
        tasks.create(self.req(task)).await.map_err(status(format!("creating task {}", c.id)))?;
        Ok(())
    }

    pub async fn start(&self, id: &str) -> Result<()> {
        let mut tasks = TasksClient::new(self.channel.clone());
        tasks
            .start(self.req(StartRequest { container_id: id.into(), exec_id: String::new() }))
            .await
            .map_err(status(format!("starting task {id}")))?;
        Ok(())
    }

    /// Waits for the task to exit; its exit status.
    pub async fn wait(&self, id: &str) -> Result<u32> {
        let mut tasks = TasksClient::new(self.channel.clone());
        let response = tasks
            .wait(self.req(WaitRequest { container_id: id.into(), exec_id: String::new() }))
            .await
            .map_err(status(format!("waiting for task {id}")))?;
        Ok(response.into_inner().exit_status)
    }

    /// SIGKILL to every process of the task; a task that is gone already is not an error.
    pub async fn kill(&self, id: &str) -> Result<()> {
        let mut tasks = TasksClient::new(self.channel.clone());
        match tasks.kill(self.req(KillRequest { container_id: id.into(), exec_id: String::new(), signal: 9, all: true })).await {
            Ok(_) => Ok(()),
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
            Err(s) => Err(status(format!("killing task {id}"))(s)),
        }
    }

    /// Deletes task and container (and the container's snapshot, which the caller named),
    /// killing a task that still runs. Missing parts are skipped, so it can finish what a
    /// failed create began.
    pub async fn delete(&self, id: &str, snapshot_key: Option<&str>) -> Result<()> {
        let mut tasks = TasksClient::new(self.channel.clone());
        for attempt in 0..3 {
            match tasks.delete(self.req(DeleteTaskRequest { container_id: id.into() })).await {
                Ok(_) => break,
                Err(s) if s.code() == Code::NotFound => break,
                Err(s) if s.code() == Code::FailedPrecondition && attempt < 2 => {
                    // Still running: kill it, then wait for the exit before deleting.
                    self.kill(id).await?;
                    let _ = tokio::time::timeout(Duration::from_secs(10), self.wait(id)).await;
                }
                Err(s) => return Err(status(format!("deleting task {id}"))(s)),
            }
        }
        let mut containers = ContainersClient::new(self.channel.clone());
        match containers.delete(self.req(DeleteContainerRequest { id: id.into() })).await {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(status(format!("deleting container {id}"))(s)),
        }
        if let Some(key) = snapshot_key {
            self.remove_snapshot(key).await?;
        }
        Ok(())
    }

    /// The ids and snapshot keys of containers the service made (a crash may leave some).
    pub async fn own_containers(&self) -> Result<Vec<(String, String)>> {
        let mut containers = ContainersClient::new(self.channel.clone());
        let filter = format!("labels.\"{OWNER_LABEL}\"");
        let list = containers
            .list(self.req(ListContainersRequest { filters: vec![filter] }))
            .await
            .map_err(status("listing containers"))?
            .into_inner();
        Ok(list.containers.into_iter().map(|c| (c.id, c.snapshot_key)).collect())
    }
}

/// A finite request stream for a client-streaming call.
fn tokio_stream_of<T: Send + 'static>(items: Vec<T>) -> impl tonic::codegen::tokio_stream::Stream<Item = T> {
    tonic::codegen::tokio_stream::iter(items)
}
