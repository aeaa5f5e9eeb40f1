//! Logging: JSON lines when stdout is not a terminal (containers, CI), readable text when it is.
//! `RUST_LOG` sets log levels (default `info`); it filters the log only, never which spans are
//! traced. With tracing on, every line written inside a span carries `trace_id` and `span_id`.

use std::io::IsTerminal;

use opentelemetry_sdk::trace::SdkTracer;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use super::traces::correlate::Correlate;

/// Logging only (tests start several apps in one process: the first initialisation stays).
pub fn init_logging() {
    init(None);
}

/// Logging, and when `tracer` is given, spans handed to OpenTelemetry.
pub fn init(tracer: Option<SdkTracer>) {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The service's own spans, whatever RUST_LOG says: a quiet log must not blind the traces.
    let traced = Targets::new().with_target("order_service", tracing::Level::INFO);
    // Off: source location, thread name (a String per span) and busy/idle timings (two clock
    // reads per enter and exit): attributes nobody asked for, paid by every span, sampled or not.
    // Context activation (making the span's OpenTelemetry context current on every enter, that
    // is on every poll of an instrumented future) is off too: nothing here reads the current
    // OpenTelemetry context; propagation asks the `tracing` span for its context.
    let otel = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_filter(traced)
    });
    // Ids only exist with tracing on: without it, no log line pays for looking them up.
    let correlate = otel.is_some().then_some(Correlate);
    let registry = tracing_subscriber::registry().with(otel);
    let result = if std::io::stdout().is_terminal() {
        registry.with(correlate).with(fmt::layer().with_filter(filter())).try_init()
    } else {
        let json = fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false);
        registry.with(correlate).with(json.with_filter(filter())).try_init()
    };
    drop(result);
}
