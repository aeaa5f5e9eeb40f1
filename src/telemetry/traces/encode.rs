//! An OTLP `ExportTraceServiceRequest`, protobuf-encoded straight from the SDK's `SpanData`.
//!
//! Why our own: opentelemetry-otlp first turns every span into opentelemetry-proto's message
//! structs (a `String` for each attribute key and value, a `Vec` for each list), then prost
//! encodes them and they are dropped: 121k of the 289k instructions a sampled order adds
//! (docs/tracing.md). This writes the same bytes' meaning (the unit tests decode it with
//! opentelemetry-proto and compare with that crate's own conversion) without the structs.
//!
//! Field numbers: opentelemetry-proto's `trace/v1/trace.proto`, `common/v1/common.proto`,
//! `resource/v1/resource.proto`.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;

/// Appends the request for `spans` (one `ResourceSpans`, a `ScopeSpans` per instrumentation
/// scope in the order they first appear) to `out`.
pub fn export_request(spans: &[SpanData], resource: &Resource, out: &mut Vec<u8>) {
    message(out, 1, |out| {
        message(out, 1, |out| {
            for (key, value) in resource.iter() {
                message(out, 1, |out| key_value(out, key.as_str(), value));
            }
        });
        let mut written = vec![false; spans.len()];
        for first in 0..spans.len() {
            if written[first] {
                continue;
            }
            let scope = &spans[first].instrumentation_scope;
            message(out, 2, |out| {
                message(out, 1, |out| instrumentation_scope(out, scope));
                for (index, span) in spans.iter().enumerate().skip(first) {
                    if !written[index] && span.instrumentation_scope == *scope {
                        written[index] = true;
                        message(out, 2, |out| span_message(out, span));
                    }
                }
                string(out, 3, scope.schema_url().unwrap_or_default());
            });
        }
        string(out, 3, resource.schema_url().unwrap_or_default());
    });
}

fn instrumentation_scope(out: &mut Vec<u8>, scope: &InstrumentationScope) {
    string(out, 1, scope.name());
    string(out, 2, scope.version().unwrap_or_default());
    for attribute in scope.attributes() {
        message(out, 3, |out| key_value(out, attribute.key.as_str(), &attribute.value));
    }
}

fn span_message(out: &mut Vec<u8>, span: &SpanData) {
    let context = &span.span_context;
    bytes(out, 1, &context.trace_id().to_bytes());
    bytes(out, 2, &context.span_id().to_bytes());
    string(out, 3, &context.trace_state().header());
    if span.parent_span_id != SpanId::INVALID {
        bytes(out, 4, &span.parent_span_id.to_bytes());
    }
    string(out, 5, &span.name);
    varint_field(out, 6, kind(&span.span_kind));
    fixed64(out, 7, nanos(span.start_time));
    fixed64(out, 8, nanos(span.end_time));
    attributes(out, 9, &span.attributes);
    varint_field(out, 10, u64::from(span.dropped_attributes_count));
    for event in span.events.iter() {
        message(out, 11, |out| {
            fixed64(out, 1, nanos(event.timestamp));
            string(out, 2, &event.name);
            attributes(out, 3, &event.attributes);
            varint_field(out, 4, u64::from(event.dropped_attributes_count));
        });
    }
    varint_field(out, 12, u64::from(span.events.dropped_count));
    for link in span.links.iter() {
        message(out, 13, |out| {
            bytes(out, 1, &link.span_context.trace_id().to_bytes());
            bytes(out, 2, &link.span_context.span_id().to_bytes());
            string(out, 3, &link.span_context.trace_state().header());
            attributes(out, 4, &link.attributes);
            varint_field(out, 5, u64::from(link.dropped_attributes_count));
            fixed32(out, 6, flags(&link.span_context, link.span_context.is_remote()));
        });
    }
    varint_field(out, 14, u64::from(span.links.dropped_count));
    // Always present, as opentelemetry-proto sends it: an unset status is an empty message.
    message(out, 15, |out| {
        let (message, code) = match &span.status {
            Status::Unset => ("", 0),
            Status::Ok => ("", 1),
            Status::Error { description } => (description.as_ref(), 2),
        };
        string(out, 2, message);
        varint_field(out, 3, code);
    });
    fixed32(out, 16, flags(context, span.parent_span_is_remote));
}

