//! Where an image's blobs are: an OCI tarball or layout directory, containerd's content store, or
//! a registry. `inspect`, `push` and `pull` read images through it.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use super::ctr::Ctr;
use super::registry::{Registry, RegistryArgs};
use containerd_shim_wasmedge::image::writer::normalize_reference;

/// Where the blobs are.
pub enum Store<'a> {
    /// A tarball or layout directory, read whole: path in the layout -> bytes.
    Files(BTreeMap<String, Vec<u8>>),
    Containerd(&'a Ctr),
    /// A registry; its manifests, fetched by digest when the image was opened, are kept here
    /// since a registry serves them apart from blobs.
    Registry { registry: Registry, documents: BTreeMap<String, Vec<u8>> },
}

impl Store<'_> {
    pub fn blob(&self, digest: &str) -> Result<Vec<u8>> {
        match self {
            Store::Files(files) => {
                let path = format!("blobs/{}", digest.replacen(':', "/", 1));
                files.get(&path).cloned().with_context(|| format!("blob {digest} is not in the image"))
            }
            Store::Containerd(ctr) => ctr.content(digest),
            Store::Registry { registry, documents } => match documents.get(digest) {
                Some(doc) => Ok(doc.clone()),
                None => registry.blob(digest, None),
            },
        }
    }
}

/// An image as found: its store, an index of what it names (index.json, or one made up for a
/// single manifest) and its name when the target named it.
pub struct Opened<'a> {
    pub store: Store<'a>,
    pub index: Value,
    pub name: Option<String>,
}

/// Reads an OCI-layout tarball (or docker-archive with index.json) or a layout directory.
fn read_layout(path: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    if path.is_dir() {
        // A layout's blobs are any size: the bounds of sources are not theirs.
        for (rel, full) in super::util::walk_bounded(path, &super::util::Limits { file_bytes: u64::MAX, total_bytes: u64::MAX })? {
            files.insert(rel, fs::read(full)?);
        }
    } else {
        let mut archive = tar::Archive::new(fs::File::open(path)?);
        for entry in archive.entries()? {
            let mut entry = entry?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = entry.path()?.to_string_lossy().trim_start_matches("./").to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            files.insert(name, data);
        }
    }
    Ok(files)
}

/// `target`: a path to an image file; else an image in containerd; else an image in its registry.
pub fn open<'a>(target: &str, ctr: &'a Ctr, registry: &RegistryArgs) -> Result<Opened<'a>> {
    match open_local(target, ctr) {
        Ok(opened) => Ok(opened),
        Err(local) if !Path::new(target).exists() => {
            log::debug!("{target} from the registry: {local:#}");
            let reference = normalize_reference(target)?;
            open_remote(&reference, registry)
        }
        Err(e) => Err(e),
    }
}

/// `target`: a path to an image file, else an image in containerd.
pub fn open_local<'a>(target: &str, ctr: &'a Ctr) -> Result<Opened<'a>> {
    let path = Path::new(target);
    if path.exists() {
        let files = read_layout(path).with_context(|| format!("reading {target}"))?;
        let index = files.get("index.json").with_context(|| format!("{target} has no index.json: not an OCI layout"))?;
        let index: Value = serde_json::from_slice(index).context("parsing index.json")?;
        return Ok(Opened { store: Store::Files(files), index, name: None });
    }
    let reference = normalize_reference(target).with_context(|| format!("{target} is neither a file nor an image name"))?;
    let (media_type, digest) = ctr.image_target(&reference)?;
    let store = Store::Containerd(ctr);
    // containerd's image names one manifest or index: index.json's one entry.
    let index = json!({"manifests": [{"mediaType": media_type, "digest": digest,
        "annotations": {"io.containerd.image.name": reference}}]});
    Ok(Opened { store, index, name: Some(reference) })
}

/// The image `reference` in its registry, with every manifest it names.
pub fn open_remote<'a>(reference: &str, args: &RegistryArgs) -> Result<Opened<'a>> {
    let registry = Registry::connect(reference, args)?;
    let (raw, digest) = registry.manifest(None)?;
    let top: Value = serde_json::from_slice(&raw).context("the registry's manifest is not JSON")?;
    let mut documents = BTreeMap::new();
    let media_type = match top["manifests"].as_array() {
        Some(manifests) => {
            ensure!(manifests.len() <= 64, "the index names {} manifests; at most 64 are read", manifests.len());
            for desc in manifests {
                let digest = desc["digest"].as_str().context("an index entry without digest")?;
                let (doc, _) = registry.manifest(Some(digest))?;
                documents.insert(digest.to_string(), doc);
            }
            "application/vnd.oci.image.index.v1+json"
        }
        None if top["config"].is_object() => "application/vnd.oci.image.manifest.v1+json",
        None => bail!("{reference}: the registry's document is neither an image index nor a manifest"),
    };
    documents.insert(digest.clone(), raw);
    let index = json!({"manifests": [{"mediaType": top["mediaType"].as_str().unwrap_or(media_type), "digest": digest,
        "annotations": {"io.containerd.image.name": reference}}]});
    Ok(Opened { store: Store::Registry { registry, documents }, index, name: Some(reference.to_string()) })
}
