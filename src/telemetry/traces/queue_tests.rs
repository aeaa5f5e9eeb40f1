//! The queue on a paused clock, with an exporter that answers as told.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use opentelemetry::trace::{Span as _, Tracer, TracerProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;

use super::*;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Collector {
    Up,
    Refuses,
    Hangs,
}

#[derive(Debug)]
struct Scripted {
    collector: Collector,
    batches: Arc<Mutex<Vec<usize>>>,
}

impl SpanExporter for Scripted {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        match self.collector {
            Collector::Up => {
                self.batches.lock().expect("lock").push(batch.len());
                Ok(())
            }
            Collector::Refuses => Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure("refused".into())),
            Collector::Hangs => std::future::pending().await,
        }
    }
}

#[derive(Default)]
struct Counted {
    exported: AtomicUsize,
    dropped: Mutex<Vec<(&'static str, usize)>>,
}

impl Outcomes for Counted {
    fn exported(&self, spans: usize) {
        self.exported.fetch_add(spans, Ordering::SeqCst);
    }
    fn dropped(&self, reason: &'static str, spans: usize) {
        self.dropped.lock().expect("lock").push((reason, spans));
    }
}

impl Counted {
    fn dropped_for(&self, reason: &str) -> usize {
        self.dropped.lock().expect("lock").iter().filter(|(r, _)| *r == reason).map(|(_, n)| n).sum()
    }
}

const SETTINGS: QueueSettings = QueueSettings {
    max_queue_size: 8,
    max_batch: 3,
    delay: Duration::from_millis(100),
    export_timeout: Duration::from_secs(5),
};

fn provider(collector: Collector) -> (SdkTracerProvider, Flusher, Arc<Counted>, Arc<Mutex<Vec<usize>>>) {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let counted = Arc::new(Counted::default());
    let exporter = Scripted { collector, batches: Arc::clone(&batches) };
    let (processor, flusher) = QueueProcessor::spawn(exporter, SETTINGS, Arc::clone(&counted) as Arc<dyn Outcomes>);
    (SdkTracerProvider::builder().with_span_processor(processor).build(), flusher, counted, batches)
}

fn end_spans(provider: &SdkTracerProvider, n: usize) {
    let tracer = provider.tracer("test");
    for _ in 0..n {
        tracer.start("span").end();
    }
}

#[tokio::test(start_paused = true)]
async fn spans_leave_in_batches_after_the_delay() {
    let (provider, _flusher, counted, batches) = provider(Collector::Up);
    end_spans(&provider, 7);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(*batches.lock().expect("lock"), [3, 3, 1], "batches of at most max_batch");
    assert_eq!(counted.exported.load(Ordering::SeqCst), 7);
    assert!(counted.dropped.lock().expect("lock").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_refusing_collector_drops_and_counts_without_retrying() {
    let (provider, _flusher, counted, _) = provider(Collector::Refuses);
    end_spans(&provider, 5);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(counted.dropped_for("export_failed"), 5);
    assert_eq!(counted.exported.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_collector_never_grows_the_queue_past_its_bound() {
    let (provider, _flusher, counted, _) = provider(Collector::Hangs);
    // One batch is stuck in the export, the queue holds at most 8 more: the rest are dropped
    // at once, without blocking the code that ends them.
    end_spans(&provider, 100);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let dropped = counted.dropped_for("queue_full");
    assert!((100 - 8 - 3..=100 - 8).contains(&dropped), "dropped {dropped}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(counted.dropped_for("export_timeout") >= 1, "the stuck export timed out and its spans were counted");
}

#[tokio::test(start_paused = true)]
async fn a_flush_exports_what_is_queued_now() {
    let (provider, flusher, counted, _) = provider(Collector::Up);
    end_spans(&provider, 2);
    flusher.flush(Duration::from_secs(1)).await;
    assert_eq!(counted.exported.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn unsampled_spans_are_not_queued() {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let counted = Arc::new(Counted::default());
    let exporter = Scripted { collector: Collector::Up, batches: Arc::clone(&batches) };
    let (processor, flusher) = QueueProcessor::spawn(exporter, SETTINGS, Arc::clone(&counted) as Arc<dyn Outcomes>);
    let provider = SdkTracerProvider::builder()
        .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOff)
        .with_span_processor(processor)
        .build();
    end_spans(&provider, 3);
    flusher.flush(Duration::from_secs(1)).await;
    assert_eq!(counted.exported.load(Ordering::SeqCst), 0);
    assert!(batches.lock().expect("lock").is_empty());
}
