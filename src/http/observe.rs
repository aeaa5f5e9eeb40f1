//! One span and one log line per request: request id, route, status, latency, and for a 5xx
//! the internal cause, logged here once and never sent to the client.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::error::ProblemCause;

pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |path| path.as_str()).to_owned();
    let method = request.method().clone();
    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let span = tracing::info_span!("request", %method, %route, %request_id);
    let response = next.run(request).instrument(span.clone()).await;
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