/// The W3C trace flags, and the OTLP bits that say whether the parent (or a link) is remote.
fn flags(context: &SpanContext, remote: bool) -> u32 {
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    u32::from(context.trace_flags().to_u8()) | HAS_IS_REMOTE | if remote { IS_REMOTE } else { 0 }
}

fn kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos() as u64)
}

fn attributes(out: &mut Vec<u8>, field: u32, attributes: &[KeyValue]) {
    for attribute in attributes {
        message(out, field, |out| key_value(out, attribute.key.as_str(), &attribute.value));
    }
}

/// A `KeyValue`'s fields: key (1) and an `AnyValue` (2).
fn key_value(out: &mut Vec<u8>, key: &str, value: &Value) {
    string(out, 1, key);
    message(out, 2, |out| any_value(out, value));
}

/// An `AnyValue`'s one field. Its `oneof` is written even when the value is the default (an
/// empty string, `false`, 0), as prost does: that is what says which kind of value it is.
fn any_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(text) => {
            key(out, 1, LEN);
            length_delimited(out, text.as_str().as_bytes());
        }
        Value::Bool(flag) => {
            key(out, 2, VARINT);
            varint(out, u64::from(*flag));
        }
        Value::I64(number) => {
            key(out, 3, VARINT);
            varint(out, *number as u64);
        }
        Value::F64(number) => {
            key(out, 4, I64);
            out.extend_from_slice(&number.to_bits().to_le_bytes());
        }
        Value::Array(array) => message(out, 5, |out| match array {
            Array::Bool(values) => values.iter().for_each(|v| message(out, 1, |out| any_value(out, &Value::Bool(*v)))),
            Array::I64(values) => values.iter().for_each(|v| message(out, 1, |out| any_value(out, &Value::I64(*v)))),
            Array::F64(values) => values.iter().for_each(|v| message(out, 1, |out| any_value(out, &Value::F64(*v)))),
            Array::String(values) => values.iter().for_each(|v| {
                message(out, 1, |out| {
                    key(out, 1, LEN);
                    length_delimited(out, v.as_str().as_bytes());
                })
            }),
            // A kind of array newer than this encoder: its text, rather than a panic.
            other => message(out, 1, |out| any_value(out, &Value::String(other.to_string().into()))),
        }),
        other => {
            key(out, 1, LEN);
            length_delimited(out, other.to_string().as_bytes());
        }
    }
}

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

fn key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    varint(out, u64::from(field) << 3 | u64::from(wire_type));
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A scalar field; omitted when 0, as proto3 does.
fn varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        key(out, field, VARINT);
        varint(out, value);
    }
}

fn fixed64(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        key(out, field, I64);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn fixed32(out: &mut Vec<u8>, field: u32, value: u32) {
    if value != 0 {
        key(out, field, I32);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// A string or bytes field; omitted when empty, as proto3 does.
fn string(out: &mut Vec<u8>, field: u32, text: &str) {
    bytes(out, field, text.as_bytes());
}

fn bytes(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    if !value.is_empty() {
        key(out, field, LEN);
        length_delimited(out, value);
    }
}

fn length_delimited(out: &mut Vec<u8>, value: &[u8]) {
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// A nested message, always written (an empty one too): `body` writes its fields after a
/// one-byte length, which grows in place once the length is known to need more.
fn message(out: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    key(out, field, LEN);
    let at = out.len();
    out.push(0);
    body(out);
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
    } else {
        // Room for the longer varint: the body moves right once, then the length fills the gap.
        let width = (u64::BITS - (len as u64).leading_zeros()).div_ceil(7) as usize;
        out.splice(at..at + 1, std::iter::repeat_n(0, width));
        let mut rest = len as u64;
        for (i, byte) in out[at..at + width].iter_mut().enumerate() {
            *byte = (rest as u8 & 0x7f) | if i + 1 < width { 0x80 } else { 0 };
            rest >>= 7;
        }
    }
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
