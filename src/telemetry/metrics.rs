//! Every metric of docs/contracts.md, defined once: name, help text, buckets, and one small function
//! per event so call sites cannot misspell a name or a label. Labels never carry ids.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Counter, Histogram, SharedString, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "http_server_requests_total";
pub const HTTP_DURATION: &str = "http_server_request_duration_seconds";
pub const UPSTREAM_REQUESTS: &str = "upstream_requests_total";
pub const UPSTREAM_DURATION: &str = "upstream_request_duration_seconds";
pub const UPSTREAM_RETRIES: &str = "upstream_retries_total";
pub const UPSTREAM_NOT_FOUND_REMEMBERED: &str = "upstream_not_found_remembered_total";
pub const BREAKER_STATE: &str = "circuit_breaker_state";
pub const BREAKER_TRANSITIONS: &str = "circuit_breaker_transitions_total";
pub const BREAKER_KEYS_OPEN: &str = "circuit_breaker_keys_open";
pub const BREAKER_KEY_TRANSITIONS: &str = "circuit_breaker_key_transitions_total";
pub const BREAKER_MODE: &str = "circuit_breaker_mode";
pub const BREAKER_MODE_CHANGES: &str = "circuit_breaker_mode_changes_total";
pub const UPSTREAM_HEDGES: &str = "upstream_hedges_total";
pub const UPSTREAM_FALLBACKS: &str = "upstream_fallbacks_total";
pub const CONFIG_RELOADS: &str = "config_reloads_total";
pub const ORDERS_CREATED: &str = "orders_created_total";
pub const ORDERS_FAILED: &str = "orders_failed_total";
pub const ORDERS_REPLAYED: &str = "orders_replayed_total";
pub const OUTBOX_PENDING: &str = "outbox_pending";
pub const OUTBOX_PUBLISHED: &str = "outbox_published_total";
pub const OUTBOX_FAILURES: &str = "outbox_publish_failures_total";
pub const OUTBOX_LAG: &str = "outbox_publish_lag_seconds";
pub const SPANS_EXPORTED: &str = "otel_spans_exported_total";
pub const SPANS_DROPPED: &str = "otel_spans_dropped_total";
pub const OPEN_CONNECTIONS: &str = "http_server_open_connections";
pub const CONCURRENCY_LIMIT: &str = "http_server_concurrency_limit";

/// Seconds: sub-millisecond (open-circuit rejections) up past the 2 s deadline.
const BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 2.0, 2.5, 5.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once (later calls return the same handle) and keeps its
/// histograms from growing without bound.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist (a test harness); ours still renders what it saw.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .ok();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(HTTP_REQUESTS, "HTTP requests served, by method, matched route and status.");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "HTTP request latency, by method and matched route.");
    describe_counter!(UPSTREAM_REQUESTS, "Upstream attempts (and local rejections), by upstream and outcome.");
    describe_histogram!(UPSTREAM_DURATION, Unit::Seconds, "Duration of each upstream attempt.");
    describe_counter!(UPSTREAM_RETRIES, "Retries sent to an upstream after a failed attempt.");
    describe_counter!(UPSTREAM_NOT_FOUND_REMEMBERED, "Lookups answered unknown from a recent 404, with no request.");
    describe_gauge!(BREAKER_STATE, "Upstream-wide circuit breaker state: 1 for the current state, 0 for the others.");
    describe_counter!(BREAKER_TRANSITIONS, "Upstream-wide circuit breaker state changes.");
    describe_gauge!(BREAKER_KEYS_OPEN, "Per-key circuit breakers currently open or half-open.");
    describe_counter!(
        BREAKER_KEY_TRANSITIONS,
        "Per-key circuit breaker state changes, all keys of an upstream summed."
    );
    describe_gauge!(
        BREAKER_MODE,
        "Who decides an upstream's breakers: 1 for the current mode (auto, forced_open, forced_closed)."
    );
    describe_counter!(
        BREAKER_MODE_CHANGES,
        "Breaker modes set by an operator (admin API), by upstream and the mode set."
    );
    describe_counter!(UPSTREAM_HEDGES, "Second attempts sent because the first was slow (hedged lookups).");
    describe_counter!(
        UPSTREAM_FALLBACKS,
        "Lookups answered from the stale-if-error cache because the upstream failed."
    );
    describe_counter!(CONFIG_RELOADS, "Reloads of the resilience settings (admin API or SIGHUP), by result.");
    describe_counter!(ORDERS_CREATED, "Orders stored.");
    describe_counter!(ORDERS_FAILED, "Orders refused or failed, by reason (the problem type).");
    describe_counter!(ORDERS_REPLAYED, "Order responses replayed for a repeated Idempotency-Key (no new order).");
    describe_gauge!(OUTBOX_PENDING, "Outbox events not yet confirmed by the broker.");
    describe_counter!(OUTBOX_PUBLISHED, "Outbox events confirmed by the broker.");
    describe_counter!(OUTBOX_FAILURES, "Outbox publish attempts that failed (nack, return, lost connection).");
    describe_histogram!(OUTBOX_LAG, Unit::Seconds, "Time from an order's commit to its event's broker confirm.");
    describe_gauge!(OPEN_CONNECTIONS, "HTTP connections open now (lingering ones included), on every listener.");
    gauge!(OPEN_CONNECTIONS).increment(0.0);
    describe_gauge!(CONCURRENCY_LIMIT, "The edge's adaptive limit on order writes in flight, now.");
}

