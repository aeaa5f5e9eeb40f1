//! The outbox relay against the real RabbitMQ (127.0.0.1:5672) and the real databases.
//!
//! Every test binds a queue of its own (exclusive, auto-delete) to the shared `orders`
//! exchange and keeps only the messages of the orders it created: tests run in parallel.

use std::collections::HashSet;
use std::time::Duration;

use lapin::types::AMQPValue;
use order_service::domain::outbox::now;
use order_service::relay::publisher::{Amqp, Broker, FRAME_MAX, Publisher, envelope};
use order_service::relay::{Relay, RelaySettings};
use serde_json::Value;

use crate::kit::{
    BROKER, Backend, TestApp, TestConsumer, amqp_url, eventually, free_port, message_id, new_relay, order_ids, sample,
};

crate::on_both_backends!(
    events_reach_a_consumer_exactly_as_the_contract_says,
    orders_succeed_while_the_broker_is_unreachable_and_drain_in_order_later,
    an_event_published_but_not_marked_is_published_again,
    a_poison_row_is_recorded_and_does_not_block_the_rows_behind_it,
);

async fn events_reach_a_consumer_exactly_as_the_contract_says(backend: Backend) {
    let mut consumer = TestConsumer::bind().await;
    let app =
        TestApp::with_healthy_upstreams(backend, &[("AMQP_URL", BROKER), ("OUTBOX_POLL_INTERVAL_MS", "100")]).await;
    let orders = app.place_orders(3).await;
    let ids = order_ids(&orders);

    let got = consumer.take(&ids, 3, Duration::from_secs(15)).await;
    assert_eq!(got.iter().map(message_id).collect::<Vec<_>>(), ids, "one message per order, in order");
    for (delivery, order) in got.iter().zip(&orders) {
        assert_eq!(delivery.exchange.as_str(), "orders");
        assert_eq!(delivery.routing_key.as_str(), "created_order");
        assert_eq!(*delivery.properties.delivery_mode(), Some(2), "persistent");
        assert_eq!(delivery.properties.content_type().as_ref().map(|c| c.as_str()), Some("application/json"));
        let headers = delivery.properties.headers().as_ref().expect("headers");
        match headers.inner().get("type") {
            Some(AMQPValue::LongString(value)) => assert_eq!(value.as_bytes(), b"order.created"),
            other => panic!("type header: {other:?}"),
        }
        let mut body: Value = serde_json::from_slice(&delivery.data).expect("JSON body");
        let sent_at = body["sent_at"].as_str().expect("sent_at").to_owned();
        assert!(sent_at.ends_with('Z'), "{sent_at}");
        chrono::DateTime::parse_from_rfc3339(&sent_at).expect("RFC 3339");
        body.as_object_mut().expect("object").remove("sent_at");
        let expected = serde_json::json!({"producer": "order-service", "type": "order.created", "payload": {"order": {
            "order_id": order["id"], "customer_fullname": "Ada Lovelace", "product_name": "Classic Box",
            "total_amount": 9.99, "created_at": order["created_at"],
        }}});
        assert_eq!(body, expected);
    }

    // The row is marked after the ack, and the API and metrics say so.
    let is_published = async || {
        let order: Value = app.get(&format!("/v1/orders/{}", ids[2])).await.json().await.expect("json");
        order["published"] == true
    };
    let published = eventually(Duration::from_secs(10), is_published, |&published| published).await;
    assert!(published, "published after the confirm");
    assert!(consumer.take(&ids, 1, Duration::from_millis(500)).await.is_empty(), "no duplicates");
    let ready = app.ready().await;
    assert_eq!(ready["broker"]["status"], "up", "{ready}");
    let metrics = app.metrics().await;
    assert!(sample(&metrics, "outbox_published_total", &[]) >= 3.0, "{metrics}");
    assert!(metrics.contains("outbox_publish_lag_seconds"), "{metrics}");
}

