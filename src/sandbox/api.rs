//! The HTTP API (axum): routes, the JSON errors with their stable codes, and the link between a
//! request and its execution — which runs on a task of its own, so that a client going away
//! kills its container and the cleanup still finishes.
use super::execute::{self, Invalid};
use super::metrics::Rejected;
use super::telemetry::Span;
use super::tenants::Refusal;
use super::{limits, Service};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;
use tokio::sync::watch;

/// The API's OpenAPI description, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/v1/execute", post(execute))
        .route("/v1/languages", get(languages))
        .route("/healthz", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint".into()) })
        // The body is bounded here and each part in execute::check; a larger body is a 413.
        .layer(DefaultBodyLimit::max(limits::MAX_BODY))
        .with_state(service)
}

/// `{"error": {"code", "message"}}` with `status`.
fn error(status: StatusCode, code: &str, message: String) -> Response {
    (status, Json(serde_json::json!({"error": {"code": code, "message": message}}))).into_response()
}

fn refused(service: &Service, status: StatusCode, code: &str, message: String) -> Response {
    service.metrics.rejected.get_or_create(&Rejected { status: status.as_u16() }).inc();
    log::info!("refused status={} code={code} message={message:?}", status.as_u16());
    error(status, code, message)
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
}

/// `POST /v1/execute`, in a span of its own: the root of the request's trace, unless the
/// caller sent a `traceparent`.
async fn execute(
    State(service): State<Arc<Service>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let span = Span::request("POST", "/v1/execute", headers.get("traceparent").and_then(|v| v.to_str().ok()));
    let response = respond(service, headers, body, span.clone()).await;
    span.set("http.response.status_code", response.status().as_u16());
    span.end();
    response
}

async fn respond(
    service: Arc<Service>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    span: Span,
) -> Response {
    let tenant = match service.tenants.admit(authorization(&headers)) {
        Ok(permit) => permit,
        Err(Refusal::Unauthorized) => {
            return refused(&service, StatusCode::UNAUTHORIZED, "unauthorized", "a valid API key is needed: Authorization: Bearer KEY".into())
        }
        Err(Refusal::Limited { retry_after, why }) => {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            let mut response = refused(&service, StatusCode::TOO_MANY_REQUESTS, "rate_limited", format!("{why}; retry after {secs} s"));
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return response;
        }
    };
    let body = match body {
        Ok(body) => body,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let why = format!("the request body is over the bound of {} bytes", limits::MAX_BODY);
            return refused(&service, StatusCode::PAYLOAD_TOO_LARGE, "too_large", why);
        }
        Err(e) => return refused(&service, StatusCode::BAD_REQUEST, "bad_request", format!("cannot read the body: {e}")),
    };
    let request: execute::Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return refused(&service, StatusCode::BAD_REQUEST, "bad_request", format!("malformed request: {e}")),
    };
    let language = match execute::check(&request, &service.languages) {
        Ok(l) => l.clone(),
        Err(Invalid::Bad(why)) => return refused(&service, StatusCode::BAD_REQUEST, "bad_request", why),
        Err(Invalid::TooLarge(why)) => return refused(&service, StatusCode::PAYLOAD_TOO_LARGE, "too_large", why),
    };
    let limits = match service.policy.limits(request.limits.as_ref()) {
        Ok(l) => l,
        Err(why) => return refused(&service, StatusCode::BAD_REQUEST, "bad_limit", why),
    };
    let Some(slot) = service.admission.enter(&service.metrics.queue_depth).await else {
        let mut response =
            refused(&service, StatusCode::SERVICE_UNAVAILABLE, "queue_full", "the service is at capacity and its queue is full".into());
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
        return response;
    };
    // The execution holds the slot and the tenant's permit until its cleanup is done; if this
    // handler is dropped (the client went away), `_client` drops and the container is killed.
    let (_client, cancel) = watch::channel(());
    let task = {
        let service = service.clone();
        tokio::spawn(async move {
            let _held = (slot, tenant);
            execute::execute(&service, request, language, limits, cancel, &span).await
        })
    };
    match task.await {
        Ok(Ok(response)) => Json(response).into_response(),
        Ok(Err(e)) => {
            log::error!("execution failed: {e:#}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("{e:#}"))
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the execution task failed: {e}")),
    }
}

async fn languages(State(service): State<Arc<Service>>) -> Response {
    Json(serde_json::json!({"languages": service.languages})).into_response()
}

/// Ready when containerd answers and the shim is installed where containerd looks for it.
async fn ready(State(service): State<Arc<Service>>) -> Response {
    let containerd = service.cd.version().await;
    let shim = super::find_shim();
    match (&containerd, &shim) {
        (Ok(version), Some(shim)) => {
            Json(serde_json::json!({"status": "ready", "containerd": version, "shim": shim})).into_response()
        }
        _ => {
            let mut problems = Vec::new();
            if let Err(e) = containerd {
                problems.push(format!("containerd: {e:#}"));
            }
            if shim.is_none() {
                problems.push(format!("{} not found on PATH", super::SHIM_BINARY));
            }
            error(StatusCode::SERVICE_UNAVAILABLE, "not_ready", problems.join("; "))
        }
    }
}

async fn metrics(State(service): State<Arc<Service>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], service.metrics.encode()).into_response()
}
