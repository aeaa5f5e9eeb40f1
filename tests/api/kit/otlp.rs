//! A test OTLP/HTTP collector: decodes the real protobuf the binary exports and keeps the spans,
//! so tests assert on traces as any backend would receive them.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use super::TestBinary;

/// One received span, flattened to what tests look at.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    /// OTLP `SpanKind`: 2 server, 3 client, 4 producer.
    pub kind: i32,
    pub attributes: Vec<(String, String)>,
    pub events: Vec<String>,
    /// `(trace_id, span_id)` of each link.
    pub links: Vec<(String, String)>,
    /// OTLP status code: 2 is error.
    pub status: i32,
    pub service_name: String,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

pub struct Collector {
    pub endpoint: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    /// The headers of each export request, in order.
    headers: Arc<Mutex<Vec<HeaderMap>>>,
    _server: tokio::task::JoinHandle<()>,
}

type Received = (Arc<Mutex<Vec<ReceivedSpan>>>, Arc<Mutex<Vec<HeaderMap>>>);

impl Collector {
    /// `service` exporting its spans here, in batches sent every 50 ms.
    pub fn receiving_from(&self, service: TestBinary) -> TestBinary {
        service.env("OTEL_EXPORTER_OTLP_ENDPOINT", self.endpoint.as_str()).env("OTEL_BSP_SCHEDULE_DELAY", "50")
    }

    pub async fn start() -> Self {
        let (spans, headers) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let app =
            Router::new().route("/v1/traces", post(receive)).with_state((Arc::clone(&spans), Arc::clone(&headers)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { endpoint, spans, headers, _server: server }
    }

    pub fn request_headers(&self) -> Vec<HeaderMap> {
        self.headers.lock().expect("lock").clone()
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("lock").clone()
    }

    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans().into_iter().filter(|s| s.trace_id == trace_id).collect()
    }
}

async fn receive(State((spans, headers)): State<Received>, sent: HeaderMap, body: Bytes) -> StatusCode {
    headers.lock().expect("lock").push(sent);
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let service_name = resource_spans
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            received.extend(scope_spans.spans.into_iter().map(|span| flatten(span, &service_name)));
        }
    }
    spans.lock().expect("lock").extend(received);
    StatusCode::OK
}

fn flatten(span: Span, service_name: &str) -> ReceivedSpan {
    ReceivedSpan {
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        parent_span_id: hex(&span.parent_span_id),
        name: span.name,
        kind: span.kind,
        attributes: span
            .attributes
            .into_iter()
            .map(|kv| (kv.key, text(kv.value.as_ref().and_then(|v| v.value.as_ref()))))
            .collect(),
        events: span.events.into_iter().map(|e| event_text(e.name, &e.attributes)).collect(),
        links: span.links.into_iter().map(|l| (hex(&l.trace_id), hex(&l.span_id))).collect(),
        status: span.status.map_or(0, |s| s.code),
        service_name: service_name.to_owned(),
    }
}

/// An event's name and its `message` attribute (tracing events export their message there).
fn event_text(name: String, attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> String {
    let message = attributes
        .iter()
        .find(|kv| kv.key == "message")
        .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())));
    match message {
        Some(message) => format!("{name}: {message}"),
        None => name,
    }
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
