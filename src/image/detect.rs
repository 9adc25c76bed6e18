//! Is a container wasm? Each rule that can say yes gives its reason, for the shim's log.
use std::collections::HashMap;

/// The first bytes of every WebAssembly binary.
pub const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// Layer media types that carry a wasm module.
pub const WASM_LAYER_TYPES: &[&str] = &[
    "application/wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
];

/// What the image says of itself, when the shim could look it up in containerd's content store.
#[derive(Debug, Default, Clone)]
pub struct ImageFacts {
    pub architecture: String,
    pub layer_media_types: Vec<String>,
    /// Digest of the first layer with a wasm media type: such a layer is the module itself, not a
    /// tar, so containerd does not unpack it and the shim reads it from the content store.
    pub wasm_layer: Option<String>,
}

/// Whether a layer of this media type is a wasm module (rather than a filesystem tar).
pub fn is_wasm_layer(media_type: &str) -> bool {
    WASM_LAYER_TYPES.contains(&media_type)
}

/// What is known of a container when it is created.
#[derive(Debug, Default)]
pub struct Evidence<'a> {
    pub annotations: Option<&'a HashMap<String, String>>,
    pub entrypoint: Option<&'a str>,
    /// The first bytes of the entrypoint file, when it exists in the rootfs.
    pub entrypoint_head: Option<&'a [u8]>,
    pub image: Option<&'a ImageFacts>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Wasm(&'static str),
    Linux,
}

pub fn classify(e: &Evidence) -> Kind {
    let annotation = |key: &str| e.annotations.and_then(|a| a.get(key)).map(String::as_str);
    let entry_is_wasm = e.entrypoint.is_some_and(|p| p.ends_with(".wasm"));
    match annotation("module.wasm.image/variant") {
        Some("compat") => return Kind::Wasm("annotation module.wasm.image/variant=compat"),
        Some("compat-smart") if entry_is_wasm => {
            return Kind::Wasm("annotation module.wasm.image/variant=compat-smart and a .wasm entrypoint")
        }
        _ => {}
    }
    if annotation("run.oci.handler") == Some("wasm") {
        return Kind::Wasm("annotation run.oci.handler=wasm");
    }
    if let Some(image) = e.image {
        if image.architecture == "wasm" {
            return Kind::Wasm("the image's architecture is wasm");
        }
        if image.layer_media_types.iter().any(|t| is_wasm_layer(t)) {
            return Kind::Wasm("the image has a wasm layer");
        }
    }
    if e.entrypoint_head.is_some_and(|h| h.starts_with(WASM_MAGIC)) {
        return Kind::Wasm("the entrypoint starts with the wasm magic");
    }
    Kind::Linux
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotated(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn compat_annotation_is_wasm() {
        let a = annotated(&[("module.wasm.image/variant", "compat")]);
        assert!(matches!(classify(&Evidence { annotations: Some(&a), ..Default::default() }), Kind::Wasm(_)));
    }

    #[test]
    fn compat_smart_needs_a_wasm_entrypoint() {
        let a = annotated(&[("module.wasm.image/variant", "compat-smart")]);
        let with = |entry| classify(&Evidence { annotations: Some(&a), entrypoint: Some(entry), ..Default::default() });
        assert!(matches!(with("/app.wasm"), Kind::Wasm(_)));
        assert_eq!(with("/bin/sh"), Kind::Linux);
    }

    #[test]
    fn crun_handler_annotation_is_wasm() {
        let a = annotated(&[("run.oci.handler", "wasm")]);
        assert!(matches!(classify(&Evidence { annotations: Some(&a), ..Default::default() }), Kind::Wasm(_)));
    }

    #[test]
    fn image_architecture_or_layer_type_is_wasm() {
        let arch = ImageFacts { architecture: "wasm".into(), ..Default::default() };
        assert!(matches!(classify(&Evidence { image: Some(&arch), ..Default::default() }), Kind::Wasm(_)));
        for t in WASM_LAYER_TYPES {
            let layer = ImageFacts { architecture: "amd64".into(), layer_media_types: vec![t.to_string()], ..Default::default() };
            assert!(matches!(classify(&Evidence { image: Some(&layer), ..Default::default() }), Kind::Wasm(_)), "{t}");
        }
        let linux = ImageFacts {
            architecture: "amd64".into(),
            layer_media_types: vec!["application/vnd.oci.image.layer.v1.tar+gzip".into()],
            ..Default::default()
        };
        assert_eq!(classify(&Evidence { image: Some(&linux), ..Default::default() }), Kind::Linux);
    }

    #[test]
    fn wasm_magic_in_the_entrypoint_is_wasm() {
        let head = b"\0asm\x01\0\0\0";
        assert!(matches!(classify(&Evidence { entrypoint_head: Some(head), ..Default::default() }), Kind::Wasm(_)));
        assert_eq!(classify(&Evidence { entrypoint_head: Some(b"\x7fELF"), ..Default::default() }), Kind::Linux);
    }

    #[test]
    fn nothing_known_is_linux() {
        assert_eq!(classify(&Evidence::default()), Kind::Linux);
    }
}
