//! Writes `wasi/wasm` OCI images: an OCI layout directory, an OCI-layout tarball (what `ctr
//! image import` reads) or a docker-archive tarball (what `docker load` reads). An image has one
//! layer of its own files, optionally on top of shared base layers (an interpreter, say) that
//! are built once with [`Layer::from_files`] and reused by every image that needs them.
//!
//! Output is deterministic: tar entries are sorted and carry mtime 0 and uid/gid 0, and JSON
//! objects are written with sorted keys, so the same input always gives the same digests.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Component, Path};
use std::str::FromStr;

use anyhow::{bail, ensure, Context, Result};
use flate2::{write::GzEncoder, Compression};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest, HistoryBuilder,
    ImageConfigurationBuilder, ImageIndex, ImageIndexBuilder, ImageManifestBuilder, MediaType,
    OciLayoutBuilder, Os, PlatformBuilder, RootFsBuilder, Sha256Digest, ANNOTATION_REF_NAME,
};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// Manifest annotation that tells wasm-aware runtimes how to run the image.
pub const VARIANT_ANNOTATION: &str = "module.wasm.image/variant";
/// The default variant: a plain wasm image that runtimes detect by content.
pub const VARIANT_COMPAT_SMART: &str = "compat-smart";
/// Index annotation containerd uses as the full image name on import.
pub const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// Config media type of the CNCF "Wasm OCI Artifact" layout.
pub const WASM_ARTIFACT_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// Layer media type of that layout: the module itself, not a tar.
pub const WASM_MODULE_LAYER: &str = "application/wasm";

/// A regular file to put into the image's layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerFile {
    /// Absolute path inside the image, e.g. `/app.wasm`.
    pub path: String,
    pub data: Vec<u8>,
    /// Permission bits, e.g. `0o755`.
    pub mode: u32,
}

/// What to build: one layer of files plus the run configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageSpec {
    /// Image reference, e.g. `docker.io/library/hello:latest` or just `hello`.
    pub reference: String,
    pub files: Vec<LayerFile>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// Manifest annotations; they override the defaults (the compat-smart variant).
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339 creation time; left out by default so builds are reproducible.
    pub created: Option<String>,
    /// Layers under the one `files` make, bottom first: content shared between images, such as
    /// a language runtime. Empty for a one-layer image.
    pub base_layers: Vec<Layer>,
    /// Platforms of the image's manifests; empty means [`DEFAULT_PLATFORMS`].
    pub platforms: Vec<Platform>,
}

/// By default an image has a `wasi/wasm` manifest (ctr, nerdctl, Docker `--platform=wasi/wasm`)
/// and `linux/amd64` and `linux/arm64` compat manifests (Kubernetes CRI resolves the node's
/// platform): one tag for every door. They share the layers; the shim tells wasm by content.
pub const DEFAULT_PLATFORMS: [&str; 3] = ["wasi/wasm", "linux/amd64", "linux/arm64"];

/// A platform of a manifest, `os/architecture`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
}

impl Platform {
    pub fn wasi_wasm() -> Platform {
        Platform { os: "wasi".into(), architecture: "wasm".into() }
    }

    /// The platforms of `list` (`os/arch`, comma-separated), in order, without repeats.
    pub fn parse_list(list: &str) -> Result<Vec<Platform>> {
        let mut platforms: Vec<Platform> = Vec::new();
        for item in list.split(',').map(str::trim) {
            let platform: Platform = item.parse().map_err(anyhow::Error::msg)?;
            ensure!(!platforms.contains(&platform), "platform {platform} is given twice");
            platforms.push(platform);
        }
        Ok(platforms)
    }

    pub fn oci(&self) -> Result<oci_spec::image::Platform> {
        Ok(PlatformBuilder::default()
            .architecture(Arch::from(self.architecture.as_str()))
            .os(Os::from(self.os.as_str()))
            .build()?)
    }
}

impl FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let word = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        match s.split_once('/') {
            Some((os, arch)) if word(os) && word(arch) => {
                Ok(Platform { os: os.into(), architecture: arch.into() })
            }
            _ => Err(format!("invalid platform {s:?} (expected OS/ARCH, e.g. wasi/wasm or linux/amd64)")),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)
    }
}

/// The platforms of `spec_platforms`, or the default ones when it is empty.
fn platforms_or_default(spec_platforms: &[Platform]) -> Vec<Platform> {
    if spec_platforms.is_empty() {
        DEFAULT_PLATFORMS.iter().map(|p| p.parse().expect("a valid default platform")).collect()
    } else {
        spec_platforms.to_vec()
    }
}

/// A layer ready to go into images: the gzip'ed tar and the digest of the tar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub blob: Blob,
    /// `sha256:` of the uncompressed tar, as listed in the config's rootfs.
    pub diff_id: String,
}

impl Layer {
    /// The layer of `files` plus their parent directories (deterministic, like every layer here).
    pub fn from_files(files: &[LayerFile]) -> Result<Layer> {
        let tar = layer_tar(files)?;
        Ok(Layer {
            diff_id: sha256_digest(&tar).to_string(),
            blob: Blob::new(MediaType::ImageLayerGzip, gzip(&tar)?),
        })
    }
}

