use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use prost::Message;

use super::*;

fn context(trace: u128, span: u64, remote: bool, state: &str) -> SpanContext {
    let state = if state.is_empty() { TraceState::default() } else { state.parse().expect("trace state") };
    SpanContext::new(TraceId::from(trace), SpanId::from(span), TraceFlags::SAMPLED, remote, state)
}

fn span(name: &'static str, scope: &InstrumentationScope, parent: u64, attributes: Vec<KeyValue>) -> SpanData {
    let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_796_343_656_073_123_456);
    SpanData {
        span_context: context(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736, 0x00f0_67aa_0ba9_02b7 + parent, false, ""),
        parent_span_id: SpanId::from(parent),
        parent_span_is_remote: parent == 7,
        span_kind: SpanKind::Client,
        name: Cow::Borrowed(name),
        start_time: start,
        end_time: start + Duration::from_micros(1_234),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: scope.clone(),
    }
}

/// The request the encoder wrote, decoded, against opentelemetry-proto's own conversion of the
/// same spans: the same message, field by field.
fn assert_as_opentelemetry_proto_encodes(spans: Vec<SpanData>, resource: &Resource) {
    let mut ours = Vec::new();
    export_request(&spans, resource, &mut ours);
    let decoded = ExportTraceServiceRequest::decode(ours.as_slice()).expect("a valid protobuf request");
    let theirs = ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(spans, &ResourceAttributesWithSchema::from(resource)),
    };
    assert_eq!(decoded, theirs);
    assert_eq!(ours.len(), theirs.encoded_len(), "no field written that prost would leave out");
}

#[test]
fn spans_of_every_shape_encode_as_opentelemetry_proto_does() {
    let resource = Resource::builder()
        .with_service_name("order-service")
        .with_attribute(KeyValue::new("service.version", "0.1.0"))
        .build();
    let scope = InstrumentationScope::builder("order-service").with_version("1").build();
    let mut server = span(
        "POST /v1/orders",
        &scope,
        7,
        vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.response.status_code", 201i64),
            KeyValue::new("negative", -42i64),
            KeyValue::new("ratio", 0.25f64),
            KeyValue::new("zero", 0i64),
            KeyValue::new("empty", ""),
            KeyValue::new("no", false),
            KeyValue::new("yes", true),
            KeyValue::new("long", "x".repeat(300)),
            KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("ints", Value::Array(Array::I64(vec![1, -1, 0]))),
            KeyValue::new("floats", Value::Array(Array::F64(vec![1.5, 0.0]))),
            KeyValue::new("strings", Value::Array(Array::String(vec![StringValue::from("a"), StringValue::from("")]))),
        ],
    );
    server.span_kind = SpanKind::Server;
    server.span_context = context(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736, 99, false, "vendor=value,other=x");
    server.status = Status::error("upstream failed");
    server.dropped_attributes_count = 3;
    server.events.events = vec![Event::new(
        "retry",
        SystemTime::UNIX_EPOCH + Duration::from_secs(5),
        vec![KeyValue::new("attempt", 2i64)],
        1,
    )];
    server.events.dropped_count = 4;
    server.links.links = vec![Link::new(context(5, 6, true, "a=b"), vec![KeyValue::new("link", "yes")], 2)];
    server.links.dropped_count = 5;
    let mut ok = span("SELECT orders", &scope, 99, vec![]);
    ok.status = Status::Ok;
    ok.span_kind = SpanKind::Internal;
    let other_scope = InstrumentationScope::builder("another")
        .with_schema_url("https://opentelemetry.io/schemas/1.30.0")
        .with_attributes([KeyValue::new("scope.attribute", 1i64)])
        .build();
    let mut producer = span("publish orders", &other_scope, 0, vec![KeyValue::new("messaging.system", "rabbitmq")]);
    producer.span_kind = SpanKind::Producer;
    let mut consumer = span("receive", &scope, 0, vec![]);
    consumer.span_kind = SpanKind::Consumer;

    assert_as_opentelemetry_proto_encodes(vec![server, ok, producer, consumer], &resource);
}

#[test]
fn a_large_batch_and_an_empty_one_encode_as_opentelemetry_proto_does() {
    let resource = Resource::builder_empty().build();
    let scope = InstrumentationScope::builder("order-service").build();
    let many: Vec<SpanData> = (1..=600)
        .map(|i| span("attempt", &scope, i, vec![KeyValue::new("url.full", format!("http://users/{i}"))]))
        .collect();
    assert_as_opentelemetry_proto_encodes(many, &resource);
    assert_as_opentelemetry_proto_encodes(Vec::new(), &resource);
}

#[test]
fn a_length_that_needs_more_than_one_byte_is_widened_in_place() {
    let mut out = vec![0xAA];
    message(&mut out, 1, |out| out.extend(std::iter::repeat_n(7u8, 300)));
    assert_eq!(&out[..4], &[0xAA, 0x0A, 0xAC, 0x02], "tag 1/LEN, then 300 as a two-byte varint");
    assert_eq!(out.len(), 4 + 300);
    assert!(out[4..].iter().all(|b| *b == 7));
}
