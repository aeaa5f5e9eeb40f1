//! The publish span of one event (messaging semantic conventions, producer kind). It is a child
//! of the trace context stored with the outbox row (and linked to it), so it lands in the order's
//! trace however late and by whichever replica the event is published; the context the message
//! carries (`traceparent`, `tracestate`) is this span's, so a consumer continues the same trace.
//! The span covers sending and the broker's confirm, and says how the publish ended.

use tracing::field::Empty;

use super::publisher::{EXCHANGE, ROUTING_KEY};
use crate::domain::outbox::OutboxRow;
use crate::telemetry::traces::propagation::{self, TraceContext};

/// One event being published; [`Publishing::finish`] records how it ended.
pub struct Publishing {
    span: tracing::Span,
}

impl Publishing {
    pub fn start(row: &OutboxRow, body_size: usize) -> Self {
        // An order its trace did not sample got no span but its server span, and its event gets
        // none either: the message carries the stored context (flags `00`) as it is. Making one
        // cost the relay about as much as the server span costs the order (callgrind).
        if row.trace.as_ref().is_some_and(|stored| !stored.sampled()) {
            return Self { span: tracing::Span::none() };
        }
        // No parent from the relay's own context: the order's stored one is the parent.
        let span = tracing::info_span!(
            parent: None,
            "publish",
            otel.name = "publish orders",
            otel.kind = "producer",
            otel.status_code = Empty,
            messaging.system = "rabbitmq",
            messaging.operation.type = "send",
            messaging.operation.name = "publish",
            messaging.destination.name = EXCHANGE,
            messaging.rabbitmq.destination.routing_key = ROUTING_KEY,
            messaging.message.id = %row.order_id,
            messaging.message.body.size = body_size,
            outcome = Empty,
            error.type = Empty,
        );
        if let Some(stored) = &row.trace {
            propagation::continue_stored(&span, stored);
        }
        Self { span }
    }

    /// What the message carries: this span's context when this process traces, else the stored
    /// context as it was (a replica with tracing off still passes the order's trace on, and an
    /// order whose trace is not sampled gets its own context back, flags `00`).
    pub fn context(&self, row: &OutboxRow) -> Option<TraceContext> {
        propagation::of(&self.span).or_else(|| row.trace.clone())
    }

    /// `Ok`: the broker confirmed. `Err(kind)`: `refused` (nack, returned) or `lost` (the
    /// connection went, or no confirm in time: the row is given back and published later).
    pub fn finish(self, result: Result<(), &'static str>) {
        match result {
            Ok(()) => {
                self.span.record("outcome", "published");
            }
            Err(kind) => {
                self.span.record("outcome", kind);
                self.span.record("error.type", kind);
                self.span.record("otel.status_code", "ERROR");
            }
        }
    }
}
