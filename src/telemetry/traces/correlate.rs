//! Puts the OpenTelemetry `trace_id` and `span_id` on every log line written inside a span, so a
//! log line leads to its trace and back.
//!
//! The ids are added to the formatted fields (what the log formatter prints as `span`) of the
//! spans a log line is written in, when the first line is written in each — not when the span is
//! created (the HTTP layer sets the span's remote parent, the caller's `traceparent`, right after
//! creating it; reading the context earlier would fix the trace id before that), and not for
//! spans no line is written in: formatting ids costs every span that pays it. The log formats
//! only request spans (`telemetry::logging`), so those are the spans that get ids. This layer
//! must sit before the log formatter, which reads the fields.

use opentelemetry::trace::TraceContextExt;
use tracing::{Dispatch, Subscriber};
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::DefaultFields;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::telemetry::log_line::{self, JsonMembers};

/// Marks a span whose ids were added already.
struct Correlated;

pub struct Correlate;

impl<S> Layer<S> for Correlate
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else { return };
        let dispatch: Dispatch = tracing::dispatcher::get_default(Dispatch::clone);
        for span in scope {
            if span.extensions().get::<Correlated>().is_some() {
                // Its ancestors were correlated with it.
                break;
            }
            correlate(&span, &dispatch);
        }
    }
}

fn correlate<S>(span: &tracing_subscriber::registry::SpanRef<'_, S>, dispatch: &Dispatch)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    // Must run with no extensions lock held: it locks them itself.
    let Some(cx) = tracing_opentelemetry::get_otel_context(&span.id(), dispatch) else { return };
    let otel = cx.span();
    let context = otel.span_context();
    if !context.is_valid() {
        return;
    }
    let (trace_id, span_id) = (context.trace_id().to_string(), context.span_id().to_string());
    let mut extensions = span.extensions_mut();
    extensions.insert(Correlated);
    if let Some(fields) = extensions.get_mut::<FormattedFields<JsonMembers>>() {
        log_line::append_member(&mut fields.fields, "trace_id", &trace_id);
        log_line::append_member(&mut fields.fields, "span_id", &span_id);
    } else if let Some(fields) = extensions.get_mut::<FormattedFields<DefaultFields>>() {
        let sep = if fields.fields.is_empty() { "" } else { " " };
        fields.fields.push_str(&format!("{sep}trace_id={trace_id} span_id={span_id}"));
    }
}