/// One content-addressed blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub media_type: MediaType,
    /// `sha256:<hex>` of `data`.
    pub digest: Digest,
    pub data: Vec<u8>,
}

impl Blob {
    pub fn new(media_type: MediaType, data: Vec<u8>) -> Blob {
        Blob {
            media_type,
            digest: sha256_digest(&data),
            data,
        }
    }

    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            self.media_type.clone(),
            self.data.len() as u64,
            self.digest.clone(),
        )
    }

    /// Path of the blob inside an OCI layout.
    pub fn path(&self) -> String {
        format!("blobs/sha256/{}", self.digest.digest())
    }
}

/// The config and manifest of one platform of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformManifest {
    pub platform: Platform,
    pub config: Blob,
    pub manifest: Blob,
}

/// A built image: its blobs and the index that names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Normalized reference, e.g. `docker.io/library/hello:latest`.
    pub reference: String,
    /// The gzip'ed tar layer of the spec's files (the top layer).
    pub layer: Blob,
    /// One per platform, in the order asked; they share the layers.
    pub manifests: Vec<PlatformManifest>,
    /// The image index of the platforms' manifests, when there is more than one: what the tag
    /// names. With one platform the tag names its manifest.
    pub platform_index: Option<Blob>,
    /// `sha256:` of the uncompressed layer tar, as listed in the config's rootfs (of an
    /// artifact: the module's digest).
    pub diff_id: String,
    /// The layout's `index.json`: names the tag's target as the image.
    pub index: ImageIndex,
    /// The spec's base layers, under `layer`.
    pub base_layers: Vec<Layer>,
}

/// Output formats of [`Image::save`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OCI-layout tarball (`ctr image import`, `docker load` 25+).
    Oci,
    /// OCI-layout tarball plus a docker-archive `manifest.json` (`docker load`, any version).
    Docker,
    /// OCI layout directory.
    Layout,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "oci" => Ok(Format::Oci),
            "docker" => Ok(Format::Docker),
            "layout" => Ok(Format::Layout),
            _ => Err(format!(
                "unknown format {s:?} (expected oci, docker or layout)"
            )),
        }
    }
}

/// Builds the layer, config, manifest and index of `spec`.
pub fn build(spec: &ImageSpec) -> Result<Image> {
    let reference = normalize_reference(&spec.reference)?;
    for e in &spec.env {
        ensure!(e.contains('='), "env entry {e:?} is not KEY=VALUE");
    }

    let tar = layer_tar(&spec.files)?;
    let diff_id = sha256_digest(&tar).to_string();
    let layer = Blob::new(MediaType::ImageLayerGzip, gzip(&tar)?);

    let mut run = ConfigBuilder::default();
    if !spec.entrypoint.is_empty() {
        run = run.entrypoint(spec.entrypoint.clone());
    }
    if !spec.cmd.is_empty() {
        run = run.cmd(spec.cmd.clone());
    }
    if !spec.env.is_empty() {
        run = run.env(spec.env.clone());
    }
    if let Some(dir) = &spec.working_dir {
        run = run.working_dir(dir.clone());
    }
    let run = run.build()?;
    let mut annotations =
        BTreeMap::from([(VARIANT_ANNOTATION.into(), VARIANT_COMPAT_SMART.into())]);
    annotations.extend(spec.annotations.clone());
    let layers: Vec<Descriptor> = spec
        .base_layers
        .iter()
        .map(|l| l.blob.descriptor())
        .chain([layer.descriptor()])
        .collect();
    let mut manifests = Vec::new();
    for platform in platforms_or_default(&spec.platforms) {
        let config = image_config(spec, &diff_id, &run, &platform)?;
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config.descriptor())
            .layers(layers.clone())
            .annotations(annotations.clone().into_iter().collect::<HashMap<_, _>>())
            .build()?;
        let manifest = Blob::new(MediaType::ImageManifest, canonical_json(&manifest)?);
        manifests.push(PlatformManifest { platform, config, manifest });
    }
    Image::assemble(reference, layer, diff_id, manifests, spec.base_layers.clone())
}

/// The config of `spec` for `platform`.
fn image_config(
    spec: &ImageSpec,
    diff_id: &str,
    run: &oci_spec::image::Config,
    platform: &Platform,
) -> Result<Blob> {
    let mut history = HistoryBuilder::default().created_by("wasmedge-image pack");
    let mut diff_ids: Vec<String> = spec.base_layers.iter().map(|l| l.diff_id.clone()).collect();
    diff_ids.push(diff_id.to_string());
    let mut config = ImageConfigurationBuilder::default()
        .architecture(Arch::from(platform.architecture.as_str()))
        .os(Os::from(platform.os.as_str()))
        .config(run.clone())
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(diff_ids)
                .build()?,
        );
    let mut base_history = HistoryBuilder::default().created_by("wasmedge-image base layer");
    if let Some(created) = &spec.created {
        config = config.created(created.clone());
        history = history.created(created.clone());
        base_history = base_history.created(created.clone());
    }
    // One history entry per layer, as Docker expects.
    let mut histories = vec![base_history.build()?; spec.base_layers.len()];
    histories.push(history.build()?);
    let config = config.history(histories).build()?;
    Ok(Blob::new(MediaType::ImageConfig, canonical_json(&config)?))
}

