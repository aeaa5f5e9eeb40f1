//! Admission to `/v1`: reads and writes each have an in-flight limit, and a write's body is read
//! before it takes a permit, so clients that send slowly hold no capacity that orders need.
//!
//! Order of checks for a write: a declared body over the limit → 413; no permit free → 503
//! `load-shed` at once (cheap, nothing read); read the body (bounded by size and time: 413,
//! 408); take a permit, or 503 if others took the last one meanwhile. A read only takes a permit.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use super::extract::BodyLimits;

/// At most `max` requests in flight; never queues (a full limit refuses at once). A small type
/// of its own so an adaptive limit can replace the fixed one without touching the middleware.
#[derive(Debug, Clone)]
pub struct InFlightLimit {
    permits: Arc<Semaphore>,
}

/// One request's place in an [`InFlightLimit`], given back when dropped.
#[derive(Debug)]
pub struct InFlightPermit(#[expect(dead_code, reason = "held for its Drop")] OwnedSemaphorePermit);

impl InFlightLimit {
    pub fn new(max: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(max)) }
    }

    /// Whether a permit is free now (it may be gone by the time one is asked for).
    pub fn has_room(&self) -> bool {
        self.permits.available_permits() > 0
    }

    pub fn try_acquire(&self) -> Option<InFlightPermit> {
        Arc::clone(&self.permits).try_acquire_owned().ok().map(InFlightPermit)
    }
}

/// What the admission middleware needs; cheap to clone.
#[derive(Debug, Clone)]
pub struct Admission {
    pub reads: InFlightLimit,
    pub writes: InFlightLimit,
    pub body: BodyLimits,
}

impl Admission {
    pub fn new(max_reads: usize, max_writes: usize, body: BodyLimits) -> Self {
        Self { reads: InFlightLimit::new(max_reads), writes: InFlightLimit::new(max_writes), body }
    }
}

/// `GET` and `HEAD` are reads; every other method may carry a body and write.
fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// The middleware in front of every `/v1` route (see the module doc for the order of checks).
pub async fn admit(State(gate): State<Admission>, request: Request, next: Next) -> Result<Response, ApiError> {
    if is_read(request.method()) {
        let _permit = gate.reads.try_acquire().ok_or(ApiError::Overloaded)?;
        return Ok(next.run(request).await);
    }
    gate.body.check_declared(request.headers())?;
    if !gate.writes.has_room() {
        return Err(ApiError::Overloaded);
    }
    let (parts, body) = request.into_parts();
    let body = gate.body.read(body).await?;
    let _permit = gate.writes.try_acquire().ok_or(ApiError::Overloaded)?;
    Ok(next.run(Request::from_parts(parts, Body::from(body))).await)
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
        let limit = InFlightLimit::new(1);
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
        Admission::new(1, 1, BodyLimits { max_bytes: 8, read_timeout: Duration::from_millis(200) })
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
