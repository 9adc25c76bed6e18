//! Property tests over the parsers of outside input, the same functions the cargo-fuzz targets
//! in fuzz/ drive (see fuzz/README.md), fast enough for every `make test`: the OCI spec →
//! launch plan mapping, systemd cgroupsPaths, the time-limit durations, wasm detection, the image documents read
//! from containerd's content store, and image references. No containerd needed.

use containerd_shim_wasmedge::launch::cgroup;
use containerd_shim_wasmedge::launch::plan::{parse_duration, TIME_LIMIT_ANNOTATION};
use containerd_shim_wasmedge::launch::Launch;
use containerd_shim_wasmedge::engine::EngineOptions;
use containerd_shim_wasmedge::image::content::{config_architecture, document_kind, parse_manifest, select_manifest};
use containerd_shim_wasmedge::image::detect::{classify, Evidence, ImageFacts, Kind, WASM_MAGIC};
use containerd_shim_wasmedge::image::writer::{normalize_reference, tag_of};
use oci_spec::runtime::Spec;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

fn config() -> ProptestConfig {
    ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------------------------
// systemd's `slice:prefix:name` cgroupsPaths, mapped to a cgroupfs path the shim creates

proptest! {
    #![proptest_config(config())]

    /// Whatever the spec says, the cgroup stays a plain path below each hierarchy's root: no
    /// `..`, no empty or `.` component, and the scope is the last one.
    #[test]
    fn systemd_paths_stay_below_the_hierarchy_root(path in "[a-z.-]{0,10}(\\.slice)?:[a-z./-]{0,6}:[a-z0-9./-]{0,8}") {
        if let Ok(mapped) = cgroup::resolve(&path, true) {
            prop_assert!(mapped.starts_with('/'), "{:?} → {:?}", path, mapped);
            let parts: Vec<&str> = mapped[1..].split('/').collect();
            prop_assert!(parts.iter().all(|p| !p.is_empty() && *p != "." && *p != ".."), "{:?} → {:?}", path, mapped);
            let name = path.rsplit(':').next().unwrap();
            prop_assert!(parts.last().unwrap().ends_with(".scope") || *parts.last().unwrap() == name, "{:?} → {:?}", path, mapped);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Durations (`wasmedge.io/time-limit`, the runtime options' `time_limit`)

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_string_is_a_duration_or_an_error(s in "\\PC{0,12}") {
        let _ = parse_duration(&s);
    }

    #[test]
    fn numbers_with_units_mean_what_they_say(n in 0u64..10_000_000, unit in prop::sample::select(vec!["ms", "s", "", "m", "h"])) {
        let expected = match unit {
            "ms" => Duration::from_millis(n),
            "s" | "" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            _ => Duration::from_secs(n * 3600),
        };
        let got = parse_duration(&format!("{n}{unit}")).unwrap();
        let diff = if got > expected { got - expected } else { expected - got };
        prop_assert!(diff <= Duration::from_micros(1), "{n}{unit} gave {got:?}");
    }

    /// Digits and a unit, as a user may type them, up to 15 digits: must not panic. Longer ones
    /// are the known bug in `huge_durations_are_an_error_not_a_panic`.
    #[test]
    fn typed_durations_parse_or_fail_cleanly(s in "[0-9]{0,15}(\\.[0-9]{0,4})?(ms|s|m|h|d|)") {
        let _ = parse_duration(&s);
    }
}

/// `Duration::from_secs_f64` panics past u64::MAX seconds; the annotation value comes from the
/// user and is parsed inside the shim's Task.Create.
#[test]
fn huge_durations_are_an_error_not_a_panic() {
    for s in ["99999999999999999999s", "1e400s", &"9".repeat(400), "18446744073709551616", "307445734561825861m"] {
        let result = std::panic::catch_unwind(|| parse_duration(s));
        assert!(matches!(result, Ok(Err(_))), "parse_duration({s:?}) did not return an error: {result:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// config.json → launch plan

fn path_like() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/".to_string()),
        "(/[a-z.]{1,6}){1,4}",
        "([a-z.]{1,6}/){0,3}[a-z.]{1,6}",
        "/(\\.\\./){1,4}[a-z]{1,5}",
        "\\PC{0,16}",
    ]
}

fn mount() -> impl Strategy<Value = Value> {
    let typ = prop::option::of(prop::sample::select(vec!["bind", "tmpfs", "proc", "sysfs", "cgroup", "overlay", "weird"]));
    let options = prop::collection::vec(
        prop::sample::select(vec!["rbind", "bind", "ro", "rw", "nosuid", "size=65536k", "mode=755", "=", "x=y"]),
        0..4,
    );
    (path_like(), prop::option::of(path_like()), typ, options).prop_map(|(destination, source, typ, options)| {
        let mut m = json!({"destination": destination, "options": options});
        if let Some(source) = source {
            m["source"] = json!(source);
        }
        if let Some(typ) = typ {
            m["type"] = json!(typ);
        }
        m
    })
}

fn annotations() -> impl Strategy<Value = HashMap<String, String>> {
    let time_limit = prop_oneof![
        "[0-9]{1,12}(ms|s|m|h)",
        "[0-9]{0,3}\\.[0-9]{0,3}s",
        Just("0".to_string()),
        "\\PC{0,8}",
    ];
    let key = prop_oneof![
        Just(TIME_LIMIT_ANNOTATION.to_string()),
        Just("module.wasm.image/variant".to_string()),
        Just("run.oci.handler".to_string()),
        Just("io.kubernetes.cri.sandbox-id".to_string()),
        "[a-z./-]{1,12}",
    ];
    prop::collection::hash_map(key, prop_oneof![time_limit, Just("compat".into()), Just("wasm".into())], 0..4)
}

fn spec_json() -> impl Strategy<Value = Value> {
    let args = prop::collection::vec(path_like(), 0..4);
    let env = prop::collection::vec("[A-Z]{1,4}=\\PC{0,6}|\\PC{0,6}", 0..4);
    let namespaces = prop::collection::vec(
        (prop::sample::select(vec!["pid", "network", "mount", "ipc", "uts", "user", "cgroup"]), prop::option::of(path_like())),
        0..5,
    );
    let memory = prop::option::of(prop_oneof![any::<i64>(), 0i64..(1 << 34), Just(-1i64)]);
    (
        (args, env, path_like(), prop::option::of(path_like()), any::<bool>()),
        (prop::collection::vec(mount(), 0..4), namespaces, memory, annotations(), prop::option::of(path_like())),
    )
        .prop_map(|((args, env, cwd, root, readonly), (mounts, namespaces, memory, annotations, cgroups))| {
            let mut spec = json!({
                "ociVersion": "1.1.0",
                "process": {"args": args, "env": env, "cwd": cwd, "user": {"uid": 0, "gid": 0}},
                "mounts": mounts,
                "annotations": annotations,
                "linux": {"namespaces": namespaces.iter().map(|(t, p)| match p {
                    Some(p) => json!({"type": t, "path": p}),
                    None => json!({"type": t}),
                }).collect::<Vec<_>>()},
            });
            if let Some(root) = root {
                spec["root"] = json!({"path": root, "readonly": readonly});
            }
            if let Some(limit) = memory {
                spec["linux"]["resources"] = json!({"memory": {"limit": limit}});
            }
            if let Some(path) = cgroups {
                spec["linux"]["cgroupsPath"] = json!(path);
            }
            spec
        })
}

fn check_launch(spec: &Spec) -> Result<(), TestCaseError> {
    let bundle = Path::new("/run/containerd/io.containerd.runtime.v2.task/test/c1");
    let Ok(launch) = Launch::from_spec("c1", bundle, spec, &EngineOptions::default(), false) else { return Ok(()) };
    let json = serde_json::to_vec(&launch).unwrap();
    let back: Launch = serde_json::from_slice(&json).unwrap();
    prop_assert_eq!(&back, &launch, "the launch plan changed on its way to the container process");
    prop_assert!(launch.rootfs.is_absolute());
    if let Some(pages) = launch.engine.limits.max_memory_pages {
        prop_assert!((1..=65536).contains(&pages));
    }
    prop_assert!(launch.engine.limits.time_limit != Some(Duration::ZERO));
    prop_assert_eq!(launch.wasi.preopens.first().map(|p| p.guest.as_path()), Some(Path::new("/")));
    prop_assert_eq!(&launch.wasi.args, spec.process().as_ref().unwrap().args().as_ref().unwrap());
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_spec_maps_to_a_launch_plan_or_an_error(value in spec_json()) {
        let spec = serde_json::from_value::<Spec>(value.clone());
        prop_assert!(spec.is_ok(), "the generator made a spec serde refuses: {}", value);
        check_launch(&spec.unwrap())?;
    }

    #[test]
    fn any_bytes_as_config_json_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(spec) = serde_json::from_slice::<Spec>(&bytes) {
            check_launch(&spec)?;
        }
    }

    #[test]
    fn memory_limits_become_a_page_cap_within_wasm32(limit in any::<i64>()) {
        let spec: Spec = serde_json::from_value(json!({
            "ociVersion": "1.1.0",
            "process": {"args": ["/app.wasm"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs"},
            "linux": {"resources": {"memory": {"limit": limit}}},
        })).unwrap();
        let launch = Launch::from_spec("c1", Path::new("/b"), &spec, &EngineOptions::default(), false).unwrap();
        let pages = launch.engine.limits.max_memory_pages;
        if limit <= 0 {
            prop_assert_eq!(pages, None);
        } else {
            let pages = pages.unwrap() as u64;
            prop_assert!((1..=65536).contains(&pages));
            // Never more than the limit, unless the limit is below one page.
            prop_assert!(pages * 65536 <= (limit as u64).max(65536));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Wasm detection

proptest! {
    #![proptest_config(config())]

    #[test]
    fn detection_follows_its_rules(
        annotations in prop::option::of(annotations()),
        entrypoint in prop::option::of(path_like()),
        head in prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
        magic in any::<bool>(),
        image in prop::option::of(("wasm|amd64|\\PC{0,5}", prop::collection::vec("application/wasm|application/vnd.oci.image.layer.v1.tar\\+gzip|\\PC{0,8}", 0..3))),
    ) {
        let head = head.map(|h| if magic { [WASM_MAGIC.as_slice(), &h].concat() } else { h });
        let image = image.map(|(architecture, layer_media_types)| ImageFacts { architecture, layer_media_types, ..Default::default() });
        let evidence = Evidence {
            annotations: annotations.as_ref(),
            entrypoint: entrypoint.as_deref(),
            entrypoint_head: head.as_deref(),
            image: image.as_ref(),
        };
        let kind = classify(&evidence);
        let annotation = |k: &str| annotations.as_ref().and_then(|a| a.get(k)).map(String::as_str);
        let wasm_by_rule = head.as_deref().is_some_and(|h| h.starts_with(WASM_MAGIC))
            || annotation("module.wasm.image/variant") == Some("compat")
            || annotation("run.oci.handler") == Some("wasm")
            || image.as_ref().is_some_and(|i| i.architecture == "wasm" || i.layer_media_types.iter().any(|t| t == "application/wasm"));
        if wasm_by_rule {
            prop_assert!(matches!(kind, Kind::Wasm(_)), "{:?} gave {:?}", evidence, kind);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Image documents from containerd's content store, and references

fn platform() -> impl Strategy<Value = Value> {
    (prop::sample::select(vec!["wasm", "amd64", "arm64", ""]), prop::sample::select(vec!["wasi", "wasip1", "linux", ""]))
        .prop_map(|(architecture, os)| json!({"architecture": architecture, "os": os}))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_as_image_documents_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256), media_type in "\\PC{0,40}") {
        let _ = document_kind(&media_type, &bytes);
        let _ = select_manifest(&bytes);
        let _ = parse_manifest(&bytes);
        let _ = config_architecture(&bytes);
    }

    #[test]
    fn an_index_with_a_wasm_manifest_selects_it(platforms in prop::collection::vec(platform(), 0..5), wasm_at in any::<prop::sample::Index>()) {
        let mut manifests: Vec<Value> = platforms
            .iter()
            .enumerate()
            .map(|(i, p)| json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{i:064x}"), "size": 1, "platform": p}))
            .collect();
        let wasm = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{:064x}", 999), "size": 1,
                          "platform": {"architecture": "wasm", "os": "wasi"}});
        let at = wasm_at.index(manifests.len() + 1);
        manifests.insert(at, wasm);
        let index = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": manifests})).unwrap();
        let chosen = select_manifest(&index).unwrap();
        let platform = chosen.platform.unwrap();
        prop_assert_eq!(platform.architecture.as_str(), "wasm");
        prop_assert!(["wasi", "wasip1", "wasip2"].contains(&platform.os.as_str()), "chose {:?}", platform);
    }

    #[test]
    fn normalized_references_are_fixed_points(s in "([a-z0-9.:-]{0,12}/){0,3}[a-zA-Z0-9._-]{0,12}(:[a-zA-Z0-9._-]{0,10})?") {
        if let Ok(r) = normalize_reference(&s) {
            prop_assert_eq!(normalize_reference(&r).ok(), Some(r.clone()), "{:?} normalized to {:?}", s, r);
            prop_assert!(!tag_of(&r).is_empty());
        }
    }
}