async fn orders_succeed_while_the_broker_is_unreachable_and_drain_in_order_later(backend: Backend) {
    let dead = amqp_url(free_port());
    let app = TestApp::with_healthy_upstreams(backend, &[("AMQP_URL", &dead), ("OUTBOX_POLL_INTERVAL_MS", "50")]).await;
    let orders = app.place_orders(5).await;
    let ids = order_ids(&orders);
    assert_eq!(app.db.count("outbox WHERE published_at IS NULL").await, 5);
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 200, "a broker outage never makes the service unready");
    let ready: Value = ready.json().await.expect("json");
    assert_eq!(ready["broker"]["status"], "down", "{ready}");
    // The backlog is counted while the broker is unreachable (outbox_pending and its alert), on
    // the relay's reconnect attempts, which back off.
    let broker_detail = async || app.ready().await["broker"]["detail"].clone();
    let detail = eventually(Duration::from_secs(10), broker_detail, |detail| detail == "5 events pending").await;
    assert_eq!(detail, "5 events pending");
    let order: Value = app.get(&format!("/v1/orders/{}", ids[0])).await.json().await.expect("json");
    assert_eq!(order["published"], false);

    // The broker "comes back": a relay that reaches it drains the backlog in order.
    let mut consumer = TestConsumer::bind().await;
    let (mut relay, outbox) = new_relay(&app.db, RelaySettings::default()).await;
    let outcome = relay.relay_once().await.expect("relay pass");
    assert_eq!((outcome.published, outcome.failed), (5, 0));
    let got = consumer.take(&ids, 5, Duration::from_secs(10)).await;
    assert_eq!(got.iter().map(message_id).collect::<Vec<_>>(), ids);
    assert_eq!(outbox.count_pending().await.expect("count"), 0);
    assert_eq!(relay.status().broker(), "up");
}

async fn an_event_published_but_not_marked_is_published_again(backend: Backend) {
    let app = TestApp::with_healthy_upstreams(backend, &[]).await;
    let ids = order_ids(&app.place_orders(1).await);
    let mut consumer = TestConsumer::bind().await;
    let (mut relay, outbox) = new_relay(&app.db, RelaySettings::default()).await;

    // A relay mid-batch holds its rows: nobody else takes them meanwhile.
    let held = outbox.claim(now(), 10).await.expect("claim");
    assert_eq!(held.rows().len(), 1);
    assert_eq!(relay.relay_once().await.expect("pass").claimed, 0, "held rows are not taken");

    // It publishes, the broker confirms, and it dies before its commit: the claim is gone
    // (rolled back), the row is still there, and is published again at once.
    let publisher = Amqp { url: BROKER.to_owned() }.connect().await.expect("broker");
    let body = envelope(&held.rows()[0].payload).expect("payload");
    publisher.send(held.rows()[0].order_id, &body, None).await.expect("send").await.expect("confirmed");
    drop(held);
    let first = consumer.take(&ids, 1, Duration::from_secs(10)).await;
    assert_eq!(first.len(), 1);
    assert_eq!(app.db.count("outbox").await, 1, "not marked: still pending");

    // Dropped, the claim's rollback reaches the database on the connection's way back to the pool.
    let pass = async || relay.relay_once().await.expect("pass").published;
    assert_eq!(eventually(Duration::from_secs(10), pass, |&published| published == 1).await, 1);
    let second = consumer.take(&ids, 1, Duration::from_secs(10)).await;
    assert_eq!(second.len(), 1, "at-least-once: published again, never lost");
    assert_eq!(message_id(&first[0]), message_id(&second[0]), "consumers de-duplicate on message_id");
    assert_eq!(app.db.count("outbox").await, 0, "a published row is deleted");
    let order: Value = app.get(&format!("/v1/orders/{}", ids[0])).await.json().await.expect("json");
    assert_eq!(order["published"], true, "an order without an outbox row reads published");
}

