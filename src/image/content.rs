//! A container's image as containerd stores it: Containers.Get → Images.Get → the target in the
//! content store → (index →) manifest → config, over containerd's gRPC socket (the shim's
//! `-address`). Only the shim's classification uses it, and only when the cheap rules of
//! [`super::detect`] do not settle a container, so a normal wasm start never talks to containerd.
//!
//! The gRPC clients and messages are containerd-client's (generated from containerd's protos at
//! build time, with `protoc`). Parsing the JSON documents is pure and tested without containerd.
use super::detect::{is_wasm_layer, ImageFacts};
use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use std::time::Duration;

/// The CRI plugin names the image in this annotation of the spec; it leaves the container's own
/// image field empty, so this is how a Kubernetes container's image is found.
pub const CRI_IMAGE_ANNOTATION: &str = "io.kubernetes.cri.image-name";

/// Media types of the documents walked from an image's target.
const INDEX_TYPES: &[&str] =
    &["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"];
const MANIFEST_TYPES: &[&str] =
    &["application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"];

/// Indexes, manifests and configs are small; anything bigger is not one.
const MAX_DOCUMENT: u64 = 4 << 20;
/// A wasm module read from a layer.
pub const MAX_MODULE: u64 = 1 << 30;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Per call; reading a large module from a local disk stays well within it.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// The JSON documents

/// An OCI (or Docker) content descriptor, as far as the shim needs it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

/// A manifest: its config and its layers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Manifest {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    architecture: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    Index,
    Manifest,
}

/// What a document is: by its media type, or for an unknown or missing one by its shape.
pub fn document_kind(media_type: &str, data: &[u8]) -> Result<Document> {
    if INDEX_TYPES.contains(&media_type) {
        return Ok(Document::Index);
    }
    if MANIFEST_TYPES.contains(&media_type) {
        return Ok(Document::Manifest);
    }
    let value: serde_json::Value = serde_json::from_slice(data).context("not a JSON document")?;
    if value.get("manifests").is_some_and(|m| m.is_array()) {
        Ok(Document::Index)
    } else if value.get("config").is_some_and(|c| c.is_object()) {
        Ok(Document::Manifest)
    } else {
        bail!("neither an image index nor a manifest (media type {media_type:?})")
    }
}

/// The host's architecture as OCI names it (Go's GOARCH).
fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn is_wasm_platform(p: &Platform) -> bool {
    p.architecture == "wasm" && matches!(p.os.as_str(), "wasi" | "wasip1" | "wasip2")
}

/// The manifest of an index to look at: the wasi/wasm one if there is one, else the one for this
/// host (linux/amd64 on x86_64), else the first.
pub fn select_manifest(index: &[u8]) -> Result<Descriptor> {
    let index: Index = serde_json::from_slice(index).context("malformed image index")?;
    let with = |pred: &dyn Fn(&Platform) -> bool| {
        index.manifests.iter().find(|d| d.platform.as_ref().is_some_and(pred)).cloned()
    };
    with(&is_wasm_platform)
        .or_else(|| with(&|p| p.os == "linux" && p.architecture == host_architecture()))
        .or_else(|| index.manifests.first().cloned())
        .context("the image index lists no manifest")
}

pub fn parse_manifest(manifest: &[u8]) -> Result<Manifest> {
    serde_json::from_slice(manifest).context("malformed image manifest")
}

/// The `architecture` of an image config (OCI, Docker or the CNCF wasm artifact config alike).
pub fn config_architecture(config: &[u8]) -> Result<String> {
    let config: Config = serde_json::from_slice(config).context("malformed image config")?;
    Ok(config.architecture)
}

/// The facts of an image from its manifest and config architecture.
pub fn facts(manifest: &Manifest, architecture: String) -> ImageFacts {
    ImageFacts {
        architecture,
        layer_media_types: manifest.layers.iter().map(|l| l.media_type.clone()).collect(),
        wasm_layer: manifest.layers.iter().find(|l| is_wasm_layer(&l.media_type)).map(|l| l.digest.clone()),
    }
}

