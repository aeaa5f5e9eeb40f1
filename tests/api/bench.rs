//! Relay throughput and publish lag against the local broker, next to a plain confirmed-publish
//! loop in the same run: lag on one replica at 500 orders/s, and at 200 orders/s when the orders
//! are committed by a replica whose relay is off and another replica's relay publishes them.
//! Figures, not assertions: run on demand with
//! `cargo nextest run --run-ignored only --no-capture -E 'test(bench_)'`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use order_service::domain::OrderStore;
use order_service::relay::publisher::EXCHANGE;
use order_service::relay::{NotifyingStore, RelaySettings};
use order_service::storage;
use tokio::sync::Notify;

use crate::kit::{BROKER, Backend, TestConsumer, TestDb, broker_relay, declare_orders_exchange, sample_order};

const EVENTS: usize = 3000;
const BATCH: usize = 100;
const ROUNDS: usize = 5;

/// Events/s of a bare loop: one channel, confirms on, batches of `BATCH` sent then confirmed.
/// Each publish is awaited before the next (the usual loop, the goal's baseline); `at_once`
/// starts a batch's publishes together as the relay does, for an informative second figure.
async fn raw_rate(at_once: bool) -> f64 {
    let connection = Connection::connect(BROKER, ConnectionProperties::default()).await.expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    declare_orders_exchange(&channel).await;
    let body = vec![b'x'; 300];
    let publish = || {
        let properties = BasicProperties::default().with_delivery_mode(2);
        channel.basic_publish(EXCHANGE.into(), "bench".into(), BasicPublishOptions::default(), &body, properties)
    };
    let started = Instant::now();
    for _ in 0..EVENTS / BATCH {
        let confirms = if at_once {
            join_all((0..BATCH).map(|_| publish())).await.into_iter().map(|sent| sent.expect("publish")).collect()
        } else {
            let mut confirms = Vec::with_capacity(BATCH);
            for _ in 0..BATCH {
                confirms.push(publish().await.expect("publish"));
            }
            confirms
        };
        for confirm in confirms {
            assert!(confirm.await.expect("confirm").is_ack());
        }
    }
    EVENTS as f64 / started.elapsed().as_secs_f64()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: figures for the closing note"]
async fn bench_relay_throughput_and_lag() {
    order_service::telemetry::init_logging();
    // Alternating rounds, so the shared machine's swings hit both alike; the median ratio counts.
    let (mut ratios, mut at_once_ratios) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let raw = raw_rate(false).await;
        let relay = relay_rate().await;
        let at_once = raw_rate(true).await;
        println!(
            "round {round}: raw confirmed publish {raw:.0} events/s; relay {relay:.0} events/s; ratio {:.2} \
             (raw publishing each batch at once: {at_once:.0} events/s, ratio {:.2})",
            relay / raw,
            relay / at_once
        );
        ratios.push(relay / raw);
        at_once_ratios.push(relay / at_once);
    }
    ratios.sort_by(f64::total_cmp);
    at_once_ratios.sort_by(f64::total_cmp);
    println!("relay / raw confirmed publish, median of {ROUNDS} rounds: {:.2}", ratios[ROUNDS / 2]);
    println!(
        "relay / raw publishing each batch at once (informative), median of {ROUNDS} rounds: {:.2}",
        at_once_ratios[ROUNDS / 2]
    );
    let settings = RelaySettings { batch_size: BATCH as u32, ..RelaySettings::default() };

    // One replica: the order's own relay, woken in-process.
    let db = TestDb::new(Backend::Postgres).await;
    let stores = db.stores(8).await;
    let relay = broker_relay(Arc::clone(&stores.outbox), settings);
    let wake = Arc::new(Notify::new());
    let local = Some((Arc::clone(&wake), relay.status()));
    let orders: Arc<dyn OrderStore> = Arc::new(NotifyingStore::new(stores.orders, stores.outbox, local));
    let handle = relay.spawn(wake);
    lag("one replica", orders, 500, 4).await;
    println!("orders {}, outbox rows left {}", db.count("orders").await, db.count("outbox").await);
    handle.stop().await;

    // Two replicas: orders committed by one whose relay is off (it announces), published by the
    // other's relay (its own pool, listening on the database).
    let db = TestDb::new(Backend::Postgres).await;
    let committing = db.stores(8).await;
    let orders: Arc<dyn OrderStore> = Arc::new(NotifyingStore::new(committing.orders, committing.outbox, None));
    let relaying = db.stores(8).await;
    let wake = Arc::new(Notify::new());
    let listener = tokio::spawn(storage::listen_forever(db.config(1), Arc::clone(&wake)));
    let handle = broker_relay(relaying.outbox, settings).spawn(wake);
    let listening = "pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'";
    crate::kit::eventually(Duration::from_secs(10), || db.count(listening), |&n| n == 1).await;
    lag("another replica's relay (this one's off)", orders, 200, 4).await;
    println!("orders {}, outbox rows left {}", db.count("orders").await, db.count("outbox").await);
    handle.stop().await;
    listener.abort();
}

