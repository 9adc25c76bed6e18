//! OTLP export of a container's spans (the `otlp` feature): one trace per container, a root span
//! `container` with the spans of [`super`] under it, sent over HTTP/protobuf by a batch
//! processor. Configured by the standard variables, which containerd passes on to its shims:
//! export is on when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//! set, unless `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. `OTEL_SERVICE_NAME` (but
//! not the `containerd` that containerd sets for itself), `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_BSP_*` work as usual.
//!
//! The execute service exports its requests' spans through the same provider, under its own
//! name ([`set_service_name`]), and hands a request's context to the shim as a W3C
//! `traceparent` ([`traceparent`], [`remote_context`]).
use super::Span;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::collections::HashMap;
use std::sync::OnceLock;

const SERVICE_NAME: &str = "containerd-shim-wasmedge";
const TRACEPARENT: &str = "traceparent";

static PROVIDER: OnceLock<Option<SdkTracerProvider>> = OnceLock::new();
static NAME: OnceLock<&'static str> = OnceLock::new();

/// The `service.name` of this process's spans (the shim's unless set before the first span).
pub fn set_service_name(name: &'static str) {
    let _ = NAME.set(name);
}

fn service_name() -> &'static str {
    NAME.get().copied().unwrap_or(SERVICE_NAME)
}

/// The tracer of this process; `None` when export is off.
pub fn tracer() -> Option<SdkTracer> {
    provider().map(|p| p.tracer(service_name()))
}

/// The W3C `traceparent` of `cx`'s span.
pub fn traceparent(cx: &Context) -> Option<String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The caller's span a W3C `traceparent` names, as a parent context (an empty one when
/// absent or malformed: the trace then starts here).
pub fn remote_context(traceparent: Option<&str>) -> Context {
    let Some(value) = traceparent else { return Context::new() };
    let carrier = HashMap::from([(TRACEPARENT.to_string(), value.to_string())]);
    TraceContextPropagator::new().extract(&carrier)
}

fn wanted() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty());
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && std::env::var("OTEL_SDK_DISABLED").map_or(true, |v| !v.eq_ignore_ascii_case("true"))
        && std::env::var("OTEL_TRACES_EXPORTER").map_or(true, |v| v != "none")
}

/// The shim's tracer provider, made on first use; `None` when export is off or cannot start.
fn provider() -> Option<&'static SdkTracerProvider> {
    PROVIDER
        .get_or_init(|| {
            if !wanted() {
                return None;
            }
            // reqwest is built without a TLS crypto provider of its own (rustls-no-provider, for
            // oci-client): an https endpoint needs the process's default.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()
                .inspect_err(|e| log::warn!("OTLP export off: {e}"))
                .ok()?;
            let mut resource = Resource::builder();
            // containerd sets OTEL_SERVICE_NAME=containerd for itself, and its shims inherit it.
            if std::env::var("OTEL_SERVICE_NAME").map_or(true, |name| name.is_empty() || name == "containerd") {
                resource = resource.with_service_name(service_name());
            }
            Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build())
        })
        .as_ref()
}

fn attributes(span: &Span) -> Vec<KeyValue> {
    span.attrs.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())).collect()
}

/// Queues a container's trace for export (no-op when export is off), under `parent` (a W3C
/// `traceparent`) if given.
pub fn export(root: &Span, children: &[Span], parent: Option<&str>) {
    let Some(tracer) = tracer() else { return };
    let root_span = tracer
        .span_builder(root.name.clone())
        .with_start_time(root.start)
        .with_attributes(attributes(root))
        .start_with_context(&tracer, &remote_context(parent));
    let cx = Context::new().with_span(root_span);
    for span in children {
        tracer
            .span_builder(span.name.clone())
            .with_start_time(span.start)
            .with_attributes(attributes(span))
            .start_with_context(&tracer, &cx)
            .end_with_timestamp(span.end);
    }
    cx.span().end_with_timestamp(root.end);
}

/// Sends what is queued; called when the shim exits.
pub fn shutdown() {
    if let Some(Some(provider)) = PROVIDER.get() {
        if let Err(e) = provider.shutdown() {
            log::warn!("OTLP export at exit: {e}");
        }
    }
}
