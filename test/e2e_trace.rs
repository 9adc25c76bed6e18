//! The start-up spans reach an OTLP collector (`--features otlp`): containerd runs with the
//! standard `OTEL_*` variables pointing at a collector this test plays (plain HTTP/protobuf on
//! a local port), and one `ctr run --rm` of hello must arrive there as one trace.

mod common;

use common::otlp::{collector, string_attr};
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use std::time::{Duration, Instant};

#[test]
fn a_containers_spans_reach_the_otlp_collector_as_one_trace() {
    let (endpoint, requests) = collector();
    let containerd = Containerd::start_with(
        config_toml,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "200")],
    );
    containerd.import(hello_image());
    let id = unique_id("traced");
    let out = containerd.run_image(&id, HELLO_IMAGE, &[], &[], None);
    assert_eq!((out.code, out.stdout.as_str()), (0, "Hello from WasmEdge!\n"), "{out:#?}");

    // containerd exports its own traces to the same collector (service `containerd`).
    let ours = |request: &ExportTraceServiceRequest| {
        request.resource_spans.iter().find(|r| {
            r.resource.as_ref().and_then(|r| string_attr(&r.attributes, "service.name")).as_deref() == Some("containerd-shim-wasmedge")
        }).cloned()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let resource_spans = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (request_line, request) = requests.recv_timeout(left).expect("no OTLP request from the shim in 30 s");
        assert_eq!(request_line, "POST /v1/traces HTTP/1.1");
        if let Some(found) = ours(&request) {
            break found;
        }
    };
    let spans: Vec<_> = resource_spans.scope_spans.iter().flat_map(|s| &s.spans).collect();
    let root = spans.iter().find(|s| s.name == "container").expect("a root span");
    assert_eq!(string_attr(&root.attributes, "container.id"), Some(id.clone()));
    assert_eq!(string_attr(&root.attributes, "exit.status").as_deref(), Some("0"));
    let mut names: Vec<&str> = spans.iter().filter(|s| s.span_id != root.span_id).map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["confine", "create", "delete", "exit", "instantiate", "load", "prepare", "run", "setup", "spawn", "start"]);
    for span in &spans {
        assert_eq!(span.trace_id, root.trace_id, "{} is in another trace", span.name);
        if span.span_id != root.span_id {
            assert_eq!(span.parent_span_id, root.span_id, "{} is not under the root", span.name);
            assert!(span.start_time_unix_nano >= root.start_time_unix_nano && span.end_time_unix_nano <= root.end_time_unix_nano,
                "{} lies outside the root span", span.name);
        }
    }
    let load = spans.iter().find(|s| s.name == "load").unwrap();
    assert!(matches!(string_attr(&load.attributes, "aot").as_deref(), Some("hit" | "compiled")), "{load:?}");
    // Confine, then touch: the module is first read in `load`, which starts only once `confine`
    // (cgroup, pivot_root, ids, capabilities, seccomp, time limit) has ended.
    let confine = spans.iter().find(|s| s.name == "confine").unwrap();
    assert!(load.start_time_unix_nano >= confine.end_time_unix_nano, "the module was loaded before confinement ended: {confine:?} {load:?}");
    containerd.assert_no_leftovers(&id);
}
