//! Wasm detection: annotations, entrypoint path, the entrypoint file's first bytes and the
//! image's facts all come from outside. Besides not panicking, the documented rules must hold.
#![no_main]
use containerd_shim_wasmedge::image::detect::{classify, is_wasm_layer, Evidence, ImageFacts, Kind, WASM_MAGIC};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;

#[derive(Arbitrary, Debug)]
struct Input {
    annotations: Option<HashMap<String, String>>,
    entrypoint: Option<String>,
    head: Option<Vec<u8>>,
    image: Option<(String, Vec<String>, Option<String>)>,
    magic_head: bool,
}

fuzz_target!(|input: Input| {
    let mut head = input.head;
    if input.magic_head {
        let mut h = WASM_MAGIC.to_vec();
        h.extend(head.unwrap_or_default());
        head = Some(h);
    }
    let image = input
        .image
        .map(|(architecture, layer_media_types, wasm_layer)| ImageFacts { architecture, layer_media_types, wasm_layer });
    let evidence = Evidence {
        annotations: input.annotations.as_ref(),
        entrypoint: input.entrypoint.as_deref(),
        entrypoint_head: head.as_deref(),
        image: image.as_ref(),
    };
    let kind = classify(&evidence);
    assert_eq!(kind, classify(&evidence), "classification is not deterministic");
    let annotation = |k: &str| input.annotations.as_ref().and_then(|a| a.get(k)).map(String::as_str);
    if head.as_deref().is_some_and(|h| h.starts_with(WASM_MAGIC))
        || annotation("module.wasm.image/variant") == Some("compat")
        || annotation("run.oci.handler") == Some("wasm")
        || image.as_ref().is_some_and(|i| i.architecture == "wasm" || i.layer_media_types.iter().any(|t| is_wasm_layer(t)))
    {
        assert!(matches!(kind, Kind::Wasm(_)), "{evidence:?} gave {kind:?}");
    }
});
