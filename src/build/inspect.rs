//! `inspect`: what an image is — name, platform, layers and their files, entrypoint, and whether
//! the shim takes it for wasm and why — from an OCI tarball, a layout directory or containerd.

use std::collections::HashMap;
use std::io::Read;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::ctr::Ctr;
use super::registry::RegistryArgs;
use super::store::{self, Opened};
use containerd_shim_wasmedge::progress::human;
use containerd_shim_wasmedge::image::detect::{self, Evidence, ImageFacts, Kind};

/// A report of `target`: a path to an image file, else an image name in containerd.
pub fn inspect(target: &str, ctr: &Ctr, registry: &RegistryArgs) -> Result<Value> {
    let Opened { store, index, name } = store::open(target, ctr, registry)?;

    // The manifests, by platform: an index.json entry may name a multi-platform index.
    let mut entries = Vec::new();
    for desc in index["manifests"].as_array().context("index.json has no manifests")? {
        let digest = desc["digest"].as_str().context("manifest without digest")?;
        let doc: Value = serde_json::from_slice(&store.blob(digest)?)?;
        match doc["manifests"].as_array() {
            Some(inner) => {
                for d in inner {
                    let digest = d["digest"].as_str().context("manifest without digest")?;
                    // containerd keeps the content of the platforms it imported or pulled only, and
                    // may collect the others while we read: each manifest is read with its config
                    // once, or skipped.
                    let read = |digest: &str| -> Option<Value> { serde_json::from_slice(&store.blob(digest).ok()?).ok() };
                    let Some(manifest) = read(digest) else {
                        log::debug!("manifest {digest} is not in the store");
                        continue;
                    };
                    if manifest["manifests"].is_array() {
                        bail!("image indexes nested more than once are not supported");
                    }
                    let Some(config) = read(manifest["config"]["digest"].as_str().unwrap_or_default()) else {
                        log::debug!("the config of manifest {digest} is not in the store");
                        continue;
                    };
                    // The outer entry names the image.
                    let mut d = d.clone();
                    d["annotations"] = desc["annotations"].clone();
                    entries.push((d, manifest, config));
                }
            }
            None => {
                let config_digest = doc["config"]["digest"].as_str().context("manifest without config")?;
                let config: Value = serde_json::from_slice(&store.blob(config_digest)?).context("parsing the image config")?;
                entries.push((desc.clone(), doc, config));
            }
        }
    }

    if entries.is_empty() {
        bail!("none of the image's manifests is in the store");
    }
    let mut images = Vec::new();
    for (desc, manifest, config) in &entries {
        let digest = desc["digest"].as_str().context("manifest without digest")?;
        let run = &config["config"];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
        };
        let entrypoint = strings(&run["Entrypoint"]);
        let cmd = strings(&run["Cmd"]);
        let program = entrypoint.first().or(cmd.first()).cloned();

        let mut layers = Vec::new();
        let mut entry_head: Option<Vec<u8>> = None;
        for layer in manifest["layers"].as_array().cloned().unwrap_or_default() {
            let ldigest = layer["digest"].as_str().unwrap_or_default().to_string();
            let media_type = layer["mediaType"].as_str().unwrap_or_default().to_string();
            let files = match store.blob(&ldigest) {
                Ok(data) => layer_files(&data, &media_type, program.as_deref(), &mut entry_head),
                Err(_) => vec![],
            };
            layers.push(json!({
                "digest": ldigest,
                "mediaType": media_type,
                "size": layer["size"],
                "files": files.iter().map(|(p, s)| json!({"path": p, "size": s})).collect::<Vec<_>>(),
            }));
        }

        let annotations: HashMap<String, String> = manifest["annotations"]
            .as_object()
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
            .unwrap_or_default();
        let facts = ImageFacts {
            architecture: config["architecture"].as_str().unwrap_or_default().to_string(),
            layer_media_types: layers.iter().filter_map(|l| l["mediaType"].as_str().map(String::from)).collect(),
            ..Default::default()
        };
        let evidence = Evidence {
            annotations: Some(&annotations),
            entrypoint: program.as_deref(),
            entrypoint_head: entry_head.as_deref(),
            image: Some(&facts),
        };
        let (wasm, why) = match detect::classify(&evidence) {
            Kind::Wasm(why) => (true, why.to_string()),
            Kind::Linux => (false, "no wasm annotation, architecture, layer type or module magic".to_string()),
        };
        let platform = match (desc["platform"]["os"].as_str(), desc["platform"]["architecture"].as_str()) {
            (Some(os), Some(arch)) => format!("{os}/{arch}"),
            _ => format!(
                "{}/{}",
                config["os"].as_str().unwrap_or("?"),
                config["architecture"].as_str().unwrap_or("?")
            ),
        };
        images.push(json!({
            "name": name.clone().or_else(|| desc["annotations"]["io.containerd.image.name"].as_str().map(String::from))
                .or_else(|| desc["annotations"]["org.opencontainers.image.ref.name"].as_str().map(String::from)),
            "manifest": digest,
            "platform": platform,
            "configMediaType": manifest["config"]["mediaType"],
            "annotations": annotations,
            "entrypoint": entrypoint,
            "cmd": cmd,
            "env": strings(&run["Env"]),
            "workingDir": run["WorkingDir"],
            "layers": layers,
            "wasm": wasm,
            "why": why,
        }));
    }
    Ok(json!({ "images": images }))
}

