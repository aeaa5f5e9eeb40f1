//! One batch: publish every claimed row, await the confirms, then settle each row in the
//! database. Pure logic over the [`Publish`] and [`OutboxStore`] traits, so how each broker
//! answer settles a row is unit-tested here, without a broker.
//!
//! - ack → the row is published;
//! - nack or returned message → a failed attempt on that row, retried after its own backoff
//!   (a poison row never blocks the rows behind it);
//! - the connection lost (or no confirm in time) → the rows not yet confirmed are released
//!   untouched: not the rows' fault.

use std::time::Duration;

use super::publisher::{self, Publish, PublishError};
use crate::backoff::Backoff;
use crate::domain::StoreError;
use crate::domain::outbox::{OutboxRow, OutboxStore, chrono_duration, now};
use crate::telemetry::metrics;

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayOutcome {
    pub claimed: usize,
    pub published: usize,
    pub failed: usize,
}

/// How each row of a batch ended.
#[derive(Debug, Default)]
struct Settlement<'a> {
    published: Vec<i64>,
    failed: Vec<(&'a OutboxRow, String)>,
    released: Vec<i64>,
    /// Why the broker was lost, if it was.
    lost: Option<String>,
}

/// Publishes `rows`, awaits their confirms (for at most `confirm_timeout` in all) and settles
/// each row. Returns the outcome, and why the broker was lost if it went away mid-batch.
pub async fn publish(
    publisher: &dyn Publish,
    outbox: &dyn OutboxStore,
    rows: &[OutboxRow],
    row_backoff: Backoff,
    confirm_timeout: Duration,
) -> (Result<RelayOutcome, StoreError>, Option<String>) {
    let settlement = send_and_confirm(publisher, rows, confirm_timeout).await;
    let outcome =
        RelayOutcome { claimed: rows.len(), published: settlement.published.len(), failed: settlement.failed.len() };
    let settled = settle(outbox, &settlement, row_backoff).await;
    (settled.map(|()| outcome), settlement.lost)
}

async fn send_and_confirm<'a>(
    publisher: &dyn Publish,
    rows: &'a [OutboxRow],
    confirm_timeout: Duration,
) -> Settlement<'a> {
    let mut s = Settlement::default();
    let mut in_flight = Vec::with_capacity(rows.len());
    for row in rows {
        if s.lost.is_some() {
            s.released.push(row.id);
            continue;
        }
        match publisher::envelope(&row.payload) {
            Err(reason) => s.failed.push((row, reason)),
            Ok(body) => match publisher.send(row.order_id, &body).await {
                Ok(confirm) => in_flight.push((row, confirm)),
                Err(error) => {
                    s.released.push(row.id);
                    s.lost = Some(error.to_string());
                }
            },
        }
    }
    // A blocked broker (memory or disk alarm) never confirms: give up on the batch, not the rows.
    let deadline = tokio::time::Instant::now() + confirm_timeout;
    for (row, confirm) in in_flight {
        match tokio::time::timeout_at(deadline, confirm).await {
            Ok(Ok(())) => {
                metrics::outbox_published(lag(row));
                s.published.push(row.id);
            }
            Ok(Err(PublishError::Refused(reason))) => s.failed.push((row, reason.to_owned())),
            Ok(Err(PublishError::Connection(error))) => {
                s.released.push(row.id);
                s.lost.get_or_insert(error);
            }
            Err(_) => {
                s.released.push(row.id);
                s.lost.get_or_insert("no confirm from the broker in time".to_owned());
            }
        }
    }
    s
}

async fn settle(outbox: &dyn OutboxStore, s: &Settlement<'_>, row_backoff: Backoff) -> Result<(), StoreError> {
    outbox.mark_published(&s.published, now()).await?;
    for (row, reason) in &s.failed {
        let attempts = u32::try_from(row.attempts).unwrap_or(0).saturating_add(1);
        let delay = row_backoff.delay(attempts, 0.5 + rand::random::<f64>() / 2.0);
        tracing::warn!(outbox_id = row.id, order_id = %row.order_id, attempts, error = %reason, "outbox event not published; will retry");
        metrics::outbox_failures(1);
        outbox.record_failure(row.id, reason, now() + chrono_duration(delay)).await?;
    }
    if !s.released.is_empty() {
        metrics::outbox_failures(s.released.len());
    }
    outbox.release(&s.released).await?;
    Ok(())
}

/// Commit → confirm.
fn lag(row: &OutboxRow) -> Duration {
    (chrono::Utc::now() - row.created_at).to_std().unwrap_or_default()
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
