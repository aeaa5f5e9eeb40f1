//! Admission to `/v1`: reads and writes each have an in-flight limit (the writes' adapts to
//! latency, [`limit`]), and a write's body is read before it takes a permit, so clients that
//! send slowly hold no capacity that orders need.
//!
//! Order of checks for a write: no room → 503 `load-shed` at once, before anything else runs
//! ([`shed`]: a precomputed answer, no log line, no body read); a declared body over the limit →
//! 413; read the body (bounded by size and time: 413, 408); take a permit, or 503 if others took
//! the last one meanwhile. A read only takes a permit.

mod limit;
pub mod shed;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use super::extract::BodyLimits;
use super::replays::Replay;
use crate::config::LimitConfig;
pub use limit::{AdaptiveLimit, LimitPermit, OnChange};

/// What the admission middleware needs; cheap to clone.
#[derive(Debug, Clone)]
pub struct Admission {
    pub reads: AdaptiveLimit,
    pub writes: AdaptiveLimit,
    pub body: BodyLimits,
}

impl Admission {
    /// Reads get a fixed limit; writes an adaptive one whose value goes to `on_change`.
    pub fn new(max_reads: usize, writes: &LimitConfig, body: BodyLimits, on_change: OnChange) -> Self {
        Self { reads: AdaptiveLimit::fixed(max_reads), writes: AdaptiveLimit::new(writes, on_change), body }
    }
}

/// `GET` and `HEAD` are reads; every other method may carry a body and write.
fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// The middleware in front of every `/v1` route (see the module doc for the order of checks).
pub async fn admit(State(gate): State<Admission>, request: Request, next: Next) -> Result<Response, ApiError> {
    if is_read(request.method()) {
        let permit = gate.reads.try_acquire().ok_or(ApiError::Overloaded)?;
        return Ok(answered(permit, next.run(request).await));
    }
    gate.body.check_declared(request.headers())?;
    if request.extensions().get::<Replay>().is_some() {
        // Answered from memory (`crate::http::replays`): no permit to take.
        let (parts, body) = request.into_parts();
        let body = gate.body.read(body).await?;
        return Ok(next.run(Request::from_parts(parts, Body::from(body))).await);
    }
    if !gate.writes.has_room() {
        return Err(ApiError::Overloaded);
    }
    let (parts, body) = request.into_parts();
    let body = gate.body.read(body).await?;
    let permit = gate.writes.try_acquire().ok_or(ApiError::Overloaded)?;
    Ok(answered(permit, next.run(Request::from_parts(parts, Body::from(body))).await))
}

/// Gives the permit back with the answer's latency as a sample; a 5xx is an error sample.
fn answered(permit: LimitPermit, response: Response) -> Response {
    permit.answered(response.status().is_server_error());
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    use super::*;

    #[test]
    fn a_full_limit_refuses_at_once_and_frees_on_drop() {
        let limit = AdaptiveLimit::fixed(1);
        let held = limit.try_acquire().expect("a permit");
        assert!(!limit.has_room());
        assert!(limit.try_acquire().is_none());
        drop(held);
        assert!(limit.has_room());
        assert!(limit.try_acquire().is_some());
    }

    fn app(gate: Admission) -> Router {
        Router::new()
            .route("/r", get(|| async { "read" }))
            .route("/w", post(|body: String| async move { body }))
            .route_layer(axum::middleware::from_fn_with_state(gate, admit))
    }

    fn gate() -> Admission {
        let writes = LimitConfig { algorithm: crate::config::LimitAlgorithm::Fixed, min: 1, max: 1 };
        let body = BodyLimits { max_bytes: 8, read_timeout: Duration::from_millis(200) };
        Admission::new(1, &writes, body, Box::new(|_| {}))
    }

    async fn status(app: &Router, request: Request) -> StatusCode {
        app.clone().oneshot(request).await.expect("infallible").status()
    }

    fn write(body: &'static str) -> Request {
        Request::post("/w").body(Body::from(body)).expect("request")
    }

    #[tokio::test]
    async fn reads_and_writes_are_limited_separately() {
        let gate = gate();
        let app = app(gate.clone());
        let _write = gate.writes.try_acquire().expect("the only write permit");
        assert_eq!(status(&app, write("{}")).await, StatusCode::SERVICE_UNAVAILABLE, "writes are full");
        assert_eq!(status(&app, Request::get("/r").body(Body::empty()).expect("r")).await, StatusCode::OK);
        let _read = gate.reads.try_acquire().expect("the only read permit");
        assert_eq!(
            status(&app, Request::get("/r").body(Body::empty()).expect("r")).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_413_declared_or_not() {
        let app = app(gate());
        assert_eq!(status(&app, write("more than eight")).await, StatusCode::PAYLOAD_TOO_LARGE);
        let declared = Request::post("/w").header("content-length", "9999").body(Body::empty()).expect("w");
        assert_eq!(status(&app, declared).await, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(status(&app, write("ok")).await, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_body_that_never_ends_is_408_and_holds_no_permit_meanwhile() {
        let gate = gate();
        let app = app(gate.clone());
        let (_sender, never) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(1);
        let slow = Request::post("/w").body(Body::from_stream(channel_stream(never))).expect("w");
        let pending = tokio::spawn({
            let app = app.clone();
            async move { status(&app, slow).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(gate.writes.has_room(), "reading a body takes no permit");
        assert_eq!(pending.await.expect("task"), StatusCode::REQUEST_TIMEOUT);
    }

    /// A body stream that yields what is sent on `rx` (here: nothing, ever).
    fn channel_stream(
        mut rx: tokio::sync::mpsc::Receiver<Result<axum::body::Bytes, std::io::Error>>,
    ) -> impl futures_util::Stream<Item = Result<axum::body::Bytes, std::io::Error>> + Send + 'static {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
