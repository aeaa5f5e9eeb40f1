//! Traces across the outbox: the event of a traced order leaves with the order's trace — its
//! publish span (messaging conventions, producer) is in the order's trace and links to it, and
//! the AMQP message's `traceparent` carries it on — also when another replica's relay publishes
//! it, after the placing replica has gone.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::types::AMQPValue;

use crate::kit::{ADA, BROKER, Backend, Collector, ReceivedSpan, TestBinary, TestConsumer, eventually};

const CALLER_TRACE: &str = "5bf92f3577b34da6a3ce929d0e0e4737";
const PRODUCER: i32 = 4;

/// Places a traced caller's order; returns its id.
async fn order(service: &TestBinary) -> String {
    order_as(service, &format!("00-{CALLER_TRACE}-00f067aa0ba902b7-01")).await.0
}

/// Places an order with the caller's `traceparent`; returns its id and the `traceresponse`.
async fn order_as(service: &TestBinary, traceparent: &str) -> (String, String) {
    let response = service
        .http
        .post(service.url("/v1/orders"))
        .header("traceparent", traceparent)
        .json(&serde_json::json!({ "user_id": ADA, "product_code": "classic-box" }))
        .send()
        .await
        .expect("order");
    assert_eq!(response.status(), 201);
    let traceresponse = response.headers()["traceresponse"].to_str().expect("ascii").to_owned();
    let order: serde_json::Value = response.json().await.expect("json");
    (order["id"].as_str().expect("id").to_owned(), traceresponse)
}

fn header(delivery: &Delivery, name: &str) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(value) => Some(value.to_string()),
        other => panic!("{name} is a {other:?}"),
    }
}

/// The order's trace as the collector has it once the publish span arrived.
async fn trace_with_publish(collector: &Collector) -> Vec<ReceivedSpan> {
    eventually(
        Duration::from_secs(20),
        async || collector.trace(CALLER_TRACE),
        |spans| spans.iter().any(|s| s.name == "publish orders"),
    )
    .await
}

/// The publish span is the place-order span's child and links to it; the message carries the
/// publish span's own context, in the order's trace.
fn assert_published_in_the_orders_trace(spans: &[ReceivedSpan], delivery: &Delivery, order_id: &str) {
    let names: Vec<_> = spans.iter().map(|s| s.name.as_str()).collect();
    let place = spans.iter().find(|s| s.name == "place order").unwrap_or_else(|| panic!("place order in {names:?}"));
    let publish =
        spans.iter().find(|s| s.name == "publish orders").unwrap_or_else(|| panic!("publish orders in {names:?}"));
    assert_eq!(publish.kind, PRODUCER);
    assert_eq!(publish.parent_span_id, place.span_id, "a child of the order's place-order span");
    assert_eq!(publish.links, [(CALLER_TRACE.to_owned(), place.span_id.clone())], "and linked to it");
    assert_eq!(publish.attribute("messaging.system"), Some("rabbitmq"));
    assert_eq!(publish.attribute("messaging.destination.name"), Some("orders"));
    assert_eq!(publish.attribute("messaging.operation.type"), Some("send"));
    assert_eq!(publish.attribute("messaging.message.id"), Some(order_id));
    assert_eq!(publish.attribute("outcome"), Some("published"));
    let traceparent = header(delivery, "traceparent").expect("the message has a traceparent");
    assert_eq!(traceparent, format!("00-{CALLER_TRACE}-{}-01", publish.span_id), "the message continues the trace");
}

/// An order whose trace is not sampled has no span but its server span, and its event gets none
/// either: the message carries the order's own context (its `traceresponse`, flags `00`), and
/// nothing of that trace reaches the collector.
#[tokio::test]
async fn the_event_of_an_unsampled_order_carries_the_orders_context_and_makes_no_span() {
    const UNSAMPLED_TRACE: &str = "6cf92f3577b34da6a3ce929d0e0e4738";
    let collector = Collector::start().await;
    let mut consumer = TestConsumer::bind().await;
    let service = collector.receiving_from(TestBinary::new(Backend::Postgres).await).env("AMQP_URL", BROKER);
    let _running = service.start().await;

    let (id, traceresponse) = order_as(&service, &format!("00-{UNSAMPLED_TRACE}-00f067aa0ba902b9-00")).await;
    let delivery = consumer.take(std::slice::from_ref(&id), 1, Duration::from_secs(20)).await;
    assert_eq!(delivery.len(), 1, "the event was published");
    assert_eq!(header(&delivery[0], "traceparent").as_deref(), Some(traceresponse.as_str()));
    assert!(traceresponse.starts_with(&format!("00-{UNSAMPLED_TRACE}-")) && traceresponse.ends_with("-00"));

    // A sampled order's publish span arrives after it: the collector works, and the unsampled
    // order left nothing in it.
    let sampled = order(&service).await;
    consumer.take(std::slice::from_ref(&sampled), 1, Duration::from_secs(20)).await;
    trace_with_publish(&collector).await;
    assert!(collector.trace(UNSAMPLED_TRACE).is_empty(), "{:?}", collector.trace(UNSAMPLED_TRACE));
    let publishes: Vec<_> =
        collector.spans().into_iter().filter(|s| s.attribute("messaging.message.id") == Some(id.as_str())).collect();
    assert!(publishes.is_empty(), "no publish span for it, in any trace: {publishes:?}");
}

#[tokio::test]
async fn a_published_event_continues_its_orders_trace() {
    let collector = Collector::start().await;
    let mut consumer = TestConsumer::bind().await;
    let service = collector.receiving_from(TestBinary::new(Backend::Postgres).await).env("AMQP_URL", BROKER);
    let _running = service.start().await;

    let id = order(&service).await;
    let delivery = consumer.take(std::slice::from_ref(&id), 1, Duration::from_secs(20)).await;
    assert_eq!(delivery.len(), 1, "the event was published");
    let spans = trace_with_publish(&collector).await;
    assert_published_in_the_orders_trace(&spans, &delivery[0], &id);
}

#[tokio::test]
async fn another_replicas_relay_publishes_it_later_in_the_same_trace() {
    let collector = Collector::start().await;
    let mut consumer = TestConsumer::bind().await;
    // The placing replica has no relay, and is gone before the other one starts.
    let placing = collector.receiving_from(TestBinary::new(Backend::Postgres).await);
    let running = placing.start().await;
    let id = order(&placing).await;
    let exported = |spans: &Vec<ReceivedSpan>| spans.iter().any(|s| s.name == "place order");
    eventually(Duration::from_secs(20), async || collector.trace(CALLER_TRACE), exported).await;
    drop(running);
    let stored = placing.db.scalar_text("SELECT traceparent FROM outbox").await;
    assert!(stored.starts_with(&format!("00-{CALLER_TRACE}-")), "the outbox row keeps the trace: {stored}");

    let publishing = collector.receiving_from(TestBinary::same_database_as(&placing.db).await).env("AMQP_URL", BROKER);
    let _running = publishing.start().await;
    let delivery = consumer.take(std::slice::from_ref(&id), 1, Duration::from_secs(20)).await;
    assert_eq!(delivery.len(), 1, "the other replica published the event");
    let spans = trace_with_publish(&collector).await;
    assert_published_in_the_orders_trace(&spans, &delivery[0], &id);
}
