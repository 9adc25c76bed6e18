//! The image documents the shim reads from containerd's content store when it classifies a
//! container: index, manifest and config JSON, of any media type, and the digest check of a blob.
//! Whatever an image's author put in them must give a result or an error, never a panic.
#![no_main]
use containerd_shim_wasmedge::image::content::{
    config_architecture, document_kind, facts, parse_manifest, select_manifest, verify_digest, Document,
};
use libfuzzer_sys::fuzz_target;

const MEDIA_TYPES: &[&str] = &[
    "",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/octet-stream",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, doc)) = data.split_first() else { return };
    let media_type = MEDIA_TYPES[selector as usize % MEDIA_TYPES.len()];
    match document_kind(media_type, doc) {
        Ok(Document::Index) => {
            if let Ok(descriptor) = select_manifest(doc) {
                let _ = verify_digest(&descriptor.digest, doc);
            }
        }
        Ok(Document::Manifest) => {
            if let Ok(manifest) = parse_manifest(doc) {
                let f = facts(&manifest, config_architecture(doc).unwrap_or_default());
                assert_eq!(f.layer_media_types.len(), manifest.layers.len());
                if let Some(layer) = &f.wasm_layer {
                    assert!(manifest.layers.iter().any(|l| &l.digest == layer));
                }
                let _ = verify_digest(&manifest.config.digest, doc);
            }
        }
        Err(_) => {}
    }
    let _ = config_architecture(doc);
});
