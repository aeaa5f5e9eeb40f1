//! The span processor: a bounded queue in front of the exporter, drained in batches by one task.
//!
//! Why our own: the SDK's `BatchSpanProcessor` keeps its drop count private (it only logs it at
//! shutdown) and runs its exporter on a thread of its own, which needs reqwest's blocking client.
//! This one never blocks the request that ends a span (`try_send`), never holds more than
//! `max_queue_size` spans, exports on the service's runtime with a timeout, and counts every span
//! it could not deliver — the queue was full, or the export failed or timed out (no retries: a
//! dead collector must cost nothing but the dropped spans).

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, oneshot};

/// Reports what happened to spans; the service passes its metrics, tests a recorder.
pub trait Outcomes: Send + Sync + 'static {
    fn exported(&self, spans: usize);
    fn dropped(&self, reason: &'static str, spans: usize);
}

enum Message {
    Span(Box<SpanData>),
    /// Export what is queued now, then answer.
    Flush(oneshot::Sender<()>),
}

#[derive(Debug, Clone, Copy)]
pub struct QueueSettings {
    pub max_queue_size: usize,
    pub max_batch: usize,
    pub delay: Duration,
    pub export_timeout: Duration,
}

pub struct QueueProcessor {
    sender: mpsc::Sender<Message>,
    outcomes: std::sync::Arc<dyn Outcomes>,
}

impl std::fmt::Debug for QueueProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueProcessor").finish_non_exhaustive()
    }
}

impl QueueProcessor {
    /// Spawns the exporting task on the current tokio runtime.
    pub fn spawn<E: SpanExporter + 'static>(
        exporter: E,
        settings: QueueSettings,
        outcomes: std::sync::Arc<dyn Outcomes>,
    ) -> (Self, Flusher) {
        let (sender, receiver) = mpsc::channel(settings.max_queue_size.max(1));
        tokio::spawn(drain(exporter, receiver, settings, std::sync::Arc::clone(&outcomes)));
        (Self { sender: sender.clone(), outcomes }, Flusher { sender })
    }
}

/// Asks the task to export what is queued (at shutdown).
#[derive(Clone)]
pub struct Flusher {
    sender: mpsc::Sender<Message>,
}

impl Flusher {
    /// Waits at most `within` for the queued spans to be exported (or dropped).
    pub async fn flush(&self, within: Duration) {
        let (done, finished) = oneshot::channel();
        let sent = tokio::time::timeout(within, self.sender.send(Message::Flush(done))).await;
        if matches!(sent, Ok(Ok(()))) {
            let _ = tokio::time::timeout(within, finished).await;
        }
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.sender.try_send(Message::Span(Box::new(span))).is_err() {
            self.outcomes.dropped("queue_full", 1);
        }
    }

    /// Synchronous by the SDK's contract; the service flushes through [`Flusher`] instead.
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

async fn drain<E: SpanExporter>(
    exporter: E,
    mut receiver: mpsc::Receiver<Message>,
    settings: QueueSettings,
    outcomes: std::sync::Arc<dyn Outcomes>,
) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(settings.max_batch);
    loop {
        // Wait for the first span (or a flush), then gather more for at most `delay`.
        let mut flush = None;
        match receiver.recv().await {
            None => break,
            Some(Message::Span(span)) => batch.push(*span),
            Some(Message::Flush(done)) => flush = Some(done),
        }
        let gather_until = tokio::time::Instant::now() + settings.delay;
        while flush.is_none() && batch.len() < settings.max_batch {
            match tokio::time::timeout_at(gather_until, receiver.recv()).await {
                Ok(Some(Message::Span(span))) => batch.push(*span),
                Ok(Some(Message::Flush(done))) => flush = Some(done),
                Ok(None) | Err(_) => break,
            }
        }
        if flush.is_some() {
            // Everything queued before the flush request is in the channel: take it too.
            while let Ok(Message::Span(span)) = receiver.try_recv() {
                batch.push(*span);
            }
        }
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(settings.max_batch.max(1)));
            let chunk = std::mem::replace(&mut batch, rest);
            let n = chunk.len();
            match tokio::time::timeout(settings.export_timeout, exporter.export(chunk)).await {
                Ok(Ok(())) => outcomes.exported(n),
                Ok(Err(error)) => {
                    tracing::debug!(%error, spans = n, "span export failed; spans dropped");
                    outcomes.dropped("export_failed", n);
                }
                Err(_) => outcomes.dropped("export_timeout", n),
            }
        }
        if let Some(done) = flush {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
