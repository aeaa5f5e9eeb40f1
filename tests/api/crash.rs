//! kill -9 under load: every order that got a 201 is in the database after a restart, and its
//! event reaches the broker; nothing acknowledged is lost.

use std::time::{Duration, Instant};

use crate::kit::{BROKER, Backend, TestBinary, TestConsumer, message_id};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_loses_no_acknowledged_order_or_event() {
    // A relay killed between claiming a batch and marking it leaves those rows leased until
    // OUTBOX_CLAIM_LEASE_MS (30 s by default) runs out; that expiry is the designed recovery, so
    // a short lease lets the restarted relay republish them within the test's wait.
    let service = TestBinary::new(Backend::Postgres)
        .await
        .env("AMQP_URL", BROKER)
        .env("OUTBOX_CLAIM_LEASE_MS", "2000")
        .env("RUST_LOG", "warn");
    let mut consumer = TestConsumer::bind().await;
    let mut running = service.start().await;

    // Six clients order until the process dies (bounded: 5 s at most).
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (http, url) = (service.http.clone(), service.url("/v1/orders"));
            tokio::spawn(async move {
                let (mut acked, mut sent) = (Vec::new(), 0usize);
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(5) {
                    sent += 1;
                    let body = serde_json::json!({"user_id": "7c11e1ce2741", "product_code": "classic-box"});
                    let Ok(response) = http.post(&url).json(&body).send().await else { break };
                    if response.status() != 201 {
                        break;
                    }
                    let Ok(order) = response.json::<serde_json::Value>().await else { break };
                    acked.push(order["id"].as_str().expect("id").to_owned());
                }
                (acked, sent)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    running.kill();
    let mut acked = Vec::new();
    let mut sent = 0;
    for client in clients {
        let (ids, n) = client.await.expect("client");
        acked.extend(ids);
        sent += n;
    }
    assert!(acked.len() >= 6, "load ran before the kill: {} acknowledged", acked.len());

    let _restarted = service.start().await;
    let list = acked.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(",");
    let stored = service.db.scalar_i64(&format!("SELECT count(*) FROM orders WHERE id IN ({list})")).await;
    assert_eq!(stored, acked.len() as i64, "every acknowledged order survived");
    let orders = service.db.count("orders").await;
    assert!(orders as usize <= sent, "no order without a request: {orders} orders, {sent} sent");
    // A published event's row is deleted: at most one row per order, and never one without its order.
    assert!(service.db.count("outbox").await <= orders, "at most one event row per order");

    let deliveries = consumer.take(&acked, acked.len(), Duration::from_secs(20)).await;
    let mut delivered: Vec<String> = deliveries.iter().map(message_id).collect();
    delivered.sort();
    delivered.dedup();
    let mut expected = acked.clone();
    expected.sort();
    assert_eq!(delivered, expected, "every acknowledged order's event was published after the restart");
    println!(
        "kill -9: sent {sent}, 201s {}, orders stored {orders}, events delivered {} ({} distinct), duplicate orders 0",
        acked.len(),
        deliveries.len(),
        delivered.len()
    );
}