/// One request served. `method` and `route` come from fixed lists (the caller maps anything
/// else to `other` / `unmatched`), so no client input becomes a label.
pub fn http_request(method: &'static str, route: &'static str, status: u16, elapsed: Duration) {
    counter!(HTTP_REQUESTS, "method" => method, "route" => route, "status" => status_label(status)).increment(1);
    histogram!(HTTP_DURATION, "method" => method, "route" => route).record(elapsed.as_secs_f64());
}

/// The series [`http_request`] would update for one (method, route, status), as handles taken
/// once: the load-shedding path counts its 503s without building a label set per request.
pub fn http_request_handles(method: &'static str, route: &'static str, status: u16) -> (Counter, Histogram) {
    let requests = counter!(HTTP_REQUESTS, "method" => method, "route" => route, "status" => status_label(status));
    (requests, histogram!(HTTP_DURATION, "method" => method, "route" => route))
}

/// Sets `http_server_concurrency_limit` on every call, through a handle taken once.
pub fn concurrency_limit() -> impl Fn(usize) + Send + Sync + 'static {
    let gauge = gauge!(CONCURRENCY_LIMIT);
    move |limit| gauge.set(limit as f64)
}

/// Series that dashboards and alerts read exist at zero from start-up (Prometheus'
/// instrumentation advice): a panel shows 0 rather than "No data", and `increase()` sees the
/// first event. One function per producer, called when it is built.
pub fn upstream_attempts_registered(upstream: &'static str, outcomes: &[&'static str]) {
    for outcome in outcomes {
        counter!(UPSTREAM_REQUESTS, "upstream" => upstream, "outcome" => *outcome).increment(0);
    }
    counter!(UPSTREAM_NOT_FOUND_REMEMBERED, "upstream" => upstream).increment(0);
    // Registering the histogram is enough for its buckets to be exposed at 0.
    let _registered = histogram!(UPSTREAM_DURATION, "upstream" => upstream);
}

pub fn upstream_retries_registered(upstream: &'static str) {
    counter!(UPSTREAM_RETRIES, "upstream" => upstream).increment(0);
    counter!(UPSTREAM_HEDGES, "upstream" => upstream).increment(0);
}

pub fn upstream_fallbacks_registered(upstream: &'static str) {
    counter!(UPSTREAM_FALLBACKS, "upstream" => upstream).increment(0);
}

