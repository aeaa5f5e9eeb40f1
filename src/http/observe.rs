//! One span and one log line per request: request id, route, status, latency, and for a 5xx
//! the internal cause, logged here once and never sent to the client.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::error::ProblemCause;
use crate::telemetry::context::{self, Correlation};

pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |path| path.as_str()).to_owned();
    let method = request.method().clone();
    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let correlation = Correlation {
        request_id: request.headers().get("x-request-id").cloned(),
        traceparent: request.headers().get("traceparent").filter(|v| is_traceparent(v.as_bytes())).cloned(),
    };
    let span = tracing::info_span!("request", %method, %route, %request_id);
    let response = context::scope(correlation, next.run(request).instrument(span.clone())).await;
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    crate::telemetry::metrics::http_request(method.as_str(), &route, status, started.elapsed());
    let _entered = span.enter();
    match response.extensions().get::<ProblemCause>() {
        Some(ProblemCause(cause)) => {
            tracing::warn!(status, latency_ms, cause = %cause, "request failed")
        }
        None => tracing::info!(status, latency_ms, "request"),
    }
    response
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
}
