//! `outbox_pending` while the relay is off (no `AMQP_URL`): events then wait in the outbox, and
//! a growing backlog is exactly what an operator needs to see. With the relay on, the relay
//! counts after its passes (also while the broker is away), so this task is not started.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::OutboxStore;
use crate::telemetry::metrics;

/// Counts unpublished rows every `every` (the first count at once), for as long as the task
/// lives. A failed count (the database is away) keeps the last value until the next one.
pub async fn count_forever(outbox: Arc<dyn OutboxStore>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match outbox.count_pending().await {
            Ok(pending) => metrics::outbox_pending(pending),
            Err(error) => tracing::debug!(%error, "could not count pending outbox events"),
        }
    }
}
