//! W3C trace context in and out: the caller's `traceparent` becomes the parent of our server
//! span, and each upstream attempt (and each published event) carries the context of the span
//! it runs in.

use std::collections::HashMap;

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Injector for Fields<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// Makes `span` continue the trace of the request's `traceparent` (if any, and well-formed).
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    if !super::enabled() || !headers.contains_key("traceparent") {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
    let _ = span.set_parent(parent);
}

/// The `traceparent` (and `tracestate`, when there is one) of the current span, when tracing is on.
pub fn current() -> Option<(String, Option<String>)> {
    if !super::enabled() {
        return None;
    }
    let cx = tracing::Span::current().context();
    let mut fields = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut Fields(&mut fields)));
    let traceparent = fields.remove("traceparent")?;
    Some((traceparent, fields.remove("tracestate").filter(|s| !s.is_empty())))
}