async fn a_poison_row_is_recorded_and_does_not_block_the_rows_behind_it(backend: Backend) {
    let app = TestApp::with_healthy_upstreams(backend, &[]).await;
    let ids = order_ids(&app.place_orders(3).await);
    let poison = match backend {
        Backend::Postgres => "UPDATE outbox SET payload = '\"not an order\"'::jsonb WHERE id = 2",
        Backend::Sqlite => "UPDATE outbox SET payload = '{corrupt' WHERE id = 2",
    };
    app.db.execute(poison).await;
    let mut consumer = TestConsumer::bind().await;
    let (mut relay, outbox) = new_relay(&app.db, RelaySettings::default()).await;

    let outcome = relay.relay_once().await.expect("pass");
    assert_eq!((outcome.claimed, outcome.published, outcome.failed), (3, 2, 1));
    // Backing off (at least half a second): the next pass does not hammer it.
    assert_eq!(relay.relay_once().await.expect("pass").claimed, 0);
    let got = consumer.take(&ids, 3, Duration::from_secs(3)).await;
    assert_eq!(got.iter().map(message_id).collect::<Vec<_>>(), vec![ids[0].clone(), ids[2].clone()]);
    assert_eq!(app.db.scalar_i64("SELECT CAST(attempts AS bigint) FROM outbox WHERE id = 2").await, 1);
    assert_eq!(app.db.count("outbox WHERE id = 2 AND last_error IS NOT NULL AND published_at IS NULL").await, 1);
    assert_eq!(app.db.count("outbox WHERE id = 2 AND next_attempt_at > created_at").await, 1, "backed off");
    assert_eq!(outbox.count_pending().await.expect("count"), 1);
    let metrics = app.metrics().await;
    assert!(sample(&metrics, "outbox_publish_failures_total", &[]) >= 1.0, "{metrics}");
}

/// Two relays (two replicas) over one PostgreSQL: every event once, none twice.
#[tokio::test]
async fn two_relays_over_one_postgres_publish_each_event_once() {
    let app = TestApp::with_healthy_upstreams(Backend::Postgres, &[]).await;
    let ids = order_ids(&app.place_orders(30).await);
    let mut consumer = TestConsumer::bind().await;
    let settings = RelaySettings { batch_size: 4, ..RelaySettings::default() };
    let (a, _) = new_relay(&app.db, settings).await;
    let (b, _) = new_relay(&app.db, settings).await;
    let drain = |mut relay: Relay| async move {
        let mut published = 0;
        loop {
            let outcome = relay.relay_once().await.expect("pass");
            published += outcome.published;
            if outcome.claimed == 0 {
                return published;
            }
        }
    };
    let (by_a, by_b) = tokio::join!(drain(a), drain(b));
    assert_eq!(by_a + by_b, 30, "a: {by_a}, b: {by_b}");

    let mut got = consumer.take(&ids, 30, Duration::from_secs(15)).await;
    got.extend(consumer.take(&ids, 1, Duration::from_millis(500)).await);
    let unique: HashSet<String> = got.iter().map(message_id).collect();
    assert_eq!(got.len(), 30, "no duplicates");
    assert_eq!(unique.len(), 30, "every event");
    assert_eq!(app.db.count("outbox WHERE published_at IS NULL").await, 0);
}

/// The relay asks for small frames (lapin holds 64 of them in buffers for the connection's life),
/// unless `AMQP_URL` names a size: then the broker gets that one.
#[tokio::test]
async fn the_relay_asks_for_small_frames_unless_the_url_says() {
    let publisher = Publisher::connect(BROKER).await.expect("connect");
    assert_eq!(publisher.frame_max(), FRAME_MAX);
    let asked = Publisher::connect(&format!("{BROKER}?frame_max=8192")).await.expect("connect");
    assert_eq!(asked.frame_max(), 8192);
}
