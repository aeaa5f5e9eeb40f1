//! The relay loop as the service runs it: a broker outage (orders keep succeeding, the backlog
//! drains in order once the broker is back), wake-up on commit, and stop on shutdown. The
//! outage is a per-test TCP proxy, so no test here needs serializing with the others.

use std::sync::Arc;
use std::time::Duration;

use order_service::relay::RelaySettings;
use tokio::sync::Notify;

use crate::kit::{
    BROKER, Backend, CutProxy, TestApp, TestConsumer, amqp_url, eventually, message_id, new_relay, order_ids, series,
};

crate::on_both_backends!(
    orders_keep_succeeding_through_a_broker_outage_and_the_backlog_drains_in_order,
    with_the_relay_off_outbox_pending_still_counts_the_waiting_events,
);

async fn orders_keep_succeeding_through_a_broker_outage_and_the_backlog_drains_in_order(backend: Backend) {
    let mut consumer = TestConsumer::bind().await;
    let proxy = CutProxy::start("127.0.0.1:5672").await;
    let url = amqp_url(proxy.port);
    let env = [("AMQP_URL", url.as_str()), ("OUTBOX_POLL_INTERVAL_MS", "50"), ("OUTBOX_RECONNECT_MAX_MS", "200")];
    let app = TestApp::with_healthy_upstreams(backend, &env).await;

    let before = order_ids(&app.place_orders(2).await);
    assert_eq!(consumer.take(&before, 2, Duration::from_secs(15)).await.len(), 2, "relay works before the outage");
    // A cut between delivery and confirm would (rightly) publish them again: let them settle.
    assert_eq!(pending_after_settling(&app).await, 0);

    proxy.cut();
    let during = order_ids(&app.place_orders(5).await); // every one a 201
    let broker_status = async || {
        let ready = app.get("/health/ready").await;
        assert_eq!(ready.status(), 200, "a broker outage never makes the service unready");
        let body: serde_json::Value = ready.json().await.expect("json");
        body["broker"]["status"].as_str().unwrap_or_default().to_owned()
    };
    let status = eventually(Duration::from_secs(10), broker_status, |status| status == "down").await;
    assert_eq!(status, "down");
    assert_eq!(app.db.count("outbox WHERE published_at IS NULL").await, 5, "events wait in the outbox");

    proxy.restore();
    let got = consumer.take(&during, 5, Duration::from_secs(20)).await;
    assert_eq!(got.iter().map(message_id).collect::<Vec<_>>(), during, "every event, in order");
    assert_eq!(pending_after_settling(&app).await, 0, "every row ends published");
    assert_eq!(app.ready().await["broker"]["status"], "up");
}

/// Unpublished rows, waiting up to 10 s for them to reach zero.
async fn pending_after_settling(app: &TestApp) -> i64 {
    eventually(Duration::from_secs(10), || app.db.count("outbox WHERE published_at IS NULL"), |&n| n == 0).await
}

/// A commit wakes the relay at once: with a one-minute poll, only the wake-up can explain a
/// prompt delivery.
#[tokio::test]
async fn a_committed_order_wakes_the_relay_without_waiting_for_the_poll() {
    let mut consumer = TestConsumer::bind().await;
    let app =
        TestApp::with_healthy_upstreams(Backend::Sqlite, &[("AMQP_URL", BROKER), ("OUTBOX_POLL_INTERVAL_MS", "60000")])
            .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // the first (empty) pass is done
    let created = order_ids(&app.place_orders(2).await);
    assert_eq!(consumer.take(&created, 2, Duration::from_secs(5)).await.len(), 2);
}

/// Stop finishes the pass in flight and returns; rows committed later wait for the next start.
#[tokio::test]
async fn the_relay_stops_when_asked_and_leaves_later_rows_pending() {
    let app = TestApp::with_healthy_upstreams(Backend::Postgres, &[]).await;
    app.place_orders(3).await;
    let settings = RelaySettings { poll_interval: Duration::from_secs(60), ..RelaySettings::default() };
    let (relay, _) = new_relay(&app.db, settings).await;
    let wake = Arc::new(Notify::new());
    let handle = relay.spawn(Arc::clone(&wake));
    assert_eq!(pending_after_settling(&app).await, 0, "the first pass publishes the backlog");
    assert_eq!(handle.status.broker(), "up");
    tokio::time::timeout(Duration::from_secs(5), handle.stop()).await.expect("stops promptly");

    app.place_orders(1).await;
    wake.notify_one(); // nobody listens any more
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.db.count("outbox WHERE published_at IS NULL").await, 1);
}

/// No `AMQP_URL`: events wait in the outbox, and `outbox_pending` says how many (a growing
/// backlog is exactly what an operator needs to see then).
async fn with_the_relay_off_outbox_pending_still_counts_the_waiting_events(backend: Backend) {
    let app = TestApp::with_healthy_upstreams(backend, &[("OUTBOX_PENDING_INTERVAL_MS", "100")]).await;
    app.place_orders(3).await;
    let pending = async || series(&app.metrics().await, "outbox_pending", &[]);
    let reported = eventually(Duration::from_secs(10), pending, |&reported| reported == Some(3.0)).await;
    assert_eq!(reported, Some(3.0), "outbox_pending with the relay off");
    assert_eq!(app.ready().await["broker"]["status"], "disabled");
}
