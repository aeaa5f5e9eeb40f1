//! The fault table of docs/contracts.md against the simulator, one order at a time.

use serde_json::Value;

use crate::kit::{ADA, Backend, TestApp, problem};

const ALAN: &str = "e6f24d7d1c7e";

/// A 1.5 s deadline cuts the 60 s family-box sooner than the default 2 s, and still leaves
/// room for three 200 ms veggie-box attempts with their backoff.
async fn app() -> TestApp {
    TestApp::builder(Backend::Sqlite).env("ORDER_DEADLINE_MS", "1500").spawn().await
}

#[tokio::test]
async fn ada_and_the_classic_box_make_an_order() {
    let app = app().await;
    let response = app.post_order(ADA, "classic-box").await;
    assert_eq!(response.status(), 201);
    let order: Value = response.json().await.expect("json");
    assert_eq!(order["customer_fullname"], "Ada Lovelace");
    assert_eq!(order["product_name"], "Classic Box");
    assert_eq!(order["total_amount"], serde_json::json!(9.99));
}

#[tokio::test]
async fn the_family_box_runs_out_the_deadline_with_504() {
    let app = app().await;
    let (status, body) = problem(app.post_order(ADA, "family-box").await).await;
    assert_eq!(status, 504);
    assert_eq!(body["type"], "/problems/deadline-exceeded");
    assert_eq!(app.db.count("orders").await, 0);
}

#[tokio::test]
async fn the_veggie_box_failing_upstream_is_502_after_three_attempts() {
    let app = app().await;
    let (status, body) = problem(app.post_order(ADA, "veggie-box").await).await;
    assert_eq!(status, 502);
    assert_eq!(body["type"], "/problems/upstream-error");
    assert!(body["detail"].as_str().unwrap_or_default().starts_with("product"), "{body}");
    assert_eq!(app.upstreams.sim().sim.stats().products.by_key["veggie-box"], 3, "the allowed attempts, no more");
}

#[tokio::test]
async fn the_retry_absorbs_alans_alternating_500() {
    let app = app().await;
    for _ in 0..3 {
        let response = app.post_order(ALAN, "classic-box").await;
        assert_eq!(response.status(), 201);
        let order: Value = response.json().await.expect("json");
        assert_eq!(order["customer_fullname"], "Alan Turing");
    }
    // Calls alternate 500, 200, 500, 200…: each order needed exactly two user calls.
    assert_eq!(app.upstreams.sim().sim.stats().users.by_key[ALAN], 6);
}

#[tokio::test]
async fn unknown_ids_are_422_and_name_which() {
    let app = app().await;
    let (status, body) = problem(app.post_order("000000000000", "classic-box").await).await;
    assert_eq!((status, body["type"].as_str()), (422, Some("/problems/unknown-user")));
    let (status, body) = problem(app.post_order(ADA, "no-such-box").await).await;
    assert_eq!((status, body["type"].as_str()), (422, Some("/problems/unknown-product")));
    let stats = app.upstreams.sim().sim.stats();
    assert_eq!(stats.users.by_key.get("000000000000"), Some(&1), "a 404 is asked once");
    assert_eq!(stats.products.by_key.get("no-such-box"), Some(&1));
}

#[tokio::test]
async fn user_and_product_are_fetched_at_the_same_time() {
    let app = app().await;
    assert_eq!(app.post_order(ADA, "classic-box").await.status(), 201);
    let stats = app.upstreams.sim().sim.stats();
    assert_eq!((stats.users.total, stats.products.total), (1, 1));
    // 300 ms and 200 ms lookups: sequential calls would never both be in flight.
    assert_eq!(stats.max_in_flight, 2, "both lookups overlapped");
}
