//! The broker side of the relay: the [`Broker`] / [`Publish`] traits the relay talks to, their
//! RabbitMQ implementation (one long-lived lapin connection and channel with publisher
//! confirms), and the event envelope. Tests put a scripted publisher behind the same traits.
//!
//! Only the durable topic exchange `orders` is declared: queues and bindings belong to the
//! consumers. Messages are published with **`mandatory = false`**: an event whose exchange has
//! no bound queue yet is accepted (and dropped) by the broker like any fire-and-forget event,
//! instead of failing and retrying forever before the first consumer exists. A returned
//! message (`Ack(Some(_))`, which only a mandatory publish can produce) is still treated as a
//! failure, so flipping [`MANDATORY`] makes unroutable events retry instead.

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::domain::order::rfc3339;
use crate::telemetry::traces::propagation::TraceContext;

/// The exchange of docs/contracts.md (durable, topic).
pub const EXCHANGE: &str = "orders";
/// The routing key of `order.created`.
pub const ROUTING_KEY: &str = "created_order";
/// The event type, in the body and in the `type` header.
pub const EVENT_TYPE: &str = "order.created";
/// See the module documentation.
pub const MANDATORY: bool = false;
/// AMQP `delivery_mode` for persistent messages.
const PERSISTENT: u8 = 2;

/// Why a message was not confirmed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The connection or channel failed: nothing is wrong with the message.
    #[error("broker connection: {0}")]
    Connection(String),
    /// The broker refused this message (nack) or returned it (unroutable).
    #[error("{0}")]
    Refused(&'static str),
}

impl From<lapin::Error> for PublishError {
    fn from(error: lapin::Error) -> Self {
        PublishError::Connection(error.to_string())
    }
}

/// A sent message's confirmation, awaited after the whole batch is sent.
pub type Confirm = Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send>>;

/// Where the relay gets a (new) connection from.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    async fn connect(&self) -> Result<Box<dyn Publish>, PublishError>;
}

/// One connection to the broker, with confirms on.
#[async_trait]
pub trait Publish: Send + Sync {
    /// Whether the connection is still usable; the relay reconnects when it is not.
    fn is_connected(&self) -> bool;
    /// Sends one event carrying `trace` (W3C `traceparent` / `tracestate` headers) when given;
    /// the returned future resolves when the broker confirmed (or refused) it.
    async fn send(&self, order_id: Uuid, body: &[u8], trace: Option<&TraceContext>) -> Result<Confirm, PublishError>;
    /// Closes politely (shutdown); errors are irrelevant by then.
    async fn close(&self);
}

/// RabbitMQ at `url`.
pub struct Amqp {
    pub url: String,
}

#[async_trait]
impl Broker for Amqp {
    async fn connect(&self) -> Result<Box<dyn Publish>, PublishError> {
        Ok(Box::new(Publisher::connect(&self.url).await?))
    }
}

/// The largest frame the relay asks the broker for. lapin keeps a send and a receive buffer of 32
/// frames each, zero-filled when the connection is tuned, so RabbitMQ's default (128 KiB) held
/// 8 MiB of resident memory, a third of an idle service's; an order event is about 1 KiB, and a
/// larger body would only be split into more frames (docs/overload.md, ninth session).
pub const FRAME_MAX: u32 = 16 * 1024;

/// A connected lapin publisher; dropped and rebuilt by the relay when the connection breaks.
pub struct Publisher {
    connection: Connection,
    channel: Channel,
}

impl Publisher {
    /// Connects, opens one channel, turns confirms on and declares the exchange. Asks for frames
    /// of at most [`FRAME_MAX`] unless the URL says otherwise (`?frame_max=`).
    pub async fn connect(url: &str) -> Result<Self, lapin::Error> {
        let properties = ConnectionProperties::default().with_connection_name("order-service outbox relay".into());
        let connection = match url.parse::<AMQPUri>() {
            Ok(mut uri) => {
                uri.query.frame_max.get_or_insert(FRAME_MAX);
                Connection::connect_uri(uri, properties).await?
            }
            Err(_) => Connection::connect(url, properties).await?, // lapin's error says what is wrong with it
        };
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        channel.exchange_declare(EXCHANGE.into(), ExchangeKind::Topic, durable, FieldTable::default()).await?;
        Ok(Self { connection, channel })
    }

