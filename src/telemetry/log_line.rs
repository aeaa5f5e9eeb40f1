//! The JSON log line, written straight to the output: the shape of tracing-subscriber's JSON
//! format (`timestamp`, `level`, the event's fields flattened, `target`, and `span` with the
//! fields and name of the span the line was written in), without its costs.
//!
//! Why not tracing-subscriber's own: it keeps a span's fields as a JSON object in a string, and
//! every line written inside the span parses that string back (serde_json) to copy it into the
//! line; every event field also goes through serde's map serializer. Every request writes a
//! line, so that was paid per request (docs/overload.md, seventh session). Here a span's fields
//! are kept as the *members* of a JSON object (`"a":1,"b":"x"`), copied into each line as they
//! are, and another field is appended with a comma.
//!
//! A span's fields named after OpenTelemetry's semantic conventions (`otel.*`, `http.*`,
//! `url.*`) are for the tracer and are left out of the line: the log has `method`, `route` and
//! `status` already.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The line's event format.
pub struct JsonLine;

/// A span's fields, as JSON object members.
pub struct JsonMembers;

impl<S> FormatEvent<S, JsonMembers> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonMembers>,
        mut out: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // A `log` record arrives as an event of target "log" with `log.*` fields: the line shows
        // its own target and level, as tracing-subscriber's formats do.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        out.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut out)?;
        write!(out, "\",\"level\":\"{}\"", meta.level())?;
        let mut members = Members { out: &mut out, result: Ok(()), skip_log_fields: normalized.is_some(), comma: true };
        event.record(&mut members);
        members.result?;
        out.write_str(",\"target\":")?;
        string(&mut out, meta.target())?;
        let span = event.parent().and_then(|id| ctx.span(id)).or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            out.write_str(",\"span\":{")?;
            if let Some(fields) = span.extensions().get::<FormattedFields<JsonMembers>>()
                && !fields.fields.is_empty()
            {
                write!(out, "{},", fields.fields)?;
            }
            out.write_str("\"name\":")?;
            string(&mut out, span.name())?;
            out.write_char('}')?;
        }
        out.write_str("}\n")
    }
}

impl<'writer> FormatFields<'writer> for JsonMembers {
    /// Into a new span's (empty) fields.
    fn format_fields<R: RecordFields>(&self, mut out: Writer<'writer>, fields: R) -> fmt::Result {
        let mut members = SpanMembers(Members { out: &mut out, result: Ok(()), skip_log_fields: false, comma: false });
        fields.record(&mut members);
        members.0.result
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let comma = !current.fields.is_empty();
        let mut out = current.as_writer();
        let mut members = SpanMembers(Members { out: &mut out, result: Ok(()), skip_log_fields: false, comma });
        fields.record(&mut members);
        members.0.result
    }
}

/// Appends `key` and the JSON members of a span already formatted by [`JsonMembers`] (the
/// trace-id layer adds `trace_id` and `span_id` so).
pub fn append_member(members: &mut String, key: &str, value: &str) {
    let comma = if members.is_empty() { "" } else { "," };
    let mut out = Writer::new(members);
    // Writing to a String cannot fail.
    let _ = out.write_str(comma).and_then(|()| member(&mut out, key, |out| string(out, value)));
}

/// Writes each field as `"name":value`, after a comma when something precedes it.
struct Members<'a, 'w> {
    out: &'a mut Writer<'w>,
    result: fmt::Result,
    skip_log_fields: bool,
    /// A member (or, in a line, `level`) precedes the next one.
    comma: bool,
}

impl Members<'_, '_> {
    fn write(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() || (self.skip_log_fields && field.name().starts_with("log.")) {
            return;
        }
        let comma = if self.comma { "," } else { "" };
        self.comma = true;
        self.result = self.out.write_str(comma).and_then(|()| member(self.out, field.name(), value));
    }
}

impl Visit for Members<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, |out| string(out, value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.write(field, |out| write!(out, "{value}"));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.write(field, |out| write!(out, "{value}"));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.write(field, |out| write!(out, "{value}"));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN nor infinity (serde_json writes null too).
        self.write(field, |out| if value.is_finite() { write!(out, "{value}") } else { out.write_str("null") });
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

/// A span's fields: the semantic-convention ones left out, and no comma before the first.
struct SpanMembers<'a, 'w>(Members<'a, 'w>);

impl SpanMembers<'_, '_> {
    fn for_log(field: &Field) -> bool {
        let name = field.name();
        !(name.starts_with("otel.") || name.starts_with("http.") || name.starts_with("url."))
    }
}

macro_rules! span_member {
    ($($method:ident: $ty:ty),*) => {
        $(fn $method(&mut self, field: &Field, value: $ty) {
            if SpanMembers::for_log(field) {
                self.0.$method(field, value);
            }
        })*
    };
}

impl Visit for SpanMembers<'_, '_> {
    span_member!(record_str: &str, record_i64: i64, record_u64: u64, record_bool: bool, record_f64: f64,
                 record_debug: &dyn fmt::Debug);
}

fn member(out: &mut Writer<'_>, key: &str, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) -> fmt::Result {
    string(out, key)?;
    out.write_char(':')?;
    value(out)
}

fn string(out: &mut Writer<'_>, value: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(value)?;
    out.write_char('"')
}

/// Escapes what it is given for the inside of a JSON string (RFC 8259 §7).
struct Escaped<'a, 'w>(&'a mut Writer<'w>);

impl fmt::Write for Escaped<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, byte) in s.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + 1;
        }
        self.0.write_str(&s[plain..])
    }
}

#[cfg(test)]
#[path = "log_line_tests.rs"]
pub(super) mod tests;
