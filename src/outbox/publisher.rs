//! One long-lived lapin connection and channel with publisher confirms, and the event envelope.
//!
//! Only the durable topic exchange `orders` is declared: queues and bindings belong to the
//! consumers. Messages are published with **`mandatory = false`**: an event whose exchange has
//! no bound queue yet is accepted (and dropped) by the broker like any fire-and-forget event,
//! instead of failing and retrying forever before the first consumer exists. A returned
//! message (`Ack(Some(_))`, which only a mandatory publish can produce) is still treated as a
//! failure, so flipping [`MANDATORY`] makes unroutable events retry instead.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind, PublisherConfirm};
use serde_json::Value;
use uuid::Uuid;

use crate::domain::order::rfc3339;

/// The exchange of DESIGN.md (durable, topic).
pub const EXCHANGE: &str = "orders";
/// The routing key of `order.created`.
pub const ROUTING_KEY: &str = "created_order";
/// The event type, in the body and in the `type` header.
pub const EVENT_TYPE: &str = "order.created";
/// See the module documentation.
pub const MANDATORY: bool = false;
/// AMQP `delivery_mode` for persistent messages.
const PERSISTENT: u8 = 2;

/// A connected publisher; dropped and rebuilt by the relay when the connection breaks.
pub struct Publisher {
    connection: Connection,
    channel: Channel,
}

/// Why a message was not confirmed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The connection or channel failed: nothing is wrong with the message.
    #[error("broker connection: {0}")]
    Connection(#[from] lapin::Error),
    /// The broker refused this message (nack) or returned it (unroutable).
    #[error("{0}")]
    Refused(&'static str),
}

impl Publisher {
    /// Connects, opens one channel, turns confirms on and declares the exchange.
    pub async fn connect(url: &str) -> Result<Self, lapin::Error> {
        let properties = ConnectionProperties::default().with_connection_name("order-service outbox relay".into());
        let connection = Connection::connect(url, properties).await?;
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        channel.exchange_declare(EXCHANGE.into(), ExchangeKind::Topic, durable, FieldTable::default()).await?;
        Ok(Self { connection, channel })
    }

    /// Whether both the connection and the channel are still usable.
    pub fn is_connected(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    /// Sends one event and returns the pending confirm; awaiting the confirms of a batch after
    /// sending all of it keeps the broker's round trips out of the per-event cost.
    pub async fn send(&self, order_id: Uuid, body: &[u8]) -> Result<PublisherConfirm, lapin::Error> {
        let mut headers = FieldTable::default();
        headers.insert("type".into(), AMQPValue::LongString(LongString::from(EVENT_TYPE)));
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(PERSISTENT)
            .with_message_id(order_id.to_string().into())
            .with_headers(headers);
        let options = BasicPublishOptions { mandatory: MANDATORY, ..BasicPublishOptions::default() };
        self.channel.basic_publish(EXCHANGE.into(), ROUTING_KEY.into(), options, body, properties).await
    }

    /// Closes the connection politely (shutdown); errors are irrelevant by then.
    pub async fn close(&self) {
        let _ = self.connection.close(200, "order-service stopping".into()).await;
    }
}

/// Awaits one confirm: only a plain ack counts as published.
pub async fn confirmed(confirm: PublisherConfirm) -> Result<(), PublishError> {
    match confirm.await? {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(PublishError::Refused("returned by the broker: unroutable")),
        Confirmation::Nack(_) => Err(PublishError::Refused("nacked by the broker")),
        Confirmation::NotRequested => Err(PublishError::Refused("publisher confirms are off")),
    }
}

/// The message body of DESIGN.md around a stored payload, `sent_at` = now. A payload that is
/// not `{"order": {...}}` is refused here, before it reaches any consumer.
pub fn envelope(payload: &str) -> Result<Vec<u8>, String> {
    let payload: Value = serde_json::from_str(payload).map_err(|e| format!("payload is not JSON: {e}"))?;
    if !payload.get("order").is_some_and(Value::is_object) {
        return Err("payload has no \"order\" object".to_owned());
    }
    let body = serde_json::json!({
        "producer": "order-service",
        "sent_at": rfc3339(chrono::Utc::now()),
        "type": EVENT_TYPE,
        "payload": payload,
    });
    serde_json::to_vec(&body).map_err(|e| format!("cannot encode the event: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_is_the_contract() {
        let body = envelope(r#"{"order":{"order_id":"x","total_amount":9.99}}"#).expect("valid");
        let body: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body.as_object().map(|o| o.len()), Some(4), "{body}");
        assert_eq!(body["producer"], "order-service");
        assert_eq!(body["type"], "order.created");
        assert_eq!(body["payload"]["order"]["total_amount"], serde_json::json!(9.99));
        let sent_at = body["sent_at"].as_str().expect("sent_at");
        assert!(sent_at.ends_with('Z'), "{sent_at}");
        chrono::DateTime::parse_from_rfc3339(sent_at).expect("RFC 3339");
    }

    #[test]
    fn a_corrupt_payload_is_refused() {
        assert!(envelope("{not json").is_err());
        assert!(envelope(r#""just a string""#).is_err());
        assert!(envelope(r#"{"order": 3}"#).is_err());
    }
}
