//! `push` and `pull`: images between a local form (a built image, a tarball, a layout, containerd)
//! and a registry.

use std::collections::BTreeSet;

use anyhow::{bail, ensure, Context, Result};
use oci_spec::image::MediaType;
use serde_json::Value;

use super::registry::{Pushed, Registry, RegistryArgs, Upload, MAX_DOCUMENT};
use super::store::{self, Store};
use super::util::progress;
use containerd_shim_wasmedge::image::writer::{self, Blob, Image, Platform};
use containerd_shim_wasmedge::progress::human;

const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// What pushing a built image sends.
pub fn upload_of_image(image: &Image) -> Upload {
    let mut blobs: Vec<(String, Vec<u8>)> = image.layers().iter().map(|b| (b.digest.to_string(), b.data.clone())).collect();
    blobs.extend(image.manifests.iter().map(|m| (m.config.digest.to_string(), m.config.data.clone())));
    let manifests = match image.platform_index {
        Some(_) => image
            .manifests
            .iter()
            .map(|m| (m.manifest.digest.to_string(), m.manifest.media_type.to_string(), m.manifest.data.clone()))
            .collect(),
        None => Vec::new(),
    };
    let target = image.target();
    Upload { blobs, manifests, target: (target.media_type.to_string(), target.data.clone()) }
}

/// What pushing the image of `store` that `index` (an index.json) names sends: its one entry.
pub fn upload_of_store(store: &Store, index: &Value) -> Result<Upload> {
    let entries = index["manifests"].as_array().context("the image's index has no manifests")?;
    let [entry] = entries.as_slice() else {
        bail!("the image's index.json names {} images; push takes one", entries.len());
    };
    let digest = entry["digest"].as_str().context("an index entry without digest")?;
    let data = store.blob(digest)?;
    let doc: Value = serde_json::from_slice(&data).context("the image's target is not JSON")?;
    let media_type = doc["mediaType"]
        .as_str()
        .or(entry["mediaType"].as_str())
        .unwrap_or(if doc["manifests"].is_array() { INDEX_TYPE } else { MANIFEST_TYPE })
        .to_string();
    let mut blobs = Vec::new();
    let mut manifests = Vec::new();
    let mut seen = BTreeSet::new();
    let mut add_manifest_blobs = |manifest: &Value, blobs: &mut Vec<(String, Vec<u8>)>| -> Result<()> {
        let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
        for desc in layers.iter().chain([&manifest["config"]]) {
            let d = desc["digest"].as_str().context("a descriptor without digest")?;
            if seen.insert(d.to_string()) {
                blobs.push((d.to_string(), store.blob(d)?));
            }
        }
        Ok(())
    };
    match doc["manifests"].as_array() {
        Some(list) => {
            for desc in list {
                let d = desc["digest"].as_str().context("an index entry without digest")?;
                let data = store.blob(d)?;
                let manifest: Value = serde_json::from_slice(&data).with_context(|| format!("manifest {d}"))?;
                ensure!(!manifest["manifests"].is_array(), "indexes nested more than once are not supported");
                add_manifest_blobs(&manifest, &mut blobs)?;
                let t = desc["mediaType"].as_str().unwrap_or(MANIFEST_TYPE).to_string();
                manifests.push((d.to_string(), t, data));
            }
        }
        None => add_manifest_blobs(&doc, &mut blobs)?,
    }
    Ok(Upload { blobs, manifests, target: (media_type, data) })
}

/// Pushes `upload` as `reference`, with a line on what was sent.
pub fn push(upload: &Upload, reference: &str, args: &RegistryArgs) -> Result<Pushed> {
    let reference = writer::normalize_reference(reference)?;
    let registry = Registry::connect(&reference, args)?;
    let pushed = registry.push(upload).with_context(|| format!("pushing {reference}"))?;
    progress(&format!(
        "pushed {reference}: {} blob{} uploaded ({}), {} already there",
        pushed.uploaded,
        if pushed.uploaded == 1 { "" } else { "s" },
        human(pushed.bytes),
        pushed.skipped
    ));
    Ok(pushed)
}

/// `push SRC REF`: SRC is a tarball, a layout directory or an image in containerd.
pub fn push_source(src: &str, reference: &str, ctr: &super::ctr::Ctr, args: &RegistryArgs) -> Result<Pushed> {
    let opened = store::open_local(src, ctr)?;
    let upload = upload_of_store(&opened.store, &opened.index).with_context(|| format!("reading {src}"))?;
    push(&upload, reference, args)
}

/// The image `reference` of the registry for `platform`: its manifest, config and layers, every
/// digest and size checked, at most `max_bytes` of layers. Returns the index.json naming it and
/// its blobs.
pub fn pull(reference: &str, platform: &Platform, max_bytes: u64, args: &RegistryArgs) -> Result<(oci_spec::image::ImageIndex, Vec<Blob>)> {
    let reference = writer::normalize_reference(reference)?;
    let registry = Registry::connect(&reference, args)?;
    let (top, top_digest) = registry.manifest(None).with_context(|| format!("pulling {reference}"))?;
    let doc: Value = serde_json::from_slice(&top).context("the registry's manifest is not JSON")?;
    let (manifest_data, digest) = match doc["manifests"].as_array() {
        Some(list) => {
            let found = list.iter().find(|d| {
                d["platform"]["os"].as_str() == Some(platform.os.as_str())
                    && d["platform"]["architecture"].as_str() == Some(platform.architecture.as_str())
            });
            let Some(desc) = found else {
                let have: Vec<String> = list
                    .iter()
                    .map(|d| format!("{}/{}", d["platform"]["os"].as_str().unwrap_or("?"), d["platform"]["architecture"].as_str().unwrap_or("?")))
                    .collect();
                bail!("{reference} has no {platform} manifest (it has {})", have.join(", "));
            };
            let digest = desc["digest"].as_str().context("an index entry without digest")?;
            registry.manifest(Some(digest))?
        }
        None => (top, top_digest),
    };
    let manifest: Value = serde_json::from_slice(&manifest_data).context("the manifest is not JSON")?;
    ensure!(manifest["config"].is_object(), "{reference}: {digest} is not an image manifest");
    let size_of = |desc: &Value| -> Result<u64> { desc["size"].as_u64().context("a descriptor without size") };
    let config = &manifest["config"];
    let config_size = size_of(config)?;
    ensure!(config_size <= MAX_DOCUMENT, "the config is larger than {}", human(MAX_DOCUMENT));
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    let total: u64 = layers.iter().map(size_of).sum::<Result<u64>>()?;
    ensure!(total <= max_bytes, "{reference}: its layers are {}, more than --max-size {}", human(total), human(max_bytes));

    let mut blobs = Vec::new();
    for desc in layers.iter().chain([config]) {
        let d = desc["digest"].as_str().context("a descriptor without digest")?;
        let data = registry.blob(d, Some(size_of(desc)?))?;
        let media_type = MediaType::from(desc["mediaType"].as_str().unwrap_or_default());
        blobs.push(Blob::new(media_type, data));
    }
    let media_type = MediaType::from(manifest["mediaType"].as_str().unwrap_or(MANIFEST_TYPE));
    let manifest = Blob::new(media_type, manifest_data);
    let index = writer::name_index(&reference, &manifest, Some(platform))?;
    blobs.push(manifest);
    progress(&format!("pulled {reference} ({platform}, {} of layers)", human(total)));
    Ok((index, blobs))
}