    /// The frame size agreed with the broker: the lower of what each side asked for.
    pub fn frame_max(&self) -> u32 {
        self.connection.configuration().frame_max()
    }
}

#[async_trait]
impl Publish for Publisher {
    fn is_connected(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    /// Awaiting the confirms of a batch after sending all of it keeps the broker's round trips
    /// out of the per-event cost.
    async fn send(&self, order_id: Uuid, body: &[u8], trace: Option<&TraceContext>) -> Result<Confirm, PublishError> {
        let mut headers = FieldTable::default();
        headers.insert("type".into(), AMQPValue::LongString(LongString::from(EVENT_TYPE)));
        if let Some(trace) = trace {
            headers.insert("traceparent".into(), AMQPValue::LongString(LongString::from(trace.traceparent.as_str())));
            if let Some(state) = &trace.tracestate {
                headers.insert("tracestate".into(), AMQPValue::LongString(LongString::from(state.as_str())));
            }
        }
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(PERSISTENT)
            .with_message_id(order_id.to_string().into())
            .with_headers(headers);
        let options = BasicPublishOptions { mandatory: MANDATORY, ..BasicPublishOptions::default() };
        let confirm =
            self.channel.basic_publish(EXCHANGE.into(), ROUTING_KEY.into(), options, body, properties).await?;
        // Only a plain ack counts as published.
        Ok(Box::pin(async move {
            match confirm.await? {
                Confirmation::Ack(None) => Ok(()),
                Confirmation::Ack(Some(_)) => Err(PublishError::Refused("returned by the broker: unroutable")),
                Confirmation::Nack(_) => Err(PublishError::Refused("nacked by the broker")),
                Confirmation::NotRequested => Err(PublishError::Refused("publisher confirms are off")),
            }
        }))
    }

    async fn close(&self) {
        let _ = self.connection.close(200, "order-service stopping".into()).await;
    }
}

/// The message body of docs/contracts.md around a stored payload, `sent_at` = now. A payload that is
/// not `{"order": {...}}` is refused here, before it reaches any consumer. The payload is checked
/// without building it as a tree and goes into the body as stored (it is our own JSON): about
/// 2 % of an order's CPU went to parsing it into a `Value` and writing it again.
pub fn envelope(payload: &str) -> Result<Vec<u8>, String> {
    #[derive(serde::Deserialize)]
    struct Stored<'a> {
        #[serde(borrow)]
        order: Option<&'a RawValue>,
    }
    let stored: Stored = serde_json::from_str(payload).map_err(|e| format!("payload is not a JSON object: {e}"))?;
    if !stored.order.is_some_and(|order| order.get().starts_with('{')) {
        return Err("payload has no \"order\" object".to_owned());
    }
    let sent_at = rfc3339(chrono::Utc::now());
    let mut body = Vec::with_capacity(payload.len() + 100);
    body.extend_from_slice(br#"{"producer":"order-service","sent_at":""#);
    body.extend_from_slice(sent_at.as_bytes());
    body.extend_from_slice(br#"","type":""#);
    body.extend_from_slice(EVENT_TYPE.as_bytes());
    body.extend_from_slice(br#"","payload":"#);
    body.extend_from_slice(payload.trim().as_bytes());
    body.push(b'}');
    Ok(body)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

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
        assert!(envelope(r#"{"order": {"order_id": "x"}} trailing"#).is_err());
        assert!(envelope(r#""just a string""#).is_err());
        assert!(envelope(r#"{"order": 3}"#).is_err());
        assert!(envelope(r#"{"order": "{}"}"#).is_err());
        assert!(envelope(r#"{"other": {}}"#).is_err());
    }

    #[test]
    fn a_payload_as_postgres_prints_jsonb_goes_in_as_it_is() {
        let stored = r#"{"order": {"order_id": "x", "total_amount": 9.99, "note": "\"quoted\" é"}}"#;
        let body: Value = serde_json::from_slice(&envelope(stored).expect("valid")).expect("json");
        assert_eq!(body["payload"], serde_json::from_str::<Value>(stored).expect("json"));
    }
}
