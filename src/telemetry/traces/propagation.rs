//! W3C trace context in and out: the caller's `traceparent` becomes the parent of our server
//! span, and each upstream attempt (and each published event) carries the context of the span
//! it runs in.

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
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

/// Injected straight into a [`TraceContext`] and extracted from one: no map per call.
#[derive(Default)]
struct Collected {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for Collected {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "traceparent" => self.traceparent = Some(value),
            "tracestate" => self.tracestate = Some(value),
            _ => {}
        }
    }
}

impl Extractor for TraceContext {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(&self.traceparent),
            "tracestate" => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
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

/// A W3C trace context as it travels: stored with an outbox row, sent in an AMQP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: String,
    /// `None` when empty.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The `sampled` flag of `traceparent` (`00-{trace}-{span}-{flags}`, bit 0 of the flags).
    pub fn sampled(&self) -> bool {
        let flags = self.traceparent.rsplit('-').next().and_then(|f| u8::from_str_radix(f, 16).ok());
        flags.is_some_and(|f| f & 1 == 1)
    }
}

/// The context of the current span, when tracing is on.
pub fn current() -> Option<TraceContext> {
    of(&tracing::Span::current())
}

/// The context of `span`, when tracing is on.
pub fn of(span: &tracing::Span) -> Option<TraceContext> {
    if !super::enabled() {
        return None;
    }
    let cx = span.context();
    let mut collected = Collected::default();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut collected));
    Some(TraceContext {
        traceparent: collected.traceparent?,
        tracestate: collected.tracestate.filter(|s| !s.is_empty()),
    })
}

/// Makes `span` a child of a stored context (an order's, read back with its outbox row) and
/// links it to that context too, so a backend that draws links shows it either way. A malformed
/// stored context is ignored: the span then starts a trace of its own.
pub fn continue_stored(span: &tracing::Span, stored: &TraceContext) {
    if !super::enabled() {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(stored));
    let remote = parent.span().span_context().clone();
    if remote.is_valid() {
        let _ = span.set_parent(parent);
        span.add_link(remote);
    }
}

#[cfg(test)]
mod tests {
    use super::TraceContext;

    #[test]
    fn sampled_is_bit_0_of_the_flags() {
        let with = |flags: &str| TraceContext {
            traceparent: format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}"),
            tracestate: None,
        };
        assert!(with("01").sampled());
        assert!(with("03").sampled());
        assert!(!with("00").sampled());
        assert!(!with("02").sampled());
        assert!(!with("zz").sampled());
    }
}