/// Events/s of relay passes draining a backlog of `EVENTS` rows (made in one statement, shaped
/// as `insert_order` writes them, then analyzed), after a warm-up batch.
async fn relay_rate() -> f64 {
    let db = TestDb::new(Backend::Postgres).await;
    let stores = db.stores(8).await;
    let settings = RelaySettings { batch_size: BATCH as u32, ..RelaySettings::default() };
    let mut relay = broker_relay(Arc::clone(&stores.outbox), settings);
    db.execute(&backlog(BATCH)).await;
    relay.relay_once().await.expect("warm-up pass");
    db.execute(&backlog(EVENTS)).await;
    // A backlog builds up during a broker outage, and autovacuum analyzes the table meanwhile
    // (it changed by far more than its threshold). Unanalyzed, the planner takes the fresh table
    // for a few rows and sorts the whole backlog at every claim: 4 ms instead of 0.2 ms per claim.
    db.execute("ANALYZE outbox").await;
    let started = Instant::now();
    let mut published = 0;
    while published < EVENTS {
        published += relay.relay_once().await.expect("pass").published;
    }
    EVENTS as f64 / started.elapsed().as_secs_f64()
}

/// `n` orders with their outbox rows, as `insert_order` writes them (bench/order_tx.sql's shape).
fn backlog(n: usize) -> String {
    format!(
        "WITH o AS (INSERT INTO orders (id, user_id, product_code, customer_fullname, product_name, \
           total_amount_cents, created_at) \
           SELECT gen_random_uuid(), '7c11e1ce2741', 'classic-box', 'Ada Lovelace', 'Classic Box', 999, now() \
           FROM generate_series(1, {n}) RETURNING id, created_at) \
         INSERT INTO outbox (order_id, event_type, payload, created_at, next_attempt_at) \
         SELECT id, 'order.created', jsonb_build_object('order', jsonb_build_object('order_id', id, \
           'customer_fullname', 'Ada Lovelace', 'product_name', 'Classic Box', 'total_amount', 9.99, \
           'created_at', created_at)), created_at, created_at FROM o"
    )
}

/// Places `rate` orders/s for `seconds` through `orders` and prints order creation → commit and
/// order creation → delivery to a consumer (≈ commit → confirm, plus the commit itself).
async fn lag(what: &str, orders: Arc<dyn OrderStore>, rate: u64, seconds: u64) {
    let mut consumer = TestConsumer::bind().await;
    // The ids are drawn up front so the receiver counts only this run's events: the broker is
    // shared, and other tests' events on `orders` must neither stop it early nor be counted.
    let planned: Vec<uuid::Uuid> = (0..rate * seconds).map(|_| sample_order().id).collect();
    let ids: Arc<std::collections::HashSet<String>> = Arc::new(planned.iter().map(ToString::to_string).collect());
    // Received concurrently, stamped on arrival.
    let expected = Arc::clone(&ids);
    let receiver = tokio::spawn(async move {
        let mut received = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds + 10);
        while received.len() < expected.len() {
            let Ok(Some(delivery)) = tokio::time::timeout_at(deadline, consumer.next_delivery()).await else {
                break;
            };
            let body: serde_json::Value = serde_json::from_slice(&delivery.data).expect("json");
            let order = &body["payload"]["order"];
            let id = order["order_id"].as_str().unwrap_or_default();
            let created = order["created_at"].as_str().unwrap_or_default();
            let Ok(created) = chrono::DateTime::parse_from_rfc3339(created) else { continue };
            if expected.contains(id) {
                received.push((chrono::Utc::now() - created.to_utc()).as_seconds_f64() * 1000.0);
            }
        }
        received
    });
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let (commits, mut committed) = tokio::sync::mpsc::unbounded_channel();
    for id in planned {
        tick.tick().await;
        let mut order = sample_order(); // created now: the lag starts here
        order.id = id;
        let (orders, commits) = (Arc::clone(&orders), commits.clone());
        tokio::spawn(async move {
            orders.insert_order(&order, None).await.expect("insert");
            let _ = commits.send((chrono::Utc::now() - order.created_at).as_seconds_f64() * 1000.0);
        });
    }
    drop(commits);
    let mut lags = receiver.await.expect("receiver");
    let mut commit_lags = Vec::new();
    while let Some(lag) = committed.recv().await {
        commit_lags.push(lag);
    }
    commit_lags.sort_by(f64::total_cmp);
    lags.sort_by(f64::total_cmp);
    assert!(!lags.is_empty(), "no events received");
    println!(
        "{what}: lag at {rate} orders/s over {seconds} s ({} of {} received): p50 {:.1} ms, p99 {:.1} ms \
         (creation → commit p50 {:.1} ms, p99 {:.1} ms; ms-precision created_at)",
        lags.len(),
        ids.len(),
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        percentile(&commit_lags, 0.5),
        percentile(&commit_lags, 0.99)
    );
}
