//! Several replicas (several apps on one PostgreSQL database): an Idempotency-Key holds across
//! them, and an order committed by a replica whose relay is off, or cannot reach the broker, is
//! published by another replica's relay at once — the relays here poll only every 60 s, so only
//! the announcement (`NOTIFY`, `LISTEN` on the session URL) can make it prompt, also after the
//! listener lost its connection.

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::kit::{
    ADA, BROKER, Backend, CutProxy, TestApp, TestConsumer, TestDb, Upstreams, amqp_url, eventually, free_port,
    message_id, order_ids,
};

/// A poll this slow never publishes within a test's bounds: only a wake-up can.
const NO_POLL: (&str, &str) = ("OUTBOX_POLL_INTERVAL_MS", "60000");

#[tokio::test]
async fn the_same_key_sent_to_two_replicas_at_once_places_one_order_and_publishes_one_event() {
    let mut consumer = TestConsumer::bind().await;
    let slow = Duration::from_millis(300);
    let a = TestApp::builder(Backend::Postgres)
        .upstreams(Upstreams::answering_after(slow).await)
        .env("AMQP_URL", BROKER)
        .spawn()
        .await;
    let b = TestApp::builder(Backend::Postgres)
        .same_database_as(&a.db)
        .upstreams(Upstreams::answering_after(slow).await)
        .env("AMQP_URL", BROKER)
        .spawn()
        .await;
    let key = Uuid::now_v7().to_string();
    let body = json!({"user_id": ADA, "product_code": "classic-box"});
    let requests: Vec<_> = [&a, &b, &a, &b]
        .iter()
        .map(|app| {
            let request = app.http.post(app.url("/v1/orders")).header("Idempotency-Key", &key).json(&body);
            tokio::spawn(async move {
                let response = request.send().await.expect("request");
                (response.status().as_u16(), response.json::<Value>().await.expect("json"))
            })
        })
        .collect();
    let mut created = Vec::new();
    for request in requests {
        match request.await.expect("client") {
            (201, order) => created.push(order["id"].as_str().expect("id").to_owned()),
            (409, problem) => assert_eq!(problem["type"], "/problems/idempotency-key-in-flight"),
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(!created.is_empty() && created.iter().all(|id| *id == created[0]), "one order: {created:?}");
    assert_eq!(a.db.count("orders").await, 1);
    let events = consumer.take(&created[..1], 2, Duration::from_secs(5)).await;
    assert_eq!(events.iter().map(message_id).collect::<Vec<_>>(), [created[0].clone()], "exactly one event");
}

#[tokio::test]
async fn orders_on_replicas_whose_relay_is_off_or_cut_off_are_published_by_another_replicas_relay() {
    let mut consumer = TestConsumer::bind().await;
    let off = TestApp::with_healthy_upstreams(Backend::Postgres, &[]).await;
    let dead_broker = amqp_url(free_port());
    let cut_off = TestApp::builder(Backend::Postgres)
        .same_database_as(&off.db)
        .upstreams(Upstreams::healthy().await)
        .env("AMQP_URL", &dead_broker)
        .env(NO_POLL.0, NO_POLL.1)
        .spawn()
        .await;
    let relaying = TestApp::builder(Backend::Postgres)
        .same_database_as(&off.db)
        .upstreams(Upstreams::healthy().await)
        .env("AMQP_URL", BROKER)
        .env(NO_POLL.0, NO_POLL.1)
        .spawn()
        .await;

    listening(&off.db, 2).await;
    let mut ids = order_ids(&off.place_orders(3).await);
    ids.extend(order_ids(&cut_off.place_orders(3).await));
    let got = consumer.take(&ids, ids.len(), Duration::from_secs(15)).await;
    let mut published: Vec<String> = got.iter().map(message_id).collect();
    published.sort();
    ids.sort();
    assert_eq!(published, ids, "every event, each once, long before the next poll");
    assert_eq!(relaying.ready().await["broker"]["status"], "up");
}

#[tokio::test]
async fn a_listener_that_lost_the_database_listens_again() {
    let mut consumer = TestConsumer::bind().await;
    let placing = TestApp::with_healthy_upstreams(Backend::Postgres, &[]).await;
    let proxy = CutProxy::start("127.0.0.1:5432").await;
    let session = placing.db.url.replace("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port));
    let _relaying = TestApp::builder(Backend::Postgres)
        .same_database_as(&placing.db)
        .upstreams(Upstreams::healthy().await)
        .env("AMQP_URL", BROKER)
        .env("DATABASE_SESSION_URL", &session)
        .env(NO_POLL.0, NO_POLL.1)
        .spawn()
        .await;
    listening(&placing.db, 1).await;
    let first = order_ids(&placing.place_orders(1).await);
    assert_eq!(consumer.take(&first, 1, Duration::from_secs(15)).await.len(), 1, "announced and published");

    proxy.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
    // Once it listens again, an order placed on the other replica is published at once.
    let promptly = async || {
        let ids = order_ids(&placing.place_orders(1).await);
        consumer.take(&ids, 1, Duration::from_secs(1)).await.len()
    };
    assert_eq!(eventually(Duration::from_secs(20), promptly, |&got| got == 1).await, 1, "listening again");
}

/// Waits until `relays` relays listen on `db` (a relay also publishes once when it starts to
/// listen: an order placed before that would prove nothing).
async fn listening(db: &TestDb, relays: i64) {
    let sql = "pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'";
    let listeners = eventually(Duration::from_secs(10), || db.count(sql), |&n| n >= relays).await;
    assert_eq!(listeners, relays, "relays listening");
}
