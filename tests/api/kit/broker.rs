//! The broker side of the outbox tests: a queue of the test's own on the real RabbitMQ
//! (127.0.0.1:5672), and a relay of the test's own over the test database.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, Consumer, ExchangeKind};
use order_service::domain::OutboxStore;
use order_service::relay::publisher::{Amqp, EXCHANGE, ROUTING_KEY};
use order_service::relay::{Relay, RelaySettings};

use super::TestDb;

/// The test RabbitMQ, shared by every test (each binds a queue of its own).
pub const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The test broker's URL on another loopback port: a cut-able proxy in front of it, or nothing.
pub fn amqp_url(port: u16) -> String {
    format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
}

/// Declares the durable `orders` topic exchange, as the relay does (a fresh broker has none
/// until a relay or a consumer declares it).
pub async fn declare_orders_exchange(channel: &lapin::Channel) {
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel
        .exchange_declare(EXCHANGE.into(), ExchangeKind::Topic, durable, FieldTable::default())
        .await
        .expect("exchange");
}

/// A queue of this test's own on the `orders` exchange.
pub struct TestConsumer {
    _connection: Connection,
    consumer: Consumer,
}

impl TestConsumer {
    pub async fn bind() -> Self {
        let connection = Connection::connect(BROKER, ConnectionProperties::default())
            .await
            .expect("RabbitMQ must be running on 127.0.0.1:5672 for the tests");
        let channel = connection.create_channel().await.expect("channel");
        declare_orders_exchange(&channel).await;
        let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
        let queue = channel.queue_declare("".into(), options, FieldTable::default()).await.expect("queue");
        let name = queue.name().clone();
        channel
            .queue_bind(
                name.clone(),
                EXCHANGE.into(),
                ROUTING_KEY.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
        let no_ack = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
        let consumer = channel.basic_consume(name, "".into(), no_ack, FieldTable::default()).await.expect("consume");
        Self { _connection: connection, consumer }
    }

    /// The messages for `ids` that arrive within `wait`, stopping early once `want` arrived.
    pub async fn take(&mut self, ids: &[String], want: usize, wait: Duration) -> Vec<Delivery> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while got.len() < want {
            let Ok(Some(delivery)) = tokio::time::timeout_at(deadline, self.consumer.next()).await else {
                break;
            };
            let delivery = delivery.expect("delivery");
            if ids.iter().any(|id| Some(id.as_str()) == delivery.properties.message_id().as_ref().map(|m| m.as_str())) {
                got.push(delivery);
            }
        }
        got
    }

    /// The next message, whoever it is for (benchmarks filter it themselves).
    pub async fn next_delivery(&mut self) -> Option<Delivery> {
        self.consumer.next().await.and_then(Result::ok)
    }
}

pub fn message_id(delivery: &Delivery) -> String {
    delivery.properties.message_id().as_ref().map(|m| m.as_str().to_owned()).unwrap_or_default()
}

/// A relay of the test's own over the test database, and the outbox it reads.
pub async fn new_relay(db: &TestDb, settings: RelaySettings) -> (Relay, Arc<dyn OutboxStore>) {
    let outbox = db.stores(2).await.outbox;
    (broker_relay(Arc::clone(&outbox), settings), outbox)
}

/// A relay over `outbox` that publishes to the test broker.
pub fn broker_relay(outbox: Arc<dyn OutboxStore>, settings: RelaySettings) -> Relay {
    Relay::new(outbox, Arc::new(Amqp { url: BROKER.to_owned() }), settings)
}
