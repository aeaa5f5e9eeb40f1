//! PostgreSQL unreachable: orders fail fast with 503, readiness is false, and the service
//! recovers by itself when the database returns.

use std::time::Duration;

use crate::kit::{ADA, Backend, CutProxy, TestApp, Upstreams, eventually, problem};

#[tokio::test]
async fn a_database_outage_is_a_fast_503_and_heals_without_a_restart() {
    let proxy = CutProxy::start("127.0.0.1:5432").await;
    let app = TestApp::builder(Backend::Postgres)
        .database_port(proxy.port)
        .upstreams(Upstreams::healthy().await)
        .env("DATABASE_ACQUIRE_TIMEOUT_MS", "500")
        .spawn()
        .await;
    assert_eq!(app.post_order(ADA, "classic-box").await.status(), 201);

    proxy.cut();
    for _ in 0..3 {
        let response = app.post_order(ADA, "classic-box").await;
        assert!(response.headers().contains_key("retry-after"));
        let (status, body) = problem(response).await;
        assert_eq!((status, body["type"].as_str()), (503, Some("/problems/database-unavailable")), "{body}");
        assert!(!body.to_string().contains("5432"), "no connection details leak: {body}");
    }
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 503);
    let ready: serde_json::Value = ready.json().await.expect("json");
    assert_eq!((ready["status"].as_str(), ready["database"]["status"].as_str()), (Some("not_ready"), Some("down")));

    proxy.restore();
    let placed = async || app.post_order(ADA, "classic-box").await.status() == 201;
    let recovered = eventually(Duration::from_secs(10), placed, |&placed| placed).await;
    assert!(recovered, "orders succeed again once the database is back");
    assert_eq!(app.get("/health/ready").await.status(), 200);
    assert_eq!(app.db.count("orders").await, 2, "nothing half-written during the outage");
    assert_eq!(app.db.count("outbox").await, 2);
}

/// Statements park their connections between uses (`storage::warm`). One parked longer than the
/// 500 ms window is not handed out again: after the database ended every session (a restart, a
/// failover, `pg_terminate_backend`), the next order gets a live connection, not a dead one.
#[tokio::test]
async fn connections_parked_across_a_database_restart_are_not_reused() {
    let app = TestApp::builder(Backend::Postgres).upstreams(Upstreams::healthy().await).spawn().await;
    for _ in 0..3 {
        assert_eq!(app.post_order(ADA, "classic-box").await.status(), 201);
    }
    let ended = app
        .db
        .scalar_i64(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'order-service'",
        )
        .await;
    assert!(ended >= 1, "the service's sessions were ended ({ended})");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let response = app.post_order(ADA, "classic-box").await;
    assert_eq!(response.status(), 201, "the first order after the restart: {:?}", response.text().await);
    assert_eq!(app.db.count("orders").await, 4);
}
