//! config.json → launch plan: the bytes of a bundle's config.json are parsed as the shim parses
//! them (`Spec::load` is serde_json on the file), mapped by `Launch::from_spec`, and the plan
//! must survive the JSON trip to the container process (fd 3) unchanged.
#![no_main]
use containerd_shim_wasmedge::container::Launch;
use containerd_shim_wasmedge::engine::EngineOptions;
use containerd_shim_wasmedge::image::detect::{classify, Evidence};
use libfuzzer_sys::fuzz_target;
use oci_spec::runtime::Spec;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<Spec>(data) else { return };
    let bundle = Path::new("/run/containerd/io.containerd.runtime.v2.task/default/fuzz");
    let Ok(launch) = Launch::from_spec("fuzz", bundle, &spec, &EngineOptions::default(), false) else { return };

    let json = serde_json::to_vec(&launch).expect("a launch plan serializes");
    let back: Launch = serde_json::from_slice(&json).expect("a serialized launch plan parses");
    assert_eq!(back, launch, "the launch plan changed on its way to the container process");

    assert!(launch.rootfs.is_absolute(), "rootfs {:?} is relative", launch.rootfs);
    if let Some(pages) = launch.engine.limits.max_memory_pages {
        assert!((1..=65536).contains(&pages), "{pages} pages");
    }
    if let Some(limit) = launch.engine.limits.time_limit {
        assert!(!limit.is_zero());
    }
    assert_eq!(launch.wasi.preopens.first().map(|p| p.guest.as_path()), Some(Path::new("/")));
    assert!(launch.wasi.env.iter().any(|e| e.starts_with("PWD=")));

    let _ = classify(&Evidence {
        annotations: spec.annotations().as_ref(),
        entrypoint: launch.entrypoint.to_str(),
        entrypoint_head: None,
        image: None,
    });
});
