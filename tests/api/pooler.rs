//! Through PgBouncer (Debian's 1.18) in transaction pooling mode, with fewer server connections
//! than the service's pool, so consecutive transactions of one pooled connection land on
//! different server connections: orders, keyed orders, reads, readiness and the relay, all at once.
//! `DATABASE_STATEMENT_CACHE_CAPACITY=0` is what makes it work (with the default cache the
//! named statements of one client collide with another's on a shared server connection);
//! migrations and the relay's `LISTEN` go straight to PostgreSQL (`DATABASE_SESSION_URL`).

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::kit::{ADA, BROKER, Backend, PgBouncer, TestApp, TestConsumer, Upstreams, eventually, message_id};

const CLIENTS: usize = 6;
const ORDERS_EACH: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_keys_reads_and_the_relay_work_through_pgbouncer_in_transaction_mode() {
    let bouncer = PgBouncer::transaction_mode(2).await;
    let mut consumer = TestConsumer::bind().await;
    let app = TestApp::builder(Backend::Postgres)
        .upstreams(Upstreams::healthy().await)
        .database_port(bouncer.port)
        .session_direct()
        .env("DATABASE_STATEMENT_CACHE_CAPACITY", "0")
        .env("DATABASE_MAX_CONNECTIONS", "8")
        .env("AMQP_URL", BROKER)
        .env("OUTBOX_BATCH_SIZE", "4")
        .spawn()
        .await;

    let clients = (0..CLIENTS).map(|_| {
        let (http, base) = (app.http.clone(), app.url(""));
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..ORDERS_EACH {
                let body = json!({"user_id": ADA, "product_code": "classic-box"});
                let key = Uuid::now_v7().to_string();
                let send = || {
                    let request = http.post(format!("{base}/v1/orders")).json(&body);
                    if i % 2 == 0 { request.header("Idempotency-Key", &key) } else { request }
                };
                let created = send().send().await.expect("request");
                assert_eq!(created.status(), 201);
                let created: Value = created.json().await.expect("json");
                let id = created["id"].as_str().expect("id").to_owned();
                if i % 2 == 0 {
                    let replay = send().send().await.expect("request");
                    assert_eq!(replay.headers()["idempotent-replayed"], "true");
                    assert_eq!(replay.json::<Value>().await.expect("json")["id"], created["id"], "one order per key");
                }
                let read = http.get(format!("{base}/v1/orders/{id}")).send().await.expect("request");
                assert_eq!(read.status(), 200);
                assert_eq!(read.json::<Value>().await.expect("json")["id"], created["id"]);
                let list = http.get(format!("{base}/v1/orders?user_id={ADA}&limit=5")).send().await.expect("request");
                assert_eq!(list.status(), 200);
                // Readiness pings the database between other clients' statements: HAProxy takes a
                // replica out of rotation on one 503, so a ping must survive the pooler too.
                let ready = http.get(format!("{base}/health/ready")).send().await.expect("request");
                assert_eq!(ready.status(), 200, "ready through the pooler: {}", ready.text().await.unwrap_or_default());
                ids.push(id);
            }
            ids
        })
    });
    let mut ids = Vec::new();
    for client in clients.collect::<Vec<_>>() {
        ids.extend(client.await.expect("client"));
    }
    let total = CLIENTS * ORDERS_EACH;
    assert_eq!(ids.len(), total);
    assert_eq!(app.db.count("orders").await, total as i64, "one order per request or key");

    let mut got = consumer.take(&ids, total, Duration::from_secs(30)).await;
    got.extend(consumer.take(&ids, 1, Duration::from_millis(500)).await);
    let distinct: HashSet<String> = got.iter().map(message_id).collect();
    assert_eq!((got.len(), distinct.len()), (total, total), "every event once");
    let drained = eventually(Duration::from_secs(10), || app.db.count("outbox"), |&left| left == 0).await;
    assert_eq!(drained, 0, "every published row deleted");
}