/// The mode gauge at `current` and the change counters at zero for every mode.
pub fn breaker_modes_registered(upstream: &'static str, current: &'static str, all: &[&'static str]) {
    breaker_mode(upstream, current, all);
    for mode in all {
        counter!(BREAKER_MODE_CHANGES, "upstream" => upstream, "mode" => *mode).increment(0);
    }
}

/// The reload counter at zero for every result.
pub fn config_reloads_registered(results: &[&'static str]) {
    for result in results {
        counter!(CONFIG_RELOADS, "result" => *result).increment(0);
    }
}

/// Both transition counters, upstream-wide and per key, for every `(from, to)` a breaker makes.
pub fn breaker_transitions_registered(upstream: &'static str, transitions: &[(&'static str, &'static str)]) {
    for (from, to) in transitions {
        counter!(BREAKER_TRANSITIONS, "upstream" => upstream, "from" => *from, "to" => *to).increment(0);
        counter!(BREAKER_KEY_TRANSITIONS, "upstream" => upstream, "from" => *from, "to" => *to).increment(0);
    }
}

pub fn orders_registered(failure_reasons: &[&'static str]) {
    counter!(ORDERS_CREATED).increment(0);
    for reason in failure_reasons {
        counter!(ORDERS_FAILED, "reason" => *reason).increment(0);
    }
}

pub fn connection_opened() {
    gauge!(OPEN_CONNECTIONS).increment(1.0);
}

pub fn connection_closed() {
    gauge!(OPEN_CONNECTIONS).decrement(1.0);
}

/// The status as a label, without allocating for the statuses this service answers. Any
/// other is a valid `StatusCode` (100–999) the service itself chose: bounded either way.
fn status_label(status: u16) -> SharedString {
    let known = match status {
        200 => "200",
        201 => "201",
        204 => "204",
        303 => "303",
        304 => "304",
        400 => "400",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        413 => "413",
        415 => "415",
        422 => "422",
        431 => "431",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        other => return SharedString::from(other.to_string()),
    };
    SharedString::const_str(known)
}

pub fn upstream_attempt(upstream: &'static str, outcome: &'static str, elapsed: Duration) {
    counter!(UPSTREAM_REQUESTS, "upstream" => upstream, "outcome" => outcome).increment(1);
    histogram!(UPSTREAM_DURATION, "upstream" => upstream).record(elapsed.as_secs_f64());
}

pub fn upstream_not_found_remembered(upstream: &'static str) {
    counter!(UPSTREAM_NOT_FOUND_REMEMBERED, "upstream" => upstream).increment(1);
}

pub fn upstream_retry(upstream: &'static str) {
    counter!(UPSTREAM_RETRIES, "upstream" => upstream).increment(1);
}

/// Sets the state gauge: 1 for `current`, 0 for the other states of `all`.
pub fn breaker_state(upstream: &'static str, current: &'static str, all: &[&'static str]) {
    for state in all {
        gauge!(BREAKER_STATE, "upstream" => upstream, "state" => *state).set(f64::from(u8::from(*state == current)));
    }
}

/// The upstream-wide breaker changed state (the state gauge is set by [`breaker_state`]).
pub fn breaker_transition(upstream: &'static str, from: &'static str, to: &'static str) {
    counter!(BREAKER_TRANSITIONS, "upstream" => upstream, "from" => from, "to" => to).increment(1);
}

/// One key's breaker changed state; the key itself is logged, never a label.
pub fn breaker_key_transition(upstream: &'static str, from: &'static str, to: &'static str) {
    counter!(BREAKER_KEY_TRANSITIONS, "upstream" => upstream, "from" => from, "to" => to).increment(1);
}

/// Sets the mode gauge: 1 for `current`, 0 for the other modes of `all`.
pub fn breaker_mode(upstream: &'static str, current: &'static str, all: &[&'static str]) {
    for mode in all {
        gauge!(BREAKER_MODE, "upstream" => upstream, "mode" => *mode).set(f64::from(u8::from(*mode == current)));
    }
}

/// An operator set an upstream's breaker mode.
pub fn breaker_mode_changed(upstream: &'static str, mode: &'static str) {
    counter!(BREAKER_MODE_CHANGES, "upstream" => upstream, "mode" => mode).increment(1);
}

pub fn upstream_hedge(upstream: &'static str) {
    counter!(UPSTREAM_HEDGES, "upstream" => upstream).increment(1);
}

pub fn upstream_fallback(upstream: &'static str) {
    counter!(UPSTREAM_FALLBACKS, "upstream" => upstream).increment(1);
}

/// A reload ended: `applied` (something changed), `unchanged` or `invalid` (old settings kept).
pub fn config_reload(result: &'static str) {
    counter!(CONFIG_RELOADS, "result" => result).increment(1);
}

pub fn breaker_keys_open(upstream: &'static str, open: usize) {
    gauge!(BREAKER_KEYS_OPEN, "upstream" => upstream).set(open as f64);
}

pub fn order_created() {
    counter!(ORDERS_CREATED).increment(1);
}

pub fn order_replayed() {
    counter!(ORDERS_REPLAYED).increment(1);
}

pub fn order_failed(reason: &'static str) {
    counter!(ORDERS_FAILED, "reason" => reason).increment(1);
}

/// Unpublished outbox rows, as counted after each relay pass.
/// Registers the outbox counters at zero when the relay starts, so `rate()` and alerts see a
/// series before the first event (a counter otherwise appears only when first incremented).
pub fn outbox_started() {
    counter!(OUTBOX_PUBLISHED).increment(0);
    counter!(OUTBOX_FAILURES).increment(0);
}

pub fn outbox_pending(pending: i64) {
    gauge!(OUTBOX_PENDING).set(pending as f64);
}

/// One event confirmed by the broker, `lag` after its order was committed.
pub fn outbox_published(lag: Duration) {
    counter!(OUTBOX_PUBLISHED).increment(1);
    histogram!(OUTBOX_LAG).record(lag.as_secs_f64());
}

/// `n` publish attempts that did not end in an ack (refused, returned, or connection lost).
pub fn outbox_failures(n: usize) {
    counter!(OUTBOX_FAILURES).increment(n as u64);
}

/// Trace export's counters, at zero once tracing starts (only then do they mean anything).
pub fn spans_registered() {
    describe_counter!(SPANS_EXPORTED, "Spans the OTLP collector accepted.");
    describe_counter!(
        SPANS_DROPPED,
        "Spans not delivered, by reason: queue_full (the bounded queue was full), export_failed, export_timeout."
    );
    counter!(SPANS_EXPORTED).increment(0);
    for reason in ["queue_full", "export_failed", "export_timeout"] {
        counter!(SPANS_DROPPED, "reason" => reason).increment(0);
    }
}

pub fn spans_exported(spans: usize) {
    counter!(SPANS_EXPORTED).increment(spans as u64);
}

pub fn spans_dropped(reason: &'static str, spans: usize) {
    counter!(SPANS_DROPPED, "reason" => reason).increment(spans as u64);
}
