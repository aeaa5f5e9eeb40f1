//! A broker outage through the real relay loop: orders keep succeeding, the backlog drains in
//! order once the broker is reachable again. The outage is a per-test TCP proxy, so this test
//! needs no serialization with the others that share the broker.

use std::time::Duration;

use crate::helpers::{Backend, TestApp};
use crate::outbox::{TestConsumer, app, create, ids, message_id};
use crate::proxy::CutProxy;

crate::on_both_backends!(orders_keep_succeeding_through_a_broker_outage_and_the_backlog_drains_in_order);

async fn orders_keep_succeeding_through_a_broker_outage_and_the_backlog_drains_in_order(backend: Backend) {
    let mut consumer = TestConsumer::bind().await;
    let proxy = CutProxy::start("127.0.0.1:5672").await;
    let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port);
    let env = [("AMQP_URL", url.as_str()), ("OUTBOX_POLL_INTERVAL_MS", "50"), ("OUTBOX_RECONNECT_MAX_MS", "200")];
    let app = app(backend, &env).await;

    let before = ids(&create(&app, 2).await);
    assert_eq!(consumer.take(&before, 2, Duration::from_secs(15)).await.len(), 2, "relay works before the outage");
    // A cut between delivery and confirm would (rightly) publish them again: let them settle.
    assert_eq!(pending_after_settling(&app).await, 0);

    proxy.cut();
    let during = ids(&create(&app, 5).await); // every one a 201
    let mut status = String::new();
    for _ in 0..100 {
        let ready = app.get("/health/ready").await;
        assert_eq!(ready.status(), 200, "a broker outage never makes the service unready");
        let body: serde_json::Value = ready.json().await.expect("json");
        status = body["broker"]["status"].as_str().unwrap_or_default().to_owned();
        if status == "down" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "down");
    assert_eq!(app.db.count("outbox WHERE published_at IS NULL").await, 5, "events wait in the outbox");

    proxy.restore();
    let got = consumer.take(&during, 5, Duration::from_secs(20)).await;
    assert_eq!(got.iter().map(message_id).collect::<Vec<_>>(), during, "every event, in order");
    assert_eq!(pending_after_settling(&app).await, 0, "every row ends published");
    assert_eq!(app.ready().await["broker"]["status"], "up");
}

/// Unpublished rows, waiting up to 5 s for them to reach zero.
async fn pending_after_settling(app: &TestApp) -> i64 {
    let mut pending = -1;
    for _ in 0..100 {
        pending = app.db.count("outbox WHERE published_at IS NULL").await;
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pending
}