/// The layout's index naming `top` (a manifest of `platform`, or a multi-platform index) as
/// image `reference`.
pub fn name_index(reference: &str, top: &Blob, platform: Option<&Platform>) -> Result<ImageIndex> {
    // ref.name carries the tag (OCI convention); containerd prefers the full name.
    let names = HashMap::from([
        (ANNOTATION_REF_NAME.to_string(), tag_of(reference).to_string()),
        (IMAGE_NAME_ANNOTATION.to_string(), reference.to_string()),
    ]);
    let mut desc = DescriptorBuilder::default()
        .media_type(top.media_type.clone())
        .digest(top.digest.clone())
        .size(top.data.len() as u64)
        .annotations(names);
    if let Some(platform) = platform {
        desc = desc.platform(platform.oci()?);
    }
    Ok(ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![desc.build()?])
        .build()?)
}

/// What goes into a CNCF wasm artifact (see [`build_artifact`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArtifactSpec {
    /// Image reference, e.g. `docker.io/library/hello:latest` or just `hello`.
    pub reference: String,
    pub module: Vec<u8>,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339 creation time; left out by default so builds are reproducible.
    pub created: Option<String>,
}

/// The config of the CNCF wasm artifact layout.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<&'a str>,
    architecture: &'a str,
    os: &'a str,
    layer_digests: [String; 1],
}

/// Builds the CNCF TAG Runtime "Wasm OCI Artifact" layout: a config of media type
/// [`WASM_ARTIFACT_CONFIG`] (architecture `wasm`, os `wasip1`) and the module as the single layer,
/// of media type [`WASM_MODULE_LAYER`]. The index names it with platform `wasi/wasm` like any
/// image here. It has no files, environment or entrypoint: containerd does not unpack such a layer,
/// and the shim writes the module at the path the container runs (its first argument).
pub fn build_artifact(spec: &ArtifactSpec) -> Result<Image> {
    let reference = normalize_reference(&spec.reference)?;
    ensure!(
        spec.module.starts_with(b"\0asm"),
        "the module is not WebAssembly (no \\0asm magic)"
    );
    let layer = Blob::new(MediaType::Other(WASM_MODULE_LAYER.into()), spec.module.clone());
    let config = ArtifactConfig {
        created: spec.created.as_deref(),
        architecture: "wasm",
        os: "wasip1",
        layer_digests: [layer.digest.to_string()],
    };
    let config = Blob::new(
        MediaType::Other(WASM_ARTIFACT_CONFIG.into()),
        canonical_json(&config)?,
    );
    let mut manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config.descriptor())
        .layers(vec![layer.descriptor()]);
    if !spec.annotations.is_empty() {
        manifest = manifest.annotations(
            spec.annotations
                .clone()
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    let manifest = Blob::new(MediaType::ImageManifest, canonical_json(&manifest.build()?)?);
    let manifests = vec![PlatformManifest { platform: Platform::wasi_wasm(), config, manifest }];
    Image::assemble(reference, layer.clone(), layer.digest.to_string(), manifests, Vec::new())
}

impl Image {
    /// The image of `manifests`: with several, an index of them names the image.
    fn assemble(
        reference: String,
        layer: Blob,
        diff_id: String,
        manifests: Vec<PlatformManifest>,
        base_layers: Vec<Layer>,
    ) -> Result<Image> {
        let platform_index = if manifests.len() > 1 {
            let mut descriptors = Vec::new();
            for m in &manifests {
                let mut desc = m.manifest.descriptor();
                desc.set_platform(Some(m.platform.oci()?));
                descriptors.push(desc);
            }
            let index = ImageIndexBuilder::default()
                .schema_version(2u32)
                .media_type(MediaType::ImageIndex)
                .manifests(descriptors)
                .build()?;
            Some(Blob::new(MediaType::ImageIndex, canonical_json(&index)?))
        } else {
            None
        };
        let index = match &platform_index {
            Some(top) => name_index(&reference, top, None)?,
            None => name_index(&reference, &manifests[0].manifest, Some(&manifests[0].platform))?,
        };
        Ok(Image { reference, layer, manifests, platform_index, diff_id, index, base_layers })
    }

    /// The config of the first platform (wasi/wasm by default).
    pub fn config(&self) -> &Blob {
        &self.manifests[0].config
    }

    /// The manifest of the first platform (wasi/wasm by default).
    pub fn manifest(&self) -> &Blob {
        &self.manifests[0].manifest
    }

    /// What the tag names: the multi-platform index, or the one manifest.
    pub fn target(&self) -> &Blob {
        self.platform_index.as_ref().unwrap_or(&self.manifests[0].manifest)
    }

    /// Every blob, each once, in the order a registry takes them: layers (bottom first),
    /// configs, manifests, then the multi-platform index.
    pub fn blobs(&self) -> Vec<&Blob> {
        let mut blobs = self.layers();
        blobs.extend(self.manifests.iter().map(|m| &m.config));
        blobs.extend(self.manifests.iter().map(|m| &m.manifest));
        blobs.extend(&self.platform_index);
        blobs
    }

    /// The layers, bottom first: the base layers, then the layer of the spec's files.
    pub fn layers(&self) -> Vec<&Blob> {
        let mut layers: Vec<&Blob> = self.base_layers.iter().map(|l| &l.blob).collect();
        layers.push(&self.layer);
        layers
    }

    pub fn index_json(&self) -> Result<Vec<u8>> {
        canonical_json(&self.index)
    }

    /// The `docker save` style `manifest.json`.
    pub fn docker_manifest_json(&self) -> Result<Vec<u8>> {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry<'a> {
            config: String,
            repo_tags: [&'a str; 1],
            layers: Vec<String>,
        }
        let entry = Entry {
            config: self.config().path(),
            repo_tags: [&self.reference],
            layers: self.layers().iter().map(|l| l.path()).collect(),
        };
        Ok(serde_json::to_vec(&[entry])?)
    }

    /// Files of the OCI layout (plus `manifest.json` if `docker`), by path.
    fn layout_files(&self, docker: bool) -> Result<BTreeMap<String, Cow<'_, [u8]>>> {
        let mut files = layout_files(&self.index, &self.blobs())?;
        if docker {
            ensure!(
                self.layer.media_type != MediaType::Other(WASM_MODULE_LAYER.into()),
                "a wasm artifact has no docker-archive form (docker load wants tar layers)"
            );
            files.insert(
                "manifest.json".into(),
                Cow::Owned(self.docker_manifest_json()?),
            );
        }
        Ok(files)
    }

    /// Writes an OCI layout into `dir`, replacing an existing index.json.
    pub fn write_layout(&self, dir: &Path) -> Result<()> {
        write_layout_dir(&self.layout_files(false)?, dir)
    }

    /// Writes an OCI-layout tarball.
    pub fn write_oci_archive<W: Write>(&self, out: W) -> Result<W> {
        self.write_archive(out, false)
    }

    /// Writes an OCI-layout tarball that also has a docker-archive `manifest.json`.
    pub fn write_docker_archive<W: Write>(&self, out: W) -> Result<W> {
        self.write_archive(out, true)
    }

    fn write_archive<W: Write>(&self, out: W, docker: bool) -> Result<W> {
        write_archive(&self.layout_files(docker)?, out)
    }

    /// Writes the image to `out` (a file, or a directory for [`Format::Layout`]).
    pub fn save(&self, format: Format, out: &Path) -> Result<()> {
        save_files(&self.layout_files(format == Format::Docker)?, format, out)
    }
}