/// Checks that `data` is the content `digest` names.
pub fn verify_digest(digest: &str, data: &[u8]) -> Result<()> {
    let Some(hex) = digest.strip_prefix("sha256:") else { bail!("unsupported digest {digest:?}: only sha256 is") };
    let actual = format!("{:x}", Sha256::digest(data));
    ensure!(actual == hex, "content of {digest} has digest sha256:{actual}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// containerd's gRPC API, through containerd-client's generated clients

use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient, images_client::ImagesClient,
    GetContainerRequest, GetImageRequest, ReadContentRequest,
};

/// A connection to containerd's gRPC API in one namespace. Calls block on a current-thread
/// runtime of its own, made per connection.
pub struct Containerd {
    rt: tokio::runtime::Runtime,
    channel: tonic::transport::Channel,
    namespace: String,
}

impl Containerd {
    /// `address` is containerd's gRPC socket, as the shim's `-address` flag gives it.
    pub fn connect(address: &str, namespace: &str) -> Result<Containerd> {
        let path = address.strip_prefix("unix://").unwrap_or(address).to_string();
        ensure!(path.starts_with('/'), "containerd address {address:?} is not a unix socket path");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .context("creating a tokio runtime")?;
        let endpoint = tonic::transport::Endpoint::from_static("http://containerd")
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        let connector = tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        });
        let channel = rt
            .block_on(endpoint.connect_with_connector(connector))
            .with_context(|| format!("connecting to containerd at {address}"))?;
        Ok(Containerd { rt, channel, namespace: namespace.to_string() })
    }

    fn request<T>(&self, message: T) -> Result<tonic::Request<T>> {
        let mut request = tonic::Request::new(message);
        let namespace = self.namespace.parse().map_err(|_| anyhow!("invalid namespace {:?}", self.namespace))?;
        request.metadata_mut().insert("containerd-namespace", namespace);
        Ok(request)
    }

    /// The name of the image container `id` was created from (empty when it has none).
    pub fn container_image(&self, id: &str) -> Result<String> {
        let request = self.request(GetContainerRequest { id: id.into() })?;
        let mut client = ContainersClient::new(self.channel.clone());
        let response = self
            .rt
            .block_on(client.get(request))
            .map_err(status_error)
            .with_context(|| format!("getting container {id}"))?;
        Ok(response.into_inner().container.map(|c| c.image).unwrap_or_default())
    }

    /// What image `name` says of itself: its target, through an index if it is one, to the
    /// manifest and config.
    pub fn image_facts(&self, name: &str) -> Result<ImageFacts> {
        let request = self.request(GetImageRequest { name: name.into() })?;
        let mut client = ImagesClient::new(self.channel.clone());
        let response =
            self.rt.block_on(client.get(request)).map_err(status_error).with_context(|| format!("getting image {name}"))?;
        let target =
            response.into_inner().image.and_then(|i| i.target).with_context(|| format!("image {name} has no target"))?;
        let (mut media_type, mut digest) = (target.media_type, target.digest);
        // An index may point at another index; two levels are plenty.
        for _ in 0..3 {
            let data = self.read(&digest, MAX_DOCUMENT)?;
            match document_kind(&media_type, &data).with_context(|| format!("reading {digest}"))? {
                Document::Index => {
                    let chosen = select_manifest(&data).with_context(|| format!("reading index {digest}"))?;
                    (media_type, digest) = (chosen.media_type, chosen.digest);
                }
                Document::Manifest => {
                    let manifest = parse_manifest(&data).with_context(|| format!("reading manifest {digest}"))?;
                    let config = self.read(&manifest.config.digest, MAX_DOCUMENT)?;
                    let architecture = config_architecture(&config)
                        .with_context(|| format!("reading config {}", manifest.config.digest))?;
                    return Ok(facts(&manifest, architecture));
                }
            }
        }
        bail!("image {name}: indexes nested too deep")
    }

    /// The content of blob `digest`, checked against its digest.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        self.read(digest, MAX_MODULE)
    }

    fn read(&self, digest: &str, max: u64) -> Result<Vec<u8>> {
        let request = self.request(ReadContentRequest { digest: digest.into(), offset: 0, size: 0 })?;
        let mut client = ContentClient::new(self.channel.clone());
        let data = self.rt.block_on(async {
            let mut stream = client.read(request).await.map_err(status_error)?.into_inner();
            let mut data = Vec::new();
            while let Some(chunk) = stream.message().await.map_err(status_error)? {
                ensure!(chunk.offset == data.len() as i64, "content arrived out of order");
                ensure!((data.len() + chunk.data.len()) as u64 <= max, "larger than {max} bytes");
                data.extend_from_slice(&chunk.data);
            }
            Ok::<_, anyhow::Error>(data)
        });
        let data = data.with_context(|| format!("reading {digest} from containerd's content store"))?;
        verify_digest(digest, &data)?;
        Ok(data)
    }
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow!("{:?}: {}", status.code(), status.message())
}

/// [`ImageFacts`] of the image of container `container_id`.
pub fn image_facts(address: &str, namespace: &str, container_id: &str) -> Result<ImageFacts> {
    let containerd = Containerd::connect(address, namespace)?;
    let image = containerd.container_image(container_id)?;
    ensure!(!image.is_empty(), "container {container_id} has no image");
    containerd.image_facts(&image)
}