/// (path, size) of the files of a layer; fills `head` with the first bytes of `program`.
fn layer_files(data: &[u8], media_type: &str, program: Option<&str>, head: &mut Option<Vec<u8>>) -> Vec<(String, u64)> {
    let reader: Box<dyn Read> = if media_type.ends_with("gzip") {
        Box::new(flate2::read::GzDecoder::new(data))
    } else if media_type.ends_with(".tar") || media_type.ends_with("tar") {
        Box::new(data)
    } else {
        // A wasm artifact layer is the module itself.
        if data.starts_with(detect::WASM_MAGIC) {
            *head = Some(data[..8.min(data.len())].to_vec());
        }
        return vec![];
    };
    let mut files = Vec::new();
    let mut archive = tar::Archive::new(reader);
    let Ok(entries) = archive.entries() else { return files };
    for entry in entries.flatten() {
        let mut entry = entry;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = format!("/{}", entry.path().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default());
        let size = entry.header().size().unwrap_or(0);
        if program == Some(path.as_str()) {
            let mut buf = [0u8; 8];
            let n = entry.read(&mut buf).unwrap_or(0);
            *head = Some(buf[..n].to_vec());
        }
        files.push((path, size));
    }
    files
}

/// The report as text.
pub fn render(report: &Value) -> String {
    let mut out = String::new();
    for image in report["images"].as_array().into_iter().flatten() {
        let list = |v: &Value| serde_json::to_string(v).unwrap_or_default();
        out += &format!("image:       {}\n", image["name"].as_str().unwrap_or("(unnamed)"));
        out += &format!("manifest:    {}\n", image["manifest"].as_str().unwrap_or(""));
        out += &format!("platform:    {}\n", image["platform"].as_str().unwrap_or(""));
        out += &format!("entrypoint:  {}\n", list(&image["entrypoint"]));
        if image["cmd"].as_array().is_some_and(|a| !a.is_empty()) {
            out += &format!("cmd:         {}\n", list(&image["cmd"]));
        }
        for e in image["env"].as_array().into_iter().flatten() {
            out += &format!("env:         {}\n", e.as_str().unwrap_or(""));
        }
        if let Some(dir) = image["workingDir"].as_str() {
            out += &format!("workdir:     {dir}\n");
        }
        let mut annotations: Vec<_> = image["annotations"].as_object().into_iter().flatten().collect();
        annotations.sort_by(|a, b| a.0.cmp(b.0));
        for (k, v) in annotations {
            out += &format!("annotation:  {k}={}\n", v.as_str().unwrap_or(""));
        }
        out += "layers:\n";
        for (i, layer) in image["layers"].as_array().into_iter().flatten().enumerate() {
            let digest = layer["digest"].as_str().unwrap_or("");
            out += &format!(
                "  {}. {} {} {}\n",
                i + 1,
                &digest[..digest.len().min(19)],
                human(layer["size"].as_u64().unwrap_or(0)),
                layer["mediaType"].as_str().unwrap_or("")
            );
            let files = layer["files"].as_array().cloned().unwrap_or_default();
            for f in files.iter().take(12) {
                out += &format!(
                    "       {} ({})\n",
                    f["path"].as_str().unwrap_or(""),
                    human(f["size"].as_u64().unwrap_or(0))
                );
            }
            if files.len() > 12 {
                out += &format!("       ... {} more files\n", files.len() - 12);
            }
        }
        let wasm = if image["wasm"] == true { "yes" } else { "no" };
        out += &format!("wasm:        {wasm}: {}\n", image["why"].as_str().unwrap_or(""));
    }
    out
}