/// The files of an OCI layout of `index` and `blobs`, by path.
fn layout_files<'a>(index: &ImageIndex, blobs: &[&'a Blob]) -> Result<BTreeMap<String, Cow<'a, [u8]>>> {
    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()?;
    let mut files = BTreeMap::from([
        ("oci-layout".to_string(), Cow::Owned(canonical_json(&layout)?)),
        ("index.json".to_string(), Cow::Owned(canonical_json(index)?)),
    ]);
    for blob in blobs {
        files.insert(blob.path(), Cow::Borrowed(&blob.data[..]));
    }
    Ok(files)
}

/// Writes an OCI layout of `index` and `blobs` (pulled ones, say) as `format`, oci or layout.
pub fn save_layout(index: &ImageIndex, blobs: &[&Blob], format: Format, out: &Path) -> Result<()> {
    ensure!(format != Format::Docker, "only oci and layout are written here");
    save_files(&layout_files(index, blobs)?, format, out)
}

fn write_layout_dir(files: &BTreeMap<String, Cow<'_, [u8]>>, dir: &Path) -> Result<()> {
    for (name, data) in files {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap())
            .with_context(|| format!("creating {}", path.parent().unwrap().display()))?;
        fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn write_archive<W: Write>(files: &BTreeMap<String, Cow<'_, [u8]>>, out: W) -> Result<W> {
    write_tar(out, files.iter().map(|(path, data)| (path.as_str(), &data[..], 0o644)))
}

fn save_files(files: &BTreeMap<String, Cow<'_, [u8]>>, format: Format, out: &Path) -> Result<()> {
    if format == Format::Layout {
        return write_layout_dir(files, out);
    }
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let written = write_archive(files, BufWriter::new(file))
        .and_then(|w| w.into_inner().map_err(|e| e.into_error().into()))
        .and_then(|f| Ok(f.sync_all()?));
    if written.is_err() {
        let _ = fs::remove_file(out); // don't leave a truncated tarball behind
    }
    written.with_context(|| format!("writing {}", out.display()))
}

/// Normalizes a reference the way Docker does (`hello` -> `docker.io/library/hello:latest`) so
/// containerd, Docker and Kubernetes all call the image by the same name.
pub fn normalize_reference(reference: &str) -> Result<String> {
    let invalid =
        || format!("invalid image reference {reference:?} (expected NAME[:TAG], no digest)");
    ensure!(
        !reference.is_empty() && !reference.contains(['@', ' ', '\t', '\n']),
        invalid()
    );
    // A ':' after the last '/' starts the tag; an earlier one is a registry port.
    let (name, tag) = match reference.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (reference, "latest"),
    };
    let first = name.split('/').next().unwrap_or_default();
    let has_domain = name.contains('/') && (first.contains(['.', ':']) || first == "localhost");
    let name = if has_domain {
        name.to_string()
    } else {
        format!("docker.io/{name}")
    };
    let name = match name.strip_prefix("docker.io/") {
        Some(repo) if !repo.contains('/') => format!("docker.io/library/{repo}"),
        _ => name,
    };
    let path_ok = name.split('/').skip(1).all(|c| {
        !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
    });
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch));
    ensure!(!first.is_empty() && path_ok && tag_ok, invalid());
    Ok(format!("{name}:{tag}"))
}

