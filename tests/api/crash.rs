//! kill -9 under load: every order that got a 201 is in the database after a restart, and its
//! event reaches the broker; nothing acknowledged is lost.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::kit::{BROKER, Backend, TestConsumer, TestDb, Upstreams, binary, free_port, message_id, wait_ready};

fn start(port: u16, db: &TestDb, upstreams: &Upstreams) -> Child {
    binary(port, &db.url, upstreams)
        .env("AMQP_URL", BROKER)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("order-service starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_loses_no_acknowledged_order_or_event() {
    let db = TestDb::new(Backend::Postgres).await;
    let upstreams = Upstreams::simulator().await;
    let mut consumer = TestConsumer::bind().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut child = start(port, &db, &upstreams);
    wait_ready(&http, &base).await;

    // Six clients order until the process dies (bounded: 5 s at most).
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (http, url) = (http.clone(), format!("{base}/v1/orders"));
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
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    let mut acked = Vec::new();
    let mut sent = 0;
    for client in clients {
        let (ids, n) = client.await.expect("client");
        acked.extend(ids);
        sent += n;
    }
    assert!(acked.len() >= 6, "load ran before the kill: {} acknowledged", acked.len());

    let mut child = start(port, &db, &upstreams);
    wait_ready(&http, &base).await;
    let list = acked.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(",");
    let stored = db.scalar_i64(&format!("SELECT count(*) FROM orders WHERE id IN ({list})")).await;
    assert_eq!(stored, acked.len() as i64, "every acknowledged order survived");
    let orders = db.count("orders").await;
    assert!(orders as usize <= sent, "no order without a request: {orders} orders, {sent} sent");
    assert_eq!(db.count("outbox").await, orders, "each order has exactly its one event row");

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
    child.kill().expect("stop");
    let _ = child.wait();
}
