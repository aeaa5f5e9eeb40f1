//! W3C trace context in and out: the caller's `traceparent` becomes the parent of our server
//! span, and each upstream attempt (and each published event) carries the context of the span
//! it runs in.

use axum::http::HeaderMap;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{SpanContext, TraceContextExt};
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

/// The context of the current span, when tracing is on. Inside a request whose trace is not
/// sampled that is the server span (no inner span is made: `telemetry::logging`), so the order's
/// outbox row keeps its context, flags `00`, and its event starts no trace of its own.
pub fn current() -> Option<TraceContext> {
    of(&tracing::Span::current())
}

/// The context of `span`, when tracing is on.
pub fn of(span: &tracing::Span) -> Option<TraceContext> {
    if !super::enabled() || span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let span = cx.span();
    let context = span.span_context();
    if !context.is_valid() {
        return None;
    }
    let tracestate = context.trace_state().header();
    Some(TraceContext { traceparent: traceparent(context), tracestate: Some(tracestate).filter(|s| !s.is_empty()) })
}

/// `traceparent` as the SDK's `TraceContextPropagator` writes it (version 00, only the sampled
/// flag), written here because its `format!` through the ids' `Display` cost about 3,000
/// instructions a call, five calls an order (callgrind, docs/tracing.md).
fn traceparent(context: &SpanContext) -> String {
    fn hex(out: &mut String, bytes: &[u8]) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for byte in bytes {
            out.push(char::from(DIGITS[usize::from(byte >> 4)]));
            out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
        }
    }
    let mut out = String::with_capacity(55);
    out.push_str("00-");
    hex(&mut out, &context.trace_id().to_bytes());
    out.push('-');
    hex(&mut out, &context.span_id().to_bytes());
    out.push_str(if context.is_sampled() { "-01" } else { "-00" });
    out
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

    /// The hand-written `traceparent` says what the SDK's propagator would, byte for byte.
    #[test]
    fn traceparent_is_what_the_sdks_propagator_writes() {
        use opentelemetry::propagation::TextMapPropagator;
        use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
        use opentelemetry_sdk::propagation::TraceContextPropagator;
        use std::collections::HashMap;

        let state = TraceState::from_key_value([("vendor", "x1")]).expect("tracestate");
        for (trace, span, flags, state) in [
            (
                0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128,
                0x00f0_67aa_0ba9_02b7_u64,
                TraceFlags::SAMPLED,
                TraceState::default(),
            ),
            (1, 1, TraceFlags::default(), TraceState::default()),
            (u128::MAX, u64::MAX, TraceFlags::new(0xff), state),
        ] {
            let context = SpanContext::new(TraceId::from(trace), SpanId::from(span), flags, true, state);
            let mut sdk = HashMap::new();
            let cx = opentelemetry::Context::new().with_remote_span_context(context.clone());
            TraceContextPropagator::new().inject_context(&cx, &mut sdk);
            assert_eq!(Some(&super::traceparent(&context)), sdk.get("traceparent"));
            assert_eq!(context.trace_state().header(), sdk["tracestate"]);
        }
    }
}