/// The tag of a normalized reference.
pub fn tag_of(reference: &str) -> &str {
    reference.rsplit_once(':').map_or("latest", |(_, tag)| tag)
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> Digest {
    let hex = format!("{:x}", Sha256::digest(data));
    Sha256Digest::from_str(&hex)
        .expect("a sha256 hex string is a valid digest")
        .into()
}

/// The uncompressed layer: `files` plus their parent directories, sorted.
pub fn layer_tar(files: &[LayerFile]) -> Result<Vec<u8>> {
    write_tar(
        Vec::new(),
        files.iter().map(|f| (f.path.as_str(), &f.data[..], f.mode)),
    )
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    // GzEncoder writes mtime 0 in the gzip header, so the output only depends on `data`.
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(data)?;
    Ok(gz.finish()?)
}

/// JSON with sorted keys: oci-spec keeps annotations in HashMaps, whose order varies per run.
fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&serde_json::to_value(value)?)?)
}

/// Writes a tar of `files` (path, data, mode) with their parent directories, sorted by path,
/// owned by root and dated 1970 so the bytes only depend on the content.
fn write_tar<'a, W: Write>(
    out: W,
    files: impl IntoIterator<Item = (&'a str, &'a [u8], u32)>,
) -> Result<W> {
    // None is a directory. Parents sort before their children since they are prefixes.
    let mut entries: BTreeMap<String, Option<(&[u8], u32)>> = BTreeMap::new();
    for (path, data, mode) in files {
        let path = relative_path(path)?;
        for (i, _) in path.match_indices('/') {
            if let Some(Some(_)) = entries.insert(path[..i].to_string(), None) {
                bail!("{:?} is both a file and a directory", &path[..i]);
            }
        }
        if entries.insert(path.clone(), Some((data, mode))).is_some() {
            bail!("{path:?} is given twice, or as both a file and a directory");
        }
    }

    let mut tar = tar::Builder::new(out);
    for (path, entry) in &entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let data: &[u8] = match entry {
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                &[]
            }
            Some((data, mode)) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(mode & 0o7777);
                data
            }
        };
        header.set_size(data.len() as u64);
        tar.append_data(&mut header, path, data)
            .with_context(|| format!("adding {path} to a tar"))?;
    }
    Ok(tar.into_inner()?)
}

