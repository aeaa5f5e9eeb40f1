//! Logging: JSON lines when stdout is not a terminal (containers, CI), readable text when it is.
//! `RUST_LOG` sets log levels (default `info`); it filters the log only, never which spans are
//! traced. With tracing on, every line written inside a span carries `trace_id` and `span_id`.

use std::io::IsTerminal;

use opentelemetry_sdk::trace::SdkTracer;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter, Targets, dynamic_filter_fn, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Filter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry, fmt};

use super::context;
use super::log_line::{JsonLine, JsonMembers};
use super::traces::correlate::Correlate;

/// Logging only (tests start several apps in one process: the first initialisation stays).
pub fn init_logging() {
    init(None);
}

/// Logging, and when `tracer` is given, spans handed to OpenTelemetry.
pub fn init(tracer: Option<SdkTracer>) {
    let levels = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let correlate = tracer.is_some().then_some(Correlate);
    let registry = traced_registry(tracer, &levels());
    let result = if std::io::stdout().is_terminal() {
        registry.with(log_layer(correlate, fmt::layer(), levels())).try_init()
    } else {
        registry.with(log_layer(correlate, json(std::io::stdout), levels())).try_init()
    };
    drop(result);
}

/// The registry with the tracer, when `tracer` is given; `init` puts the log layer on top (tests
/// too, with their own writer). `levels` is what the log layer will write.
fn traced_registry(
    tracer: Option<SdkTracer>,
    levels: &EnvFilter,
) -> impl Subscriber + for<'a> LookupSpan<'a> + Send + Sync {
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
            .with_filter(traced())
    });
    // A per-layer filter that answers per span (the tracer's, which asks whether the request is
    // sampled) hides a span from its layer but does not stop it being made: the registry still
    // made every inner span of an unsampled order, and each layer's filter then looked it up on
    // every enter and exit. A global filter does stop it (test
    // `an_unsampled_request_makes_no_inner_span`). It passes every event, and its level hint
    // must say so, as far as anyone listens: the log's levels, and the tracer's INFO.
    let wanted = Filter::<Registry>::max_level_hint(levels).unwrap_or(LevelFilter::TRACE).max(LevelFilter::INFO);
    let unsampled = otel.is_some().then(|| {
        dynamic_filter_fn(|metadata: &Metadata<'_>, _: &tracing_subscriber::layer::Context<'_, _>| made(metadata))
            .with_max_level_hint(wanted)
    });
    tracing_subscriber::registry().with(unsampled).with(otel)
}

/// The log layer, behind the trace-id layer when tracing is on, both under the one filter of
/// what the log writes. The trace-id layer must see exactly that (unfiltered, it would ask for
/// every level of every crate), and sharing the filter halves what the two cost per span: a
/// filtered layer looks its span up in the registry on every enter and exit, which is every poll
/// of an instrumented future, and `EnvFilter` takes a lock there too (docs/tracing.md).
fn log_layer<S, L>(correlate: Option<Correlate>, log: L, levels: EnvFilter) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S> + Send + Sync + 'static,
{
    Layer::<S>::and_then(correlate, log).with_filter(log_filter(levels))
}

/// The service's own spans, whatever RUST_LOG says: a quiet log must not blind the traces.
/// (Which of them a request makes at all is [`made`]'s, in the global filter.)
fn traced<S: Subscriber>() -> impl Filter<S> {
    Targets::new().with_target("order_service", tracing::Level::INFO)
}

/// Inside a request whose trace is not sampled, only its server span is made; events always
/// pass. That depends on the request, not the callsite, so it is asked per span (a dynamic
/// filter): a plain `filter_fn`'s answer is cached per callsite, and the first order's decision
/// would stick for every later one.
fn made(metadata: &Metadata<'_>) -> bool {
    !metadata.is_span() || metadata.name() == "request" || context::sampled()
}

/// The spans whose fields a log line shows: the request's (its id, method and route). The log
/// layer keeps a formatted copy of the fields of every span it sees, re-parsed and re-written
/// on each `record` (tracing-subscriber's JSON fields), about 30 µs of CPU per span: for the
/// six inner spans of an order (place order, lookups, attempts, the database) that was a fifth
/// of an order's CPU (measured A/B, docs/overload.md "Orders per core"). A line written inside
/// an inner span shows the request span, its nearest logged ancestor; the inner spans still
/// reach the tracer when tracing is on.
/// A line is the event's fields, flattened, and the fields of the span it was written in
/// ([`super::log_line`]).
fn json<S, W>(writer: W) -> fmt::Layer<S, JsonMembers, JsonLine, W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fmt::layer().fmt_fields(JsonMembers).event_format(JsonLine).with_writer(writer)
}

