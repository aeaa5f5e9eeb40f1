//! One span and one log line per request: request id, route, status, latency, and for a 5xx
//! the internal cause, logged here once and never sent to the client.
//!
//! Labels and log fields are bounded: the method and route labels come from fixed lists, and a
//! client's `x-request-id` is kept only when it is short and plain (else a new one is made).

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::error::ProblemCause;
use crate::telemetry::context::{self, Correlation};
use crate::telemetry::traces::{self, propagation};

/// Every route pattern the routers serve, so a route label is a `&'static str` taken from here.
/// A matched route missing from this list would show as `other` (the hostile_labels test
/// requests every route and fails on that).
const ROUTES: [&str; 10] = [
    "/v1/orders",
    "/v1/order",
    "/v1/orders/{id}",
    "/health/live",
    "/health/ready",
    "/openapi.json",
    "/metrics",
    "/docs",
    "/docs/",
    "/docs/{*file}",
];

/// Longest client `x-request-id` kept (Heroku's router keeps 20–200 characters).
const MAX_REQUEST_ID_LEN: usize = 200;

pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_label(request.extensions().get::<MatchedPath>());
    let method = method_label(request.method());
    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let mut correlation = Correlation {
        request_id: request.headers().get("x-request-id").cloned(),
        traceparent: request.headers().get("traceparent").filter(|v| is_traceparent(v.as_bytes())).cloned(),
        sampled: true,
    };
    // The server span: the semantic conventions' names (`otel.*` are read by the exporter, not
    // exported as attributes); `method`, `route` and `request_id` are what the log shows.
    let span = tracing::info_span!(
        "request",
        %method,
        %route,
        %request_id,
        otel.name = tracing::field::Empty,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        url.path = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    // The sampler decides here, once: a trace not sampled gets no inner spans (see
    // `Correlation::sampled`), and its upstreams are told so.
    let mut context = None;
    if traces::enabled() {
        span.record("otel.name", format!("{method} {route}"));
        span.record("url.path", request.uri().path());
        propagation::continue_trace(&span, request.headers());
        context = propagation::of(&span);
        if let Some(ours) = context.as_ref().filter(|c| !c.sampled()) {
            correlation.sampled = false;
            correlation.traceparent = HeaderValue::try_from(ours.traceparent.as_str()).ok();
        }
    }
    let mut response = context::scope(correlation, next.run(request).instrument(span.clone())).await;
    let status = response.status().as_u16();
    // For the tracer only (the log line has `status`): the log layer re-writes a span's fields
    // on each record.
    if traces::enabled() {
        span.record("http.response.status_code", status);
        if status >= 500 {
            span.record("otel.status_code", "ERROR");
        }
    }
    // W3C Trace Context level 2 `traceresponse`: the client learns which trace its request was.
    if let Some(context) = context
        && let Ok(value) = HeaderValue::try_from(context.traceparent)
    {
        response.headers_mut().insert("traceresponse", value);
    }
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    crate::telemetry::metrics::http_request(method, route, status, started.elapsed());
    let _entered = span.enter();
    match response.extensions().get::<ProblemCause>() {
        Some(ProblemCause(cause)) => {
            tracing::warn!(status, latency_ms, cause = %cause, "request failed")
        }
        None => tracing::info!(status, latency_ms, "request"),
    }
    response
}

/// The route pattern that matched; `unmatched` for a 404 of the fallback. A 405 keeps the route
/// whose path matched.
fn route_label(matched: Option<&MatchedPath>) -> &'static str {
    match matched {
        None => "unmatched",
        Some(path) => ROUTES.iter().find(|route| **route == path.as_str()).copied().unwrap_or("other"),
    }
}

/// The methods of RFC 9110 and PATCH by name; any other (extension methods are any token a
/// client invents) is `other`.
fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "CONNECT" => "CONNECT",
        _ => "other",
    }
}

/// Drops a client `x-request-id` that is empty, longer than [`MAX_REQUEST_ID_LEN`] or not
/// plain (`[A-Za-z0-9._:+/=-]`), so the layer after this one makes a new id: the id goes into
/// every log line, the response and both upstream calls, and must stay short and printable.
pub fn drop_unusable_request_id(mut request: Request) -> Request {
    if request.headers().get("x-request-id").is_some_and(|id| !usable_request_id(id.as_bytes())) {
        request.headers_mut().remove("x-request-id");
    }
    request
}

/// A client `x-request-id` the service keeps: 1–[`MAX_REQUEST_ID_LEN`] of `[A-Za-z0-9._:+/=-]`.
pub fn usable_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id.iter().all(|b| b.is_ascii_alphanumeric() || b"._:+/=-".contains(b))
}

/// `00-{32 hex}-{16 hex}-{2 hex}`: only a well-formed W3C traceparent is passed on.
fn is_traceparent(value: &[u8]) -> bool {
    let hex = |s: &[u8]| s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    value.len() == 55
        && [2, 35, 52].iter().all(|&i| value[i] == b'-')
        && hex(&value[0..2])
        && hex(&value[3..35])
        && hex(&value[36..52])
        && hex(&value[53..55])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_traceparents_pass() {
        assert!(is_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert!(!is_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0"));
        assert!(!is_traceparent(b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));
        assert!(!is_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736\n0f067aa0ba902b7-01"));
    }

    #[test]
    fn only_known_methods_are_labels() {
        for known in ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"] {
            assert_eq!(method_label(&Method::from_bytes(known.as_bytes()).expect("method")), known);
        }
        for invented in ["get", "BREW", "PROPFIND", &"X".repeat(2048)] {
            assert_eq!(method_label(&Method::from_bytes(invented.as_bytes()).expect("method")), "other");
        }
    }

    #[test]
    fn only_short_plain_request_ids_are_kept() {
        let kept = |id: &[u8]| {
            let request = Request::builder().header("x-request-id", id).body(axum::body::Body::empty());
            drop_unusable_request_id(request.expect("request")).headers().contains_key("x-request-id")
        };
        assert!(kept(b"abc-123"));
        assert!(kept(b"01a201cc-2f07-76cc-9f2b-6034296582c8"));
        assert!(kept("k".repeat(MAX_REQUEST_ID_LEN).as_bytes()));
        assert!(!kept("k".repeat(MAX_REQUEST_ID_LEN + 1).as_bytes()));
        assert!(!kept(b""));
        assert!(!kept(b"a b"));
        assert!(!kept(b"caf\xc3\xa9"));
    }
}