/// `/app/x.wasm` -> `app/x.wasm`; rejects empty paths and `..`.
fn relative_path(path: &str) -> Result<String> {
    let mut parts = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(p) => parts.push(p.to_str().context("non-UTF-8 path")?),
            _ => bail!("invalid path in image {path:?}"),
        }
    }
    ensure!(!parts.is_empty(), "invalid path in image {path:?}");
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{ImageConfiguration, ImageManifest};
    use std::io::Read;

    const WASM: &[u8] = b"\0asm\x01\0\0\0";

    fn spec() -> ImageSpec {
        ImageSpec {
            reference: "docker.io/library/hello:v1".into(),
            files: vec![
                LayerFile {
                    path: "/app.wasm".into(),
                    data: WASM.to_vec(),
                    mode: 0o755,
                },
                LayerFile {
                    path: "/etc/app/conf.toml".into(),
                    data: b"x = 1\n".to_vec(),
                    mode: 0o644,
                },
            ],
            entrypoint: vec!["/app.wasm".into()],
            cmd: vec!["--verbose".into()],
            env: vec!["RUST_LOG=info".into()],
            working_dir: Some("/".into()),
            annotations: BTreeMap::from([("org.example/a".into(), "b".into())]),
            created: None,
            base_layers: Vec::new(),
            platforms: Vec::new(),
        }
    }

    /// (path, is_dir, mode, data) of every entry of an uncompressed tar.
    fn list_tar(tar: &[u8]) -> Vec<(String, bool, u32, Vec<u8>)> {
        let mut archive = tar::Archive::new(tar);
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let h = entry.header();
            assert_eq!(
                (h.mtime().unwrap(), h.uid().unwrap(), h.gid().unwrap()),
                (0, 0, 0)
            );
            let (is_dir, mode) = (h.entry_type().is_dir(), h.mode().unwrap());
            let path = entry
                .path()
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches('/')
                .to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            out.push((path, is_dir, mode, data));
        }
        out
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn digests_match_content() {
        let image = build(&spec()).unwrap();
        for blob in image.blobs() {
            let hex = format!("{:x}", Sha256::digest(&blob.data));
            assert_eq!(blob.digest.to_string(), format!("sha256:{hex}"));
            assert_eq!(blob.path(), format!("blobs/sha256/{hex}"));
        }
        assert_eq!(
            image.diff_id,
            sha256_digest(&gunzip(&image.layer.data)).to_string()
        );

        let manifest = ImageManifest::from_reader(&image.manifest().data[..]).unwrap();
        assert_eq!(manifest.config(), &image.config().descriptor());
        assert_eq!(manifest.layers(), &vec![image.layer.descriptor()]);
        assert_eq!(
            manifest.layers()[0].media_type().to_string(),
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let annotations = manifest.annotations().as_ref().unwrap();
        assert_eq!(annotations[VARIANT_ANNOTATION], VARIANT_COMPAT_SMART);
        assert_eq!(annotations["org.example/a"], "b");

        let desc = &image.index.manifests()[0];
        assert_eq!(desc.digest(), &image.target().digest);
        assert_eq!(desc.size(), image.target().data.len() as u64);
    }

    #[test]
    fn layer_has_files_and_parent_dirs() {
        let image = build(&spec()).unwrap();
        let entries = list_tar(&gunzip(&image.layer.data));
        let summary: Vec<_> = entries
            .iter()
            .map(|(p, d, m, _)| (p.as_str(), *d, *m))
            .collect();
        assert_eq!(
            summary,
            [
                ("app.wasm", false, 0o755),
                ("etc", true, 0o755),
                ("etc/app", true, 0o755),
                ("etc/app/conf.toml", false, 0o644)
            ]
        );
        assert_eq!(entries[0].3, WASM);
    }

    #[test]
    fn bad_layer_paths_are_rejected() {
        let file = |path: &str| LayerFile {
            path: path.into(),
            data: vec![],
            mode: 0o644,
        };
        assert!(layer_tar(&[file("/a"), file("/a")]).is_err());
        assert!(layer_tar(&[file("/a"), file("/a/b")]).is_err());
        assert!(layer_tar(&[file("/a/b"), file("/a")]).is_err());
        assert!(layer_tar(&[file("/../x")]).is_err());
        assert!(layer_tar(&[file("/")]).is_err());
    }

    #[test]
    fn config_is_wasi_wasm() {
        let image = build(&ImageSpec { platforms: vec![Platform::wasi_wasm()], ..spec() }).unwrap();
        assert!(image.platform_index.is_none());
        let json: serde_json::Value = serde_json::from_slice(&image.config().data).unwrap();
        assert_eq!(
            (json["architecture"].as_str(), json["os"].as_str()),
            (Some("wasm"), Some("wasi"))
        );
        assert_eq!(
            json["config"]["Entrypoint"],
            serde_json::json!(["/app.wasm"])
        );
        assert_eq!(json["config"]["Cmd"], serde_json::json!(["--verbose"]));
        assert_eq!(json["config"]["Env"], serde_json::json!(["RUST_LOG=info"]));
        assert_eq!(json["config"]["WorkingDir"], "/");
        assert_eq!(
            json["rootfs"]["diff_ids"],
            serde_json::json!([image.diff_id])
        );
        assert!(ImageConfiguration::from_reader(&image.config().data[..]).is_ok());

        let index: serde_json::Value =
            serde_json::from_slice(&image.index_json().unwrap()).unwrap();
        let desc = &index["manifests"][0];
        assert_eq!(
            desc["platform"],
            serde_json::json!({"architecture": "wasm", "os": "wasi"})
        );
        assert_eq!(desc["annotations"][ANNOTATION_REF_NAME], "v1");
        assert_eq!(
            desc["annotations"][IMAGE_NAME_ANNOTATION],
            "docker.io/library/hello:v1"
        );
    }

    #[test]
    fn one_tag_for_every_platform() {
        let image = build(&spec()).unwrap();
        let platforms: Vec<String> = image.manifests.iter().map(|m| m.platform.to_string()).collect();
        assert_eq!(platforms, DEFAULT_PLATFORMS);
        let top = image.platform_index.as_ref().expect("an index of the platforms");
        assert_eq!(image.target(), top);
        // index.json names the platforms' index as the image.
        let names: serde_json::Value = serde_json::from_slice(&image.index_json().unwrap()).unwrap();
        let desc = &names["manifests"][0];
        assert_eq!(desc["mediaType"], "application/vnd.oci.image.index.v1+json");
        assert_eq!(desc["digest"], top.digest.to_string());
        assert_eq!(desc["annotations"][IMAGE_NAME_ANNOTATION], "docker.io/library/hello:v1");
        assert!(desc.get("platform").is_none());

        let index: serde_json::Value = serde_json::from_slice(&top.data).unwrap();
        let entries = index["manifests"].as_array().unwrap();
        assert_eq!(entries.len(), 3);
        let wasm_manifest = ImageManifest::from_reader(&image.manifest().data[..]).unwrap();
        for (entry, m) in entries.iter().zip(&image.manifests) {
            assert_eq!(entry["digest"], m.manifest.digest.to_string());
            assert_eq!(entry["platform"], serde_json::json!({"os": m.platform.os, "architecture": m.platform.architecture}));
            let config: serde_json::Value = serde_json::from_slice(&m.config.data).unwrap();
            assert_eq!((config["os"].as_str().unwrap(), config["architecture"].as_str().unwrap()), (m.platform.os.as_str(), m.platform.architecture.as_str()));
            assert_eq!(config["config"]["Entrypoint"], serde_json::json!(["/app.wasm"]));
            // Same layers, same annotations; only the config differs.
            let manifest = ImageManifest::from_reader(&m.manifest.data[..]).unwrap();
            assert_eq!(manifest.layers(), wasm_manifest.layers());
            assert_eq!(manifest.annotations(), wasm_manifest.annotations());
        }
        assert_eq!(image.blobs().len(), 1 + 3 + 3 + 1);

        // --platforms narrows the list, in the order given.
        let narrow = ImageSpec { platforms: Platform::parse_list("linux/arm64,wasi/wasm").unwrap(), ..spec() };
        let image = build(&narrow).unwrap();
        let platforms: Vec<String> = image.manifests.iter().map(|m| m.platform.to_string()).collect();
        assert_eq!(platforms, ["linux/arm64", "wasi/wasm"]);
        for bad in ["", "linux", "linux/", "Linux/amd64", "wasi/wasm,wasi/wasm", "a/b/c"] {
            assert!(Platform::parse_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn layout_dir_has_every_blob() {
        let image = build(&spec()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        image.save(Format::Layout, dir.path()).unwrap();
        let layout: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join("oci-layout")).unwrap()).unwrap();
        assert_eq!(layout, serde_json::json!({"imageLayoutVersion": "1.0.0"}));
        assert_eq!(
            fs::read(dir.path().join("index.json")).unwrap(),
            image.index_json().unwrap()
        );
        let mut names: Vec<_> = fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        for name in &names {
            let data = fs::read(dir.path().join("blobs/sha256").join(name)).unwrap();
            assert_eq!(sha256_digest(&data).digest(), name);
        }
        let mut expected: Vec<_> = image
            .blobs()
            .iter()
            .map(|b| b.digest.digest().to_string())
            .collect();
        expected.sort();
        assert_eq!(names, expected);
    }

    #[test]
    fn archives_hold_the_layout() {
        let image = build(&spec()).unwrap();
        let oci = list_tar(&image.write_oci_archive(Vec::new()).unwrap());
        let names: Vec<_> = oci.iter().map(|e| e.0.as_str()).collect();
        let mut expected = vec!["blobs", "blobs/sha256", "index.json", "oci-layout"];
        let blob_paths: Vec<_> = image.blobs().iter().map(|b| b.path()).collect();
        expected.extend(blob_paths.iter().map(String::as_str));
        expected.sort();
        assert_eq!(names, expected);

        let docker = list_tar(&image.write_docker_archive(Vec::new()).unwrap());
        let (_, _, _, data) = docker
            .iter()
            .find(|e| e.0 == "manifest.json")
            .expect("manifest.json");
        let manifest: serde_json::Value = serde_json::from_slice(data).unwrap();
        assert_eq!(
            manifest,
            serde_json::json!([{
                "Config": image.config().path(),
                "RepoTags": ["docker.io/library/hello:v1"],
                "Layers": [image.layer.path()],
            }])
        );
        // Every path manifest.json names is in the archive.
        for path in [image.config().path(), image.layer.path()] {
            assert!(docker.iter().any(|e| e.0 == path));
        }
        assert!(docker.iter().any(|e| e.0 == "index.json"));
    }

    #[test]
    fn output_is_deterministic() {
        let (a, b) = (build(&spec()).unwrap(), build(&spec()).unwrap());
        assert_eq!(a, b);
        assert_eq!(
            a.write_docker_archive(Vec::new()).unwrap(),
            b.write_docker_archive(Vec::new()).unwrap()
        );
        // File order in the spec does not matter either.
        let mut reversed = spec();
        reversed.files.reverse();
        assert_eq!(build(&reversed).unwrap().manifest().digest, a.manifest().digest);
    }

    #[test]
    fn references_are_normalized() {
        let n = |r| normalize_reference(r).unwrap();
        assert_eq!(n("hello"), "docker.io/library/hello:latest");
        assert_eq!(n("user/hello:1.0"), "docker.io/user/hello:1.0");
        assert_eq!(n("docker.io/hello"), "docker.io/library/hello:latest");
        assert_eq!(n("ghcr.io/a/b/c:x"), "ghcr.io/a/b/c:x");
        assert_eq!(n("localhost:5000/hello"), "localhost:5000/hello:latest");
        assert_eq!(n("localhost/hello:t"), "localhost/hello:t");
        for bad in [
            "",
            "Hello",
            "a@sha256:00",
            "a b",
            "a:",
            "a:b/c/",
            ":x",
            "a//b",
        ] {
            assert!(normalize_reference(bad).is_err(), "{bad:?}");
        }
        assert_eq!(tag_of("localhost:5000/hello:t"), "t");
    }

    #[test]
    fn artifact_is_the_cncf_wasm_layout() {
        let spec = ArtifactSpec {
            reference: "hello-artifact".into(),
            module: WASM.to_vec(),
            ..Default::default()
        };
        let image = build_artifact(&spec).unwrap();
        assert_eq!(image.reference, "docker.io/library/hello-artifact:latest");
        assert_eq!(image.layer.data, WASM);
        let manifest: serde_json::Value = serde_json::from_slice(&image.manifest().data).unwrap();
        assert_eq!(manifest["config"]["mediaType"], WASM_ARTIFACT_CONFIG);
        assert_eq!(
            manifest["layers"],
            serde_json::json!([{"mediaType": "application/wasm",
                "digest": image.layer.digest.to_string(), "size": WASM.len()}])
        );
        assert!(manifest.get("annotations").is_none());
        let config: serde_json::Value = serde_json::from_slice(&image.config().data).unwrap();
        assert_eq!(
            config,
            serde_json::json!({"architecture": "wasm", "os": "wasip1",
                "layerDigests": [image.layer.digest.to_string()]})
        );
        let index: serde_json::Value =
            serde_json::from_slice(&image.index_json().unwrap()).unwrap();
        assert_eq!(
            index["manifests"][0]["platform"],
            serde_json::json!({"architecture": "wasm", "os": "wasi"})
        );
        assert_eq!(
            index["manifests"][0]["digest"],
            image.manifest().digest.to_string()
        );
        // The layout holds every blob, the docker-archive form does not exist.
        let oci = list_tar(&image.write_oci_archive(Vec::new()).unwrap());
        for blob in image.blobs() {
            assert!(oci.iter().any(|e| e.0 == blob.path()), "{}", blob.path());
        }
        assert!(image.write_docker_archive(Vec::new()).is_err());
        assert_eq!(build_artifact(&spec).unwrap(), image);
        let not_wasm = ArtifactSpec {
            module: b"#!/bin/sh".to_vec(),
            ..spec
        };
        assert!(build_artifact(&not_wasm).is_err());
    }

    #[test]
    fn annotations_override_the_default_variant() {
        let mut s = spec();
        s.annotations
            .insert(VARIANT_ANNOTATION.into(), "compat".into());
        let manifest = ImageManifest::from_reader(&build(&s).unwrap().manifest().data[..]).unwrap();
        assert_eq!(
            manifest.annotations().as_ref().unwrap()[VARIANT_ANNOTATION],
            "compat"
        );
    }

    #[test]
    fn base_layers_go_under_the_files_layer() {
        let runtime = Layer::from_files(&[LayerFile {
            path: "/js/runtime.wasm".into(),
            data: WASM.to_vec(),
            mode: 0o755,
        }])
        .unwrap();
        let mut s = spec();
        s.base_layers = vec![runtime.clone()];
        let image = build(&s).unwrap();
        assert_eq!(image.layers(), vec![&runtime.blob, &image.layer]);
        // Two layers, a config and a manifest per platform, the platforms' index.
        assert_eq!(image.blobs().len(), 2 + 3 + 3 + 1);

        let manifest = ImageManifest::from_reader(&image.manifest().data[..]).unwrap();
        assert_eq!(
            manifest.layers(),
            &vec![runtime.blob.descriptor(), image.layer.descriptor()]
        );
        let json: serde_json::Value = serde_json::from_slice(&image.config().data).unwrap();
        assert_eq!(
            json["rootfs"]["diff_ids"],
            serde_json::json!([runtime.diff_id, image.diff_id])
        );
        assert_eq!(json["history"].as_array().unwrap().len(), 2);
        assert_eq!(
            runtime.diff_id,
            sha256_digest(&gunzip(&runtime.blob.data)).to_string()
        );

        let docker = list_tar(&image.write_docker_archive(Vec::new()).unwrap());
        let (_, _, _, data) = docker.iter().find(|e| e.0 == "manifest.json").unwrap();
        let entries: serde_json::Value = serde_json::from_slice(data).unwrap();
        assert_eq!(
            entries[0]["Layers"],
            serde_json::json!([runtime.blob.path(), image.layer.path()])
        );
        for blob in image.blobs() {
            assert!(docker.iter().any(|e| e.0 == blob.path()), "{}", blob.path());
        }
        // A shared layer is the same blob in every image.
        let mut other = s.clone();
        other.files.truncate(1);
        assert_eq!(build(&other).unwrap().base_layers[0], runtime);
    }
}