/// `levels` (`RUST_LOG`) for events; of spans, only [`LOGGED_SPANS`].
///
/// The span filter passes every level, and says so with its hint. A `filter_fn` has no level
/// hint, a filter combined with one has none either, and a subscriber without a hint is taken
/// to want TRACE. Every library's debug and trace callsites then ask the subscriber whether they
/// are wanted, and some prepare their message first: sqlx formatted each statement's SQL for a
/// debug line nobody wrote, 1.9 % of the service's CPU (docs/overload.md, sixth session). With
/// the hint, the subscriber's level is `RUST_LOG`'s, and those callsites stop at one compare.
fn log_filter<S>(levels: EnvFilter) -> impl Filter<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    levels.and(filter_fn(logged).with_max_level_hint(LevelFilter::TRACE))
}

const LOGGED_SPANS: [&str; 1] = ["request"];

fn logged(metadata: &Metadata<'_>) -> bool {
    !metadata.is_span() || LOGGED_SPANS.contains(&metadata.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::log_line::tests::Lines;

    /// The subscriber's level hint is what libraries read before preparing a debug line; it
    /// must be `RUST_LOG`'s (and the tracer's INFO), never "everything".
    #[test]
    fn the_subscriber_wants_no_level_below_rust_log_nor_the_tracer() {
        let hint = |levels: &str| Filter::<Registry>::max_level_hint(&log_filter::<Registry>(EnvFilter::new(levels)));
        assert_eq!(hint("warn"), Some(LevelFilter::WARN));
        assert_eq!(hint("info,sqlx=debug"), Some(LevelFilter::DEBUG));
        assert_eq!(Filter::<Registry>::max_level_hint(&traced::<Registry>()), Some(LevelFilter::INFO));

        // As `init` composes them, with tracing off and on (a tracer that exports nowhere).
        let warn = || EnvFilter::new("warn");
        let off = traced_registry(None, &warn()).with(log_layer(None, json(std::io::sink), warn()));
        assert_eq!(off.max_level_hint(), Some(LevelFilter::WARN));
        let tracer = opentelemetry::trace::TracerProvider::tracer(
            &opentelemetry_sdk::trace::SdkTracerProvider::builder().build(),
            "test",
        );
        let on = traced_registry(Some(tracer), &warn()).with(log_layer(Some(Correlate), json(std::io::sink), warn()));
        assert_eq!(on.max_level_hint(), Some(LevelFilter::INFO));
    }

    /// Held by the tests that set a subscriber with a per-span filter and those that check a span
    /// is not made. While any subscriber answers per span, every callsite asks every subscriber
    /// per span, and a per-layer filter's "no" then hides the span without stopping it.
    static PER_SPAN: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Inside a request whose trace is not sampled, no layer wants an inner span, so none is
    /// made: the tracer's filter says no, and the log's takes only request spans.
    #[test]
    fn an_unsampled_request_makes_no_inner_span() {
        let _serial = PER_SPAN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tracer = opentelemetry::trace::TracerProvider::tracer(
            &opentelemetry_sdk::trace::SdkTracerProvider::builder().build(),
            "test",
        );
        let info = || EnvFilter::new("info");
        let subscriber =
            traced_registry(Some(tracer), &info()).with(log_layer(Some(Correlate), json(std::io::sink), info()));
        let _default = tracing::subscriber::set_default(subscriber);
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let unsampled = context::Correlation { sampled: false, ..context::Correlation::default() };
        let (request, inner) = runtime.block_on(context::scope(unsampled, async {
            (tracing::info_span!("request"), tracing::info_span!("place_order"))
        }));
        assert!(!request.is_disabled(), "the server span is made");
        assert!(inner.is_disabled(), "no inner span");
        let sampled = runtime
            .block_on(context::scope(context::Correlation::default(), async { tracing::info_span!("place_order") }));
        assert!(!sampled.is_disabled(), "a sampled request's inner span is made");
    }

    #[test]
    fn inner_spans_are_not_logged_and_a_line_inside_one_shows_the_request_span() {
        let _serial = PER_SPAN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let lines = Lines::default();
        let writer = lines.clone();
        let log = json(move || writer.clone()).with_filter(log_filter(EnvFilter::new("info")));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(log), || {
            let request = tracing::info_span!("request", request_id = "r-1", route = "/v1/orders");
            let _request = request.enter();
            let attempt = tracing::info_span!("attempt", upstream = "user", url.full = "http://users/7c11e1ce2741");
            assert!(attempt.is_disabled(), "the log alone makes no inner span (nor pays for its fields)");
            let _attempt = attempt.enter();
            tracing::warn!(status = 503, "upstream answered 503");
            tracing::debug!("below the level: not written");
        });
        let text = String::from_utf8(lines.0.lock().expect("lines").clone()).expect("utf-8");
        let written: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
        assert_eq!(written.len(), 1, "{text}");
        assert_eq!(written[0]["message"], "upstream answered 503");
        assert_eq!(written[0]["status"], 503);
        assert_eq!(written[0]["span"]["request_id"], "r-1", "the request span's id: {text}");
        assert_eq!(written[0]["span"]["name"], "request");
        assert!(written[0]["span"].get("upstream").is_none(), "no inner span's fields: {text}");
    }
}
