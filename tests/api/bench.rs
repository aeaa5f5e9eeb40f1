//! Relay throughput and publish lag against the local broker, next to a plain confirmed-publish
//! loop in the same run. Figures, not assertions: run on demand with
//! `cargo nextest run --run-ignored only --no-capture -E 'test(bench_)'`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use order_service::domain::OrderStore;
use order_service::relay::{NotifyingStore, RelaySettings};
use tokio::sync::Notify;

use crate::kit::{BROKER, Backend, TestConsumer, TestDb, broker_relay, sample_order};

const EVENTS: usize = 3000;
const BATCH: usize = 100;

/// Events/s of a bare loop: one channel, confirms on, batches of `BATCH` sent then confirmed.
async fn raw_rate() -> f64 {
    let connection = Connection::connect(BROKER, ConnectionProperties::default()).await.expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let body = vec![b'x'; 300];
    let started = Instant::now();
    for _ in 0..EVENTS / BATCH {
        let mut confirms = Vec::with_capacity(BATCH);
        for _ in 0..BATCH {
            let properties = BasicProperties::default().with_delivery_mode(2);
            let confirm = channel
                .basic_publish("orders".into(), "bench".into(), BasicPublishOptions::default(), &body, properties)
                .await
                .expect("publish");
            confirms.push(confirm);
        }
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
    let raw = raw_rate().await;

    // Throughput: a backlog of EVENTS rows drained by relay passes.
    let db = TestDb::new(Backend::Postgres).await;
    let stores = db.stores(8).await;
    for _ in 0..EVENTS {
        stores.orders.insert_order(&sample_order(), None).await.expect("insert");
    }
    let settings = RelaySettings { batch_size: BATCH as u32, ..RelaySettings::default() };
    let mut relay = broker_relay(stores.outbox, settings);
    relay.relay_once().await.expect("warm-up pass");
    let started = Instant::now();
    let mut published = BATCH;
    while published < EVENTS {
        published += relay.relay_once().await.expect("pass").published;
    }
    let relay_rate = (EVENTS - BATCH) as f64 / started.elapsed().as_secs_f64();

    // Lag: a steady 500 orders/s through the notifying store and the relay loop.
    let db = TestDb::new(Backend::Postgres).await;
    let stores = db.stores(8).await;
    let inner = stores.orders;
    let wake = Arc::new(Notify::new());
    let relay = broker_relay(Arc::clone(&stores.outbox), settings);
    let local = Some((Arc::clone(&wake), relay.status()));
    let orders: Arc<dyn OrderStore> = Arc::new(NotifyingStore::new(Arc::clone(&inner), stores.outbox, local));
    let handle = relay.spawn(wake);
    let mut consumer = TestConsumer::bind().await;
    let (rate, seconds) = (500u64, 4u64);
    // Received concurrently, stamped on arrival: commit → confirm ≈ commit → delivery.
    let receiver = tokio::spawn(async move {
        let mut received = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds + 10);
        while received.len() < (rate * seconds) as usize {
            let Ok(Some(delivery)) = tokio::time::timeout_at(deadline, consumer.next_delivery()).await else {
                break;
            };
            let body: serde_json::Value = serde_json::from_slice(&delivery.data).expect("json");
            let order = &body["payload"]["order"];
            let created = order["created_at"].as_str().unwrap_or_default();
            let Ok(created) = chrono::DateTime::parse_from_rfc3339(created) else { continue };
            let lag = (chrono::Utc::now() - created.to_utc()).as_seconds_f64() * 1000.0;
            received.push((order["order_id"].as_str().unwrap_or_default().to_owned(), lag));
        }
        received
    });
    let mut ids = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let (commits, mut committed) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..rate * seconds {
        tick.tick().await;
        let order = sample_order();
        ids.push(order.id.to_string());
        let (orders, commits) = (Arc::clone(&orders), commits.clone());
        tokio::spawn(async move {
            orders.insert_order(&order, None).await.expect("insert");
            let _ = commits.send((chrono::Utc::now() - order.created_at).as_seconds_f64() * 1000.0);
        });
    }
    drop(commits);
    let received = receiver.await.expect("receiver");
    let mut lags: Vec<f64> = received.iter().filter(|(id, _)| ids.contains(id)).map(|(_, lag)| *lag).collect();
    handle.stop().await;
    let mut commit_lags = Vec::new();
    while let Some(lag) = committed.recv().await {
        commit_lags.push(lag);
    }
    commit_lags.sort_by(f64::total_cmp);
    println!(
        "order creation → commit at {rate}/s: p50 {:.1} ms, p99 {:.1} ms (part of the lag below)",
        percentile(&commit_lags, 0.5),
        percentile(&commit_lags, 0.99)
    );
    lags.sort_by(f64::total_cmp);
    assert!(!lags.is_empty(), "no events received");
    println!(
        "raw confirmed publish: {raw:.0} events/s; relay: {relay_rate:.0} events/s; ratio {:.2}",
        relay_rate / raw
    );
    println!(
        "lag at {rate} orders/s over {seconds} s ({} of {} received): p50 {:.1} ms, p99 {:.1} ms (ms-precision created_at)",
        lags.len(),
        ids.len(),
        percentile(&lags, 0.5),
        percentile(&lags, 0.99)
    );
}