/// Blob `digest` of containerd's content store.
pub fn read_blob(address: &str, namespace: &str, digest: &str) -> Result<Vec<u8>> {
    Containerd::connect(address, namespace)?.read_blob(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bytes(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    fn desc(digest: &str, os: &str, arch: &str) -> serde_json::Value {
        json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": 1,
               "platform": {"os": os, "architecture": arch}})
    }

    #[test]
    fn index_prefers_wasi_wasm() {
        let index = bytes(json!({"schemaVersion": 2, "manifests": [
            desc("sha256:a", "linux", host_architecture()), desc("sha256:w", "wasi", "wasm"), desc("sha256:b", "linux", "s390x"),
        ]}));
        assert_eq!(select_manifest(&index).unwrap().digest, "sha256:w");
        let wasip1 = bytes(json!({"manifests": [desc("sha256:a", "linux", "amd64"), desc("sha256:p", "wasip1", "wasm")]}));
        assert_eq!(select_manifest(&wasip1).unwrap().digest, "sha256:p");
    }

    #[test]
    fn index_falls_back_to_this_host_then_to_the_first() {
        let index = bytes(json!({"manifests": [
            desc("sha256:s", "linux", "s390x"), desc("sha256:h", "linux", host_architecture()), desc("sha256:r", "linux", "riscv64"),
        ]}));
        assert_eq!(select_manifest(&index).unwrap().digest, "sha256:h");
        let foreign = bytes(json!({"manifests": [desc("sha256:s", "linux", "s390x"), desc("sha256:r", "linux", "riscv64")]}));
        assert_eq!(select_manifest(&foreign).unwrap().digest, "sha256:s");
        // No platform at all (an OCI layout's index.json often has none).
        let bare = bytes(json!({"manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:x", "size": 3}]}));
        assert_eq!(select_manifest(&bare).unwrap().digest, "sha256:x");
        assert!(select_manifest(&bytes(json!({"manifests": []}))).is_err());
        assert!(select_manifest(b"not json").is_err());
    }

    #[test]
    fn documents_are_told_apart_by_media_type_or_shape() {
        let index = bytes(json!({"manifests": []}));
        let manifest = bytes(json!({"config": {"digest": "sha256:c"}, "layers": []}));
        assert_eq!(document_kind("application/vnd.oci.image.index.v1+json", b"").unwrap(), Document::Index);
        assert_eq!(document_kind("application/vnd.docker.distribution.manifest.list.v2+json", b"").unwrap(), Document::Index);
        assert_eq!(document_kind("application/vnd.docker.distribution.manifest.v2+json", b"").unwrap(), Document::Manifest);
        assert_eq!(document_kind("", &index).unwrap(), Document::Index);
        assert_eq!(document_kind("application/octet-stream", &manifest).unwrap(), Document::Manifest);
        assert!(document_kind("", b"{}").is_err());
    }

    #[test]
    fn layer_media_types_and_the_wasm_layer() {
        let manifest = parse_manifest(&bytes(json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": "sha256:c", "size": 10},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:t", "size": 5},
                {"mediaType": "application/wasm", "digest": "sha256:m", "size": 8},
                {"mediaType": "application/wasm", "digest": "sha256:n", "size": 8},
            ],
        })))
        .unwrap();
        assert_eq!(manifest.config.media_type, "application/vnd.wasm.config.v0+json");
        let facts = facts(&manifest, "wasm".into());
        assert_eq!(facts.architecture, "wasm");
        assert_eq!(facts.layer_media_types, ["application/vnd.oci.image.layer.v1.tar+gzip", "application/wasm", "application/wasm"]);
        assert_eq!(facts.wasm_layer.as_deref(), Some("sha256:m"));

        let linux = parse_manifest(&bytes(json!({
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "sha256:c", "size": 1},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": "sha256:l", "size": 1}],
        })))
        .unwrap();
        assert_eq!(super::facts(&linux, "amd64".into()).wasm_layer, None);
        assert!(parse_manifest(&bytes(json!({"layers": []}))).is_err());
    }

    #[test]
    fn config_architecture_of_each_config_kind() {
        let oci = bytes(json!({"architecture": "wasm", "os": "wasi", "rootfs": {"type": "layers", "diff_ids": []}}));
        assert_eq!(config_architecture(&oci).unwrap(), "wasm");
        let artifact = bytes(json!({"architecture": "wasm", "os": "wasip1", "layerDigests": ["sha256:m"]}));
        assert_eq!(config_architecture(&artifact).unwrap(), "wasm");
        assert_eq!(config_architecture(b"{}").unwrap(), "");
        assert!(config_architecture(b"[").is_err());
    }

    #[test]
    fn digests_are_verified() {
        let digest = format!("sha256:{:x}", Sha256::digest(b"abc"));
        verify_digest(&digest, b"abc").unwrap();
        assert!(verify_digest(&digest, b"abd").is_err());
        assert!(verify_digest("sha512:00", b"abc").is_err());
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_hang() {
        let err = image_facts("/nonexistent/containerd.sock", "default", "c1").unwrap_err();
        assert!(format!("{err:#}").contains("connecting to containerd"), "{err:#}");
        assert!(Containerd::connect("tcp://127.0.0.1:1", "default").is_err());
    }
}
