//! Overload (issue 16): what stays cheap and served while the write limit is full — a replay of
//! a completed Idempotency-Key, answered from memory; a refusal that opens no server span — and
//! the limit's gauge.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use crate::kit::{ADA, Backend, Collector, TestApp, TestBinary, eventually, problem, sample};

async fn post_keyed(app: &TestApp, key: &str, product_code: &str) -> reqwest::Response {
    let body = json!({"user_id": ADA, "product_code": product_code});
    app.http.post(app.url("/v1/orders")).header("Idempotency-Key", key).json(&body).send().await.expect("request")
}

/// One write permit, which a family-box order (the product hangs) can hold for the whole test.
async fn app_with_one_write_permit() -> TestApp {
    TestApp::builder(Backend::Sqlite)
        .env("HTTP_MAX_IN_FLIGHT", "1")
        .env("HTTP_SHED_DELAY_MS", "0")
        .env("ORDER_DEADLINE_MS", "30000")
        .env("IDEMPOTENCY_LEASE_MS", "60000")
        .env("PRODUCT_ATTEMPT_TIMEOUT_MS", "30000")
        .env("PRODUCT_MAX_ATTEMPTS", "1")
        .spawn()
        .await
}

#[tokio::test]
async fn a_completed_key_is_replayed_from_memory_while_new_orders_are_shed() {
    let app = app_with_one_write_permit().await;
    let key = Uuid::now_v7().to_string();
    let first = post_keyed(&app, &key, "classic-box").await;
    assert_eq!(first.status(), 201);
    let first_body = first.bytes().await.expect("body");

    let hanging = app.post_order_in_background(ADA, "family-box");
    let sim = &app.upstreams.sim().sim;
    eventually(Duration::from_secs(5), async || sim.stats().products.total, |&n| n >= 2).await;
    let (status, body) = problem(app.post_order(ADA, "classic-box").await).await;
    assert_eq!((status, body["type"].as_str()), (503, Some("/problems/load-shed")), "the write limit is full");

    let again = post_keyed(&app, &key, "classic-box").await;
    assert_eq!(again.status(), 201, "the replay needs no permit");
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.bytes().await.expect("body"), first_body, "byte for byte");
    let (status, body) = problem(post_keyed(&app, &key, "veggie-box").await).await;
    assert_eq!((status, body["type"].as_str()), (422, Some("/problems/idempotency-key-reused")), "another order");
    assert_eq!(sim.stats().products.total, 2, "neither went to an upstream");
    let (status, _) = problem(post_keyed(&app, &Uuid::now_v7().to_string(), "classic-box").await).await;
    assert_eq!(status, 503, "an unknown key is a new order: shed");
    hanging.abort();
}

#[tokio::test]
async fn the_concurrency_limit_is_a_gauge_starting_at_its_ceiling() {
    let app = TestApp::builder(Backend::Sqlite).env("HTTP_MAX_IN_FLIGHT", "37").spawn().await;
    assert_eq!(sample(&app.metrics().await, "http_server_concurrency_limit", &[]), 37.0);
}

/// A shed order is refused before the request-id, span and log layers: with tracing on it still
/// opens no server span (no `traceresponse`, nothing exported), while a request after it does.
#[tokio::test]
async fn a_shed_order_opens_no_server_span_with_tracing_on() {
    const SHED_TRACE: &str = "5bf92f3577b34da6a3ce929d0e0e4736";
    const LATER_TRACE: &str = "6bf92f3577b34da6a3ce929d0e0e4736";
    let collector = Collector::start().await;
    let service = TestBinary::new(Backend::Postgres)
        .await
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.as_str())
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .env("HTTP_MAX_IN_FLIGHT", "1")
        .env("HTTP_SHED_DELAY_MS", "0")
        .env("ORDER_DEADLINE_MS", "30000")
        .env("IDEMPOTENCY_LEASE_MS", "60000")
        .env("PRODUCT_ATTEMPT_TIMEOUT_MS", "30000")
        .env("PRODUCT_MAX_ATTEMPTS", "1");
    let _running = service.start().await;
    let order = |trace: &'static str| {
        service
            .http
            .post(service.url("/v1/orders"))
            .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
            .json(&json!({ "user_id": ADA, "product_code": "classic-box" }))
    };
    // A family-box order hangs in the product lookup (the fault table) and holds the one permit;
    // sent again if a probe had the permit when it came (it was refused, then).
    let hang = || {
        let family = json!({ "user_id": ADA, "product_code": "family-box" });
        tokio::spawn(order("7bf92f3577b34da6a3ce929d0e0e4736").json(&family).send())
    };
    let mut hanging = hang();
    let probe = "8bf92f3577b34da6a3ce929d0e0e4736";
    let held = eventually(
        Duration::from_secs(20),
        async || {
            if hanging.is_finished() {
                hanging = hang();
            }
            order(probe).send().await.expect("probe").status()
        },
        |status| *status == 503,
    )
    .await;
    assert_eq!(held, 503, "the hanging order holds the write permit");

    let shed = order(SHED_TRACE).send().await.expect("order");
    assert_eq!(shed.status(), 503);
    assert!(shed.headers().get("traceresponse").is_none(), "no server span: {:?}", shed.headers());
    let later = service
        .http
        .get(service.url("/health/live"))
        .header("traceparent", format!("00-{LATER_TRACE}-00f067aa0ba902b7-01"))
        .send()
        .await
        .expect("live");
    assert!(later.headers().get("traceresponse").is_some(), "a request that is not shed has its span");
    // Spans are exported in the order they end: once the later one is in, a span of the shed
    // order would be too.
    eventually(Duration::from_secs(20), async || collector.trace(LATER_TRACE).len(), |n| *n >= 1).await;
    assert!(collector.trace(SHED_TRACE).is_empty(), "{:#?}", collector.trace(SHED_TRACE));
    hanging.abort();
}
