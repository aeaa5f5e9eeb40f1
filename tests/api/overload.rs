//! Overload (issue 16): what stays cheap and served while the write limit is full — a replay of
//! a completed Idempotency-Key, answered from memory — and the limit's gauge.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use crate::kit::{ADA, Backend, TestApp, eventually, problem, sample};

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
