//! The shedding layer: a full lane is refused before its handler runs or its body is read,
//! with the same problem `ApiError::Overloaded` renders; other lanes and routes pass.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tower::ServiceExt;

use super::*;
use crate::config::{LimitAlgorithm, LimitConfig};
use crate::http::error::ApiError;
use crate::http::extract::BodyLimits;

fn replays() -> CompletedKeys {
    let keys = crate::config::IdempotencyConfig {
        lease: Duration::from_secs(30),
        retention: Duration::from_secs(3600),
        longest_order: Duration::from_secs(3),
    };
    CompletedKeys::new(&keys)
}

fn gate() -> Admission {
    let writes = LimitConfig { algorithm: LimitAlgorithm::Fixed, min: 1, max: 1 };
    let body = BodyLimits { max_bytes: 64, read_timeout: Duration::from_secs(1) };
    Admission::new(1, &writes, body, Box::new(|_| {}))
}

/// Routes like the service's, each counting the calls that reach it.
fn app(gate: &Admission, calls: &'static AtomicUsize) -> Router {
    let handler = || async {
        calls.fetch_add(1, Ordering::SeqCst);
        "handled"
    };
    Router::new()
        .route("/v1/orders", post(handler).get(handler))
        .route("/v1/orders/{id}", get(handler))
        .route("/health/live", get(handler))
        .layer(ShedLayer::new(gate, Duration::ZERO, replays()))
}

/// A body that never arrives: a shed request must be answered without waiting for it.
fn endless_body() -> Body {
    Body::from_stream(futures_util::stream::pending::<Result<axum::body::Bytes, std::io::Error>>())
}

async fn send(app: &Router, request: Request) -> Response {
    app.clone().oneshot(request).await.expect("infallible")
}

#[tokio::test]
async fn a_full_write_lane_is_refused_unread_with_the_overloaded_problem() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let gate = gate();
    let app = app(&gate, &CALLS);
    let _held = gate.writes.try_acquire().expect("the only write permit");

    let request = Request::post("/v1/orders").header("x-request-id", "abc-1").body(endless_body()).expect("request");
    let shed = send(&app, request).await;
    assert_eq!(CALLS.load(Ordering::SeqCst), 0, "the handler never ran");
    let expected = ApiError::Overloaded.into_response();
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
        assert_eq!(shed.headers().get(&name), expected.headers().get(&name), "{name}");
    }
    assert_eq!(shed.headers()["x-request-id"], "abc-1", "the caller's id is echoed");
    let body = |r: Response| axum::body::to_bytes(r.into_body(), 4096);
    assert_eq!(body(shed).await.expect("body"), body(expected).await.expect("body"));
}

#[tokio::test]
async fn a_shed_request_without_a_usable_id_gets_a_new_one() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let gate = gate();
    let app = app(&gate, &CALLS);
    let _held = gate.writes.try_acquire().expect("the only write permit");
    let request = Request::post("/v1/orders").header("x-request-id", "a b").body(Body::empty()).expect("request");
    let shed = send(&app, request).await;
    let id = shed.headers()["x-request-id"].to_str().expect("ascii");
    assert_eq!(id.len(), 36, "a fresh UUID, not the unusable {id:?}");
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_sent_after_the_shed_delay_and_holds_no_permit_meanwhile() {
    let gate = gate();
    let app = Router::new().route("/v1/orders", post(|| async { "placed" }));
    let app = app.layer(ShedLayer::new(&gate, Duration::from_millis(100), replays()));
    let held = gate.writes.try_acquire().expect("the only write permit");
    let refused = tokio::spawn(send_owned(app.clone(), Request::post("/v1/orders").body(Body::empty()).expect("r")));
    tokio::time::sleep(Duration::from_millis(99)).await;
    assert!(!refused.is_finished(), "not sent before the delay");
    drop(held);
    assert_eq!(gate.writes.in_flight(), 0, "the waiting refusal holds no permit");
    assert_eq!(refused.await.expect("task").status(), StatusCode::SERVICE_UNAVAILABLE, "decided when it arrived");
    let placed = send(&app, Request::post("/v1/orders").body(Body::empty()).expect("r")).await;
    assert_eq!(placed.status(), StatusCode::OK, "the freed permit serves the next");
}

async fn send_owned(app: Router, request: Request) -> Response {
    send(&app, request).await
}

#[tokio::test]
async fn lanes_are_apart_and_other_routes_never_shed() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let gate = gate();
    let app = app(&gate, &CALLS);
    let get = |uri: &str| Request::get(uri).body(Body::empty()).expect("request");

    let write = gate.writes.try_acquire().expect("the only write permit");
    assert_eq!(send(&app, get("/v1/orders")).await.status(), StatusCode::OK, "reads pass while writes are full");
    assert_eq!(send(&app, get("/v1/orders/x")).await.status(), StatusCode::OK);
    drop(write);

    let _read = gate.reads.try_acquire().expect("the only read permit");
    assert_eq!(send(&app, get("/v1/orders/x")).await.status(), StatusCode::SERVICE_UNAVAILABLE, "reads are full");
    let _write = gate.writes.try_acquire().expect("the only write permit");
    assert_eq!(send(&app, get("/health/live")).await.status(), StatusCode::OK, "health is never shed");
    let post = Request::post("/v1/orders").body(Body::empty()).expect("request");
    assert_eq!(send(&app, post).await.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(CALLS.load(Ordering::SeqCst), 3, "only the three that passed reached a handler");
}
