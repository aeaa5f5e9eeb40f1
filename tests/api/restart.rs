//! PostgreSQL and RabbitMQ "restarted" under load: every live connection is dropped and new
//! ones are refused for a while, then the server is back — through the test kit's cut-able
//! proxy, so the shared servers other tests use keep running. Nothing acknowledged may be
//! lost, nothing may be doubled, and the service must recover without a restart of its own.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use uuid::Uuid;

use crate::kit::{BROKER, Backend, CutProxy, TestApp, TestConsumer, Upstreams, amqp_url, eventually, message_id};

const CLIENTS: usize = 6;
/// Each client places orders for this long; the outage falls in the middle.
const LOAD: Duration = Duration::from_secs(4);

/// What the load saw.
#[derive(Default)]
struct Tally {
    /// Logical orders started (each with its own Idempotency-Key).
    orders: usize,
    /// HTTP requests sent, retries included.
    requests: usize,
    /// Order ids acknowledged with a 201.
    acked: Vec<String>,
    /// Responses that were neither 201 nor a retryable 503/409.
    unexpected: Vec<u16>,
    /// The problem type of each retried response (a 503 or 409).
    retried: Vec<String>,
    /// 201s answered while the server was cut off.
    acked_during_outage: usize,
}

/// `CLIENTS` clients place orders for `LOAD`, each order with its own key, retrying a 503 or
/// 409 with the same key (as a well-behaved client does) until it gets a 201.
async fn load(app: &TestApp, cut: &Arc<AtomicBool>) -> Tally {
    let clients = (0..CLIENTS).map(|_| {
        let (http, url, cut) = (app.http.clone(), app.url("/v1/orders"), Arc::clone(cut));
        tokio::spawn(async move {
            let mut tally = Tally::default();
            let started = Instant::now();
            while started.elapsed() < LOAD {
                tally.orders += 1;
                let key = Uuid::now_v7().to_string();
                let body = json!({"user_id": "7c11e1ce2741", "product_code": "classic-box"});
                for _attempt in 0..100 {
                    tally.requests += 1;
                    let sent_during_outage = cut.load(Ordering::SeqCst);
                    let response = http.post(&url).header("Idempotency-Key", &key).json(&body).send().await;
                    let response = response.expect("the service itself stays up");
                    match response.status().as_u16() {
                        201 => {
                            let order: serde_json::Value = response.json().await.expect("json");
                            tally.acked.push(order["id"].as_str().expect("id").to_owned());
                            // Sent and answered while cut: placed entirely during the outage.
                            tally.acked_during_outage += usize::from(sent_during_outage && cut.load(Ordering::SeqCst));
                            break;
                        }
                        503 | 409 => {
                            let problem: serde_json::Value = response.json().await.expect("problem");
                            tally.retried.push(problem["type"].as_str().unwrap_or_default().to_owned());
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        other => {
                            tally.unexpected.push(other);
                            break;
                        }
                    }
                }
            }
            tally
        })
    });
    let mut total = Tally::default();
    for client in clients.collect::<Vec<_>>() {
        let tally = client.await.expect("client");
        total.orders += tally.orders;
        total.requests += tally.requests;
        total.acked.extend(tally.acked);
        total.unexpected.extend(tally.unexpected);
        total.retried.extend(tally.retried);
        total.acked_during_outage += tally.acked_during_outage;
    }
    total
}

/// Cuts the proxy after 1 s for 1.5 s, while the load runs.
async fn outage_during(proxy: &CutProxy, app: &TestApp) -> Tally {
    let cut = Arc::new(AtomicBool::new(false));
    let outage = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        proxy.cut();
        cut.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cut.store(false, Ordering::SeqCst);
        proxy.restore();
    };
    let (tally, ()) = tokio::join!(load(app, &cut), outage);
    tally
}

