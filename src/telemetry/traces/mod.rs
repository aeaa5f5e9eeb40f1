//! OpenTelemetry traces over OTLP/HTTP, off unless an endpoint is configured (`OTEL_*`, see
//! `config::TracingConfig`). Spans are ordinary `tracing` spans with the semantic conventions'
//! field names; `tracing-opentelemetry` turns them into OpenTelemetry spans.
//!
//! - [`queue`] — the bounded span queue and its exporting task (drops are counted, never queued
//!   without bound, never retried).
//! - [`export`] — OTLP/HTTP, protobuf written by [`encode`] straight from the spans.
//! - [`correlate`] — `trace_id` / `span_id` on every log line written inside a span.
//! - [`propagation`] — the W3C `traceparent` taken from requests and given to upstream calls.

pub mod correlate;
pub mod encode;
pub mod export;
pub mod propagation;
pub mod queue;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler as SdkSampler, SdkTracer, SdkTracerProvider, SpanExporter as _};

use crate::config::{Sampler, TracingConfig};
use crate::telemetry::metrics;
use queue::{Flusher, Outcomes, QueueProcessor, QueueSettings};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are being exported (so upstream calls carry our own span's context).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Keeps the exporter alive; [`TracingGuard::shutdown`] sends what is queued at exit.
pub struct TracingGuard {
    provider: SdkTracerProvider,
    flusher: Flusher,
}

impl TracingGuard {
    /// Exports the spans still queued, for at most `within` (a dead collector cannot hold the exit).
    pub async fn shutdown(self, within: Duration) {
        self.flusher.flush(within).await;
        drop(self.provider);
        ENABLED.store(false, Ordering::Relaxed);
    }
}

/// The tracer the logging layer hands spans to, or `None` when tracing is off. Must run inside
/// the tokio runtime (the exporting task is spawned on it).
pub fn start(config: &TracingConfig) -> Option<(SdkTracer, TracingGuard)> {
    let endpoint = config.endpoint.as_ref()?;
    let mut exporter = match export::OtlpHttp::new(endpoint.clone(), &config.headers, config.export_timeout) {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("order-service: tracing off: cannot build the OTLP exporter: {error}");
            return None;
        }
    };
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    exporter.set_resource(&resource);
    let settings = QueueSettings {
        max_queue_size: config.max_queue_size,
        max_batch: config.max_export_batch_size,
        delay: config.schedule_delay,
        export_timeout: config.export_timeout,
    };
    metrics::spans_registered();
    let (processor, flusher) = QueueProcessor::spawn(exporter, settings, Arc::new(SpanMetrics));
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler(config.sampler))
        .with_resource(resource)
        .build();
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    ENABLED.store(true, Ordering::Relaxed);
    let tracer = provider.tracer("order-service");
    Some((tracer, TracingGuard { provider, flusher }))
}

fn sampler(sampler: Sampler) -> SdkSampler {
    let parent_based = |root: SdkSampler| SdkSampler::ParentBased(Box::new(root));
    match sampler {
        Sampler::AlwaysOn => SdkSampler::AlwaysOn,
        Sampler::AlwaysOff => SdkSampler::AlwaysOff,
        Sampler::Ratio(ratio) => SdkSampler::TraceIdRatioBased(ratio),
        Sampler::ParentBasedOn => parent_based(SdkSampler::AlwaysOn),
        Sampler::ParentBasedOff => parent_based(SdkSampler::AlwaysOff),
        Sampler::ParentBasedRatio(ratio) => parent_based(SdkSampler::TraceIdRatioBased(ratio)),
    }
}

/// Spans exported and dropped, as metrics.
struct SpanMetrics;

impl Outcomes for SpanMetrics {
    fn exported(&self, spans: usize) {
        metrics::spans_exported(spans);
    }

    fn dropped(&self, reason: &'static str, spans: usize) {
        metrics::spans_dropped(reason, spans);
    }
}
