//! `wasmedge-image pack --tag`: image references are normalized as Docker does; a normalized
//! reference must normalize to itself.
#![no_main]
use containerd_shim_wasmedge::image::writer::{normalize_reference, tag_of};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(r) = normalize_reference(s) {
        assert_eq!(normalize_reference(&r).ok().as_deref(), Some(r.as_str()), "{s:?} normalized to {r:?}, which does not");
        assert!(!tag_of(&r).is_empty());
    }
});