/// Every acknowledged order is stored once and its event delivered once; returns the figures.
async fn check_nothing_lost(app: &TestApp, consumer: &mut TestConsumer, tally: &Tally, fault: &str) {
    assert!(tally.unexpected.is_empty(), "{fault}: unexpected statuses {:?}", tally.unexpected);
    assert_eq!(tally.acked.len(), tally.orders, "{fault}: every order got its 201 in the end");
    let distinct: HashSet<&String> = tally.acked.iter().collect();
    assert_eq!(distinct.len(), tally.acked.len(), "{fault}: one order id per key");
    let stored = app.db.count("orders").await as usize;
    assert_eq!(stored, tally.orders, "{fault}: exactly one stored order per logical order");

    // Delivery is at-least-once: count distinct ids until each acknowledged order has one.
    let (mut delivered, mut deliveries) = (HashSet::new(), 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered.len() < tally.acked.len() && Instant::now() < deadline {
        let missing = tally.acked.len() - delivered.len();
        let batch = consumer.take(&tally.acked, missing, deadline - Instant::now()).await;
        if batch.is_empty() {
            break;
        }
        deliveries += batch.len();
        delivered.extend(batch.iter().map(message_id));
    }
    assert_eq!(delivered.len(), tally.acked.len(), "{fault}: every acknowledged order's event was published");
    // A batch the broker confirmed while the database was away is marked (after publishing it
    // again: at-least-once) once its claim lease runs out.
    let unpublished = || app.db.scalar_i64("SELECT count(*) FROM outbox WHERE published_at IS NULL");
    let pending = eventually(Duration::from_secs(20), unpublished, |&n| n == 0).await;
    assert_eq!(pending, 0, "{fault}: the outbox drained");
    println!(
        "{fault}: orders {}, requests sent {} (with retries), 201s {}, orders in the database {stored}, \
         events delivered {} ({} distinct; at-least-once), duplicate orders {}",
        tally.orders,
        tally.requests,
        tally.acked.len(),
        deliveries,
        delivered.len(),
        tally.acked.len() - distinct.len(),
    );
}

async fn app_behind(database_port: Option<u16>, amqp_url: &str) -> TestApp {
    let mut builder = TestApp::builder(Backend::Postgres)
        .upstreams(Upstreams::healthy().await)
        .env("AMQP_URL", amqp_url)
        .env("DATABASE_ACQUIRE_TIMEOUT_MS", "300")
        .env("OUTBOX_POLL_INTERVAL_MS", "100")
        .env("OUTBOX_RECONNECT_MAX_MS", "300");
    if let Some(port) = database_port {
        builder = builder.database_port(port);
    }
    builder.spawn().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_under_load_loses_and_doubles_nothing() {
    let proxy = CutProxy::start("127.0.0.1:5432").await;
    let mut consumer = TestConsumer::bind().await;
    let app = app_behind(Some(proxy.port), BROKER).await;
    let tally = outage_during(&proxy, &app).await;
    assert!(tally.requests > tally.orders, "the outage made clients retry (else it missed the load)");
    check_nothing_lost(&app, &mut consumer, &tally, "PostgreSQL restart").await;
    assert_eq!(app.get("/health/ready").await.status(), 200, "ready again without a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_under_load_fails_no_order_and_loses_no_event() {
    let proxy = CutProxy::start("127.0.0.1:5672").await;
    let mut consumer = TestConsumer::bind().await;
    let app = app_behind(None, &amqp_url(proxy.port)).await;
    let tally = outage_during(&proxy, &app).await;
    // The broker is off the order path: orders were placed while it was away, and no order
    // failed because of it. A busy machine may still make one wait too long for a pooled
    // database connection (503 database-unavailable, then 409 while that attempt's key is
    // released); clients retry those, and they have nothing to do with the broker.
    assert!(tally.acked_during_outage > 0, "orders got their 201 while the broker was away");
    let unrelated = ["/problems/database-unavailable", "/problems/idempotency-key-in-flight"];
    let broker_caused: Vec<&String> = tally.retried.iter().filter(|t| !unrelated.contains(&t.as_str())).collect();
    assert!(broker_caused.is_empty(), "orders refused while the broker was away: {broker_caused:?}");
    check_nothing_lost(&app, &mut consumer, &tally, "RabbitMQ restart").await;
}
