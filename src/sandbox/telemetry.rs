//! One OpenTelemetry trace per request (with the `otlp` feature, export configured by the
//! standard `OTEL_*` variables as in [`crate::trace::otlp`]): the HTTP request's span, `compile`
//! and `run` under it, and the shim's `container` span under `run` — the run span's W3C
//! `traceparent` goes to the shim in the annotation [`crate::trace::PARENT_ANNOTATION`].
//! Without the feature, or with export off, every call here does nothing.
#[cfg(feature = "otlp")]
use opentelemetry::{
    trace::{SpanKind, TraceContextExt, Tracer},
    Context, KeyValue,
};

/// A span; its children are made from it. Ends when [`Self::end`] is called.
#[derive(Clone, Default)]
pub struct Span {
    #[cfg(feature = "otlp")]
    cx: Option<Context>,
}

/// Spans are exported as `wasmedge-sandbox`.
pub fn init() {
    #[cfg(feature = "otlp")]
    crate::trace::otlp::set_service_name("wasmedge-sandbox");
}

impl Span {
    /// The span of an HTTP request, continuing the caller's trace if it sent a `traceparent`.
    #[cfg_attr(not(feature = "otlp"), allow(unused_variables))]
    pub fn request(method: &str, path: &str, traceparent: Option<&str>) -> Span {
        #[cfg(feature = "otlp")]
        {
            let Some(tracer) = crate::trace::otlp::tracer() else { return Span::default() };
            let parent = crate::trace::otlp::remote_context(traceparent);
            let span = tracer
                .span_builder(format!("{method} {path}"))
                .with_kind(SpanKind::Server)
                .with_attributes([KeyValue::new("http.request.method", method.to_string()), KeyValue::new("url.path", path.to_string())])
                .start_with_context(&tracer, &parent);
            Span { cx: Some(parent.with_span(span)) }
        }
        #[cfg(not(feature = "otlp"))]
        Span::default()
    }

    /// A span under this one, from now.
    #[cfg_attr(not(feature = "otlp"), allow(unused_variables))]
    pub fn child(&self, name: &'static str) -> Span {
        #[cfg(feature = "otlp")]
        if let (Some(cx), Some(tracer)) = (&self.cx, crate::trace::otlp::tracer()) {
            return Span { cx: Some(cx.with_span(tracer.start_with_context(name, cx))) };
        }
        Span::default()
    }

    #[cfg_attr(not(feature = "otlp"), allow(unused_variables))]
    pub fn set(&self, key: &'static str, value: impl ToString) {
        #[cfg(feature = "otlp")]
        if let Some(cx) = &self.cx {
            cx.span().set_attribute(KeyValue::new(key, value.to_string()));
        }
    }

    /// The W3C `traceparent` of this span, for a callee to continue the trace.
    pub fn traceparent(&self) -> Option<String> {
        #[cfg(feature = "otlp")]
        return self.cx.as_ref().and_then(crate::trace::otlp::traceparent);
        #[cfg(not(feature = "otlp"))]
        None
    }

    pub fn end(&self) {
        #[cfg(feature = "otlp")]
        if let Some(cx) = &self.cx {
            cx.span().end();
        }
    }
}
