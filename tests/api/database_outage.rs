//! PostgreSQL unreachable, restarted or hung: orders fail fast with 503, readiness is false,
//! and the service recovers by itself when the database returns.

use std::time::Duration;

use order_service::config::DatabaseConfig;
use order_service::domain::StoreError;
use order_service::storage;
use sqlx::{Connection, Executor};

use crate::kit::{ADA, Backend, CutProxy, TestApp, TestDb, Upstreams, eventually, problem, sample_order};

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

/// A database that stops answering holds both insert writers and every statement's turn to a
/// connection. The next order then waits for a writer, and the next other statement for a
/// connection, no longer than the acquire timeout, and fails as unavailable (a 503), as it did
/// when it waited for the pool alone; the hung ones finish once the database answers again.
#[tokio::test]
async fn a_statement_behind_hung_ones_waits_no_longer_than_the_acquire_timeout() {
    let db = TestDb::new(Backend::Postgres).await;
    // 4 connections: 2 go through the parked set, 2 stay with the pool; 2 insert writers.
    let config = DatabaseConfig { acquire_timeout: Duration::from_millis(500), insert_writers: 2, ..db.config(4) };
    let stores = storage::connect(&config).await.expect("store");
    let placed = sample_order();
    stores.orders.insert_order(&placed, None).await.expect("a first order");

    let mut lock = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    lock.execute("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE").await.expect("lock");
    let waiting = "SELECT count(*) FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event_type = 'Lock'";
    let mut hung = Vec::new();
    for n in 1..=2 {
        // One at a time, so that each is a statement of its own and takes a writer.
        let orders = stores.orders.clone();
        hung.push(tokio::spawn(async move { orders.insert_order(&sample_order(), None).await }));
        let blocked = eventually(Duration::from_secs(30), async || db.scalar_i64(waiting).await, |&b| b == n).await;
        assert_eq!(blocked, n, "the statements wait on the lock, holding writers and turns");
    }

    // The lock is held until released below, so a wide margin costs nothing: without the
    // acquire timeout, the third order (and the read) would wait for as long as the lock.
    let within = Duration::from_secs(30);
    let third = tokio::time::timeout(within, stores.orders.insert_order(&sample_order(), None)).await;
    let third = third.expect("the third order gave up within the acquire timeout, while the lock is held");
    assert!(matches!(third, Err(StoreError::Unavailable(_))), "unavailable (503): {third:?}");
    let read = tokio::time::timeout(within, stores.orders.get_order(placed.id)).await;
    let read = read.expect("the read gave up within the acquire timeout, while the lock is held");
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "unavailable (503): {read:?}");

    lock.execute("ROLLBACK").await.expect("unlock");
    for insert in hung {
        insert.await.expect("task").expect("a hung statement completes once the lock is gone");
    }
    assert_eq!(db.count("orders").await, 3);
}
