//! The fault table of DESIGN.md against the simulator: today's behaviour, before retries and
//! breakers (issue 3 changes the alternating user to a 201 through its retry).

use serde_json::Value;

use crate::helpers::{Backend, TestApp, problem};

const ADA: &str = "7c11e1ce2741";
const ALAN: &str = "e6f24d7d1c7e";

/// Short deadline so the 60 s family-box is cut quickly; still above the 300 ms user delay.
async fn app() -> TestApp {
    TestApp::builder(Backend::Sqlite)
        .env("ORDER_DEADLINE_MS", "700")
        .spawn()
        .await
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
async fn a_definitive_failure_of_one_lookup_wins_over_the_other_hanging() {
    let app = app().await;
    // Alan's first lookup is a 500 after 300 ms; the family box would hang for 60 s.
    let (status, body) = problem(app.post_order(ALAN, "family-box").await).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (502, Some("/problems/upstream-error"))
    );
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("user"),
        "{body}"
    );
}

#[tokio::test]
async fn the_veggie_box_failing_upstream_is_502() {
    let app = app().await;
    let (status, body) = problem(app.post_order(ADA, "veggie-box").await).await;
    assert_eq!(status, 502);
    assert_eq!(body["type"], "/problems/upstream-error");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("product"),
        "{body}"
    );
}

#[tokio::test]
async fn alan_alternates_between_500_and_200() {
    let app = app().await;
    let (status, body) = problem(app.post_order(ALAN, "classic-box").await).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (502, Some("/problems/upstream-error"))
    );
    let second = app.post_order(ALAN, "classic-box").await;
    assert_eq!(second.status(), 201);
    let order: Value = second.json().await.expect("json");
    assert_eq!(order["customer_fullname"], "Alan Turing");
}

#[tokio::test]
async fn unknown_ids_are_422_and_name_which() {
    let app = app().await;
    let (status, body) = problem(app.post_order("000000000000", "classic-box").await).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (422, Some("/problems/unknown-user"))
    );
    let (status, body) = problem(app.post_order(ADA, "no-such-box").await).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (422, Some("/problems/unknown-product"))
    );
    let stats = app.upstreams.sim().sim.stats();
    assert_eq!(
        stats.users.by_key.get("000000000000"),
        Some(&1),
        "a 404 is asked once"
    );
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
