//! The relay: [`Relay::relay_once`] is one pass (claim → publish → confirm → mark), driven
//! directly by tests; [`Relay::run`] is the thin loop the service runs around it.
//!
//! Contract of a pass: a row is marked published only after the broker's ack. A nack or a
//! returned message counts a failed attempt on that row and backs it off on its own, so a
//! poison row never blocks the rows behind it. A lost connection is not the rows' fault: the
//! unconfirmed rows are released untouched and the loop reconnects with capped, jittered backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::publisher::{self, PublishError, Publisher};
use super::store::{self, Outbox, OutboxRow};
use crate::storage::StoreError;
use crate::telemetry::metrics;
use crate::backoff::Backoff;

/// How the relay paces itself; see the README for each `OUTBOX_*` variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaySettings {
    /// `OUTBOX_POLL_INTERVAL_MS`: the longest an event waits when no wake-up arrives.
    pub poll_interval: Duration,
    /// `OUTBOX_BATCH_SIZE`: rows claimed (and confirms in flight) per pass.
    pub batch_size: u32,
    /// `OUTBOX_CLAIM_LEASE_MS`: after this, rows claimed by a relay that vanished are claimable again.
    pub lease: Duration,
    /// `OUTBOX_RETRY_BASE_MS` / `OUTBOX_RETRY_MAX_MS`: per-row backoff after a refused publish.
    pub row_backoff: Backoff,
    /// `OUTBOX_RECONNECT_MAX_MS`: cap of the jittered reconnect backoff.
    pub reconnect: Backoff,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(1000),
            batch_size: 100,
            lease: Duration::from_secs(30),
            row_backoff: Backoff { base: Duration::from_secs(1), max: Duration::from_secs(300) },
            reconnect: Backoff { base: Duration::from_millis(100), max: Duration::from_secs(30) },
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayOutcome {
    pub claimed: usize,
    pub published: usize,
    pub failed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("broker unavailable: {0}")]
    Broker(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Longest wait for a connection, or for a batch's confirms, before the broker counts as lost.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// How stale the pending count may get while the relay is busy.
const PENDING_REFRESH: Duration = Duration::from_secs(1);

const STARTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// The relay's state as readiness reports it; cheap to clone and read.
#[derive(Debug, Clone, Default)]
pub struct RelayStatus {
    inner: Arc<(AtomicU8, AtomicI64)>,
}

impl RelayStatus {
    /// `up` (connected), `down` (reconnecting) or `starting` (not connected yet).
    pub fn broker(&self) -> &'static str {
        match self.inner.0.load(Ordering::Relaxed) {
            UP => "up",
            DOWN => "down",
            _ => "starting",
        }
    }

    /// Unpublished rows at the end of the last pass (-1 before the first).
    pub fn pending(&self) -> Option<i64> {
        let pending = self.inner.1.load(Ordering::Relaxed);
        (pending >= 0).then_some(pending)
    }

    fn set_broker(&self, state: u8) {
        self.inner.0.store(state, Ordering::Relaxed);
    }

    fn set_pending(&self, pending: i64) {
        self.inner.1.store(pending, Ordering::Relaxed);
        metrics::outbox_pending(pending);
    }
}

/// What the service keeps of a spawned relay: wake it, read it, stop it.
pub struct RelayHandle {
    pub status: RelayStatus,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RelayHandle {
    /// Asks the relay to stop after the batch in flight and waits until it has.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "outbox relay task ended abnormally");
        }
    }
}

pub struct Relay {
    outbox: Arc<dyn Outbox>,
    amqp_url: String,
    settings: RelaySettings,
    publisher: Option<Publisher>,
    status: RelayStatus,
    /// When `outbox_pending` was last counted.
    counted_at: Option<std::time::Instant>,
}

impl Relay {
    pub fn new(outbox: Arc<dyn Outbox>, amqp_url: String, settings: RelaySettings) -> Self {
        let status = RelayStatus::default();
        status.set_broker(STARTING);
        status.inner.1.store(-1, Ordering::Relaxed);
        Self { outbox, amqp_url, settings, publisher: None, status, counted_at: None }
    }

    pub fn status(&self) -> RelayStatus {
        self.status.clone()
    }

    /// One pass: connects if needed, then claims, publishes and settles one batch.
    pub async fn relay_once(&mut self) -> Result<RelayOutcome, RelayError> {
        if !self.publisher.as_ref().is_some_and(Publisher::is_connected) {
            self.publisher = None;
            let lost = match tokio::time::timeout(BROKER_TIMEOUT, Publisher::connect(&self.amqp_url)).await {
                Ok(Ok(publisher)) => {
                    tracing::info!("outbox relay connected to the broker");
                    self.publisher = Some(publisher);
                    None
                }
                Ok(Err(error)) => Some(error.to_string()),
                Err(_) => Some("connect timed out".to_owned()),
            };
            if let Some(reason) = lost {
                // The backlog grows while the broker is away: keep `outbox_pending` (and its
                // alert) current, counted at most once a second.
                if self.counted_at.is_none_or(|at| at.elapsed() >= PENDING_REFRESH) {
                    self.status.set_pending(self.outbox.count_pending().await?);
                    self.counted_at = Some(std::time::Instant::now());
                }
                return Err(self.broker_lost(reason));
            }
        }
        self.status.set_broker(UP);
        let rows = self.outbox.claim(store::now(), self.settings.lease, self.settings.batch_size).await?;
        let (outcome, lost) = match &self.publisher {
            Some(publisher) => self.publish_batch(publisher, &rows).await,
            None => (Ok(RelayOutcome::default()), Some("not connected".to_owned())),
        };
        let lost = lost.map(|reason| self.broker_lost(reason));
        // Counting costs a query: do it when idle, after a loss, or at most once a second while busy.
        let stale = self.counted_at.is_none_or(|at| at.elapsed() >= PENDING_REFRESH);
        if rows.is_empty() || lost.is_some() || stale {
            self.status.set_pending(self.outbox.count_pending().await?);
            self.counted_at = Some(std::time::Instant::now());
        }
        match lost {
            Some(error) => Err(error),
            None => outcome,
        }
    }

    /// Drops the connection (the next pass reconnects) and reports the broker down.
    fn broker_lost(&mut self, reason: String) -> RelayError {
        self.publisher = None;
        self.status.set_broker(DOWN);
        RelayError::Broker(reason)
    }

    /// Publishes every row, then awaits the confirms in order and settles each row in the
    /// database. Returns why the broker was lost, if it went away (or stopped confirming)
    /// mid-batch; the rows it did not confirm are released for the next pass.
    async fn publish_batch(
        &self,
        publisher: &Publisher,
        rows: &[OutboxRow],
    ) -> (Result<RelayOutcome, RelayError>, Option<String>) {
        let mut outcome = RelayOutcome { claimed: rows.len(), ..RelayOutcome::default() };
        let mut lost = None;
        let mut in_flight = Vec::with_capacity(rows.len());
        let mut failed: Vec<(&OutboxRow, String)> = Vec::new();
        let mut released = Vec::new();
        for row in rows {
            if lost.is_some() {
                released.push(row.id);
                continue;
            }
            match publisher::envelope(&row.payload) {
                Err(reason) => failed.push((row, reason)),
                Ok(body) => match publisher.send(row.order_id, &body).await {
                    Ok(confirm) => in_flight.push((row, confirm)),
                    Err(error) => {
                        released.push(row.id);
                        lost = Some(error.to_string());
                    }
                },
            }
        }
        // A blocked broker (memory or disk alarm) never confirms: give up on the batch, not the rows.
        let deadline = tokio::time::Instant::now() + BROKER_TIMEOUT;
        let mut published = Vec::with_capacity(in_flight.len());
        for (row, confirm) in in_flight {
            match tokio::time::timeout_at(deadline, publisher::confirmed(confirm)).await {
                Ok(Ok(())) => {
                    metrics::outbox_published(lag(row));
                    published.push(row.id);
                }
                Ok(Err(PublishError::Refused(reason))) => failed.push((row, reason.to_owned())),
                Ok(Err(PublishError::Connection(error))) => {
                    released.push(row.id);
                    lost.get_or_insert(error.to_string());
                }
                Err(_) => {
                    released.push(row.id);
                    lost.get_or_insert("no confirm from the broker in time".to_owned());
                }
            }
        }
        outcome.published = published.len();
        outcome.failed = failed.len();
        let settled = self.settle(&published, &failed, &released).await;
        if !released.is_empty() {
            metrics::outbox_failures(released.len());
        }
        (settled.map(|()| outcome), lost)
    }

    async fn settle(
        &self,
        published: &[i64],
        failed: &[(&OutboxRow, String)],
        released: &[i64],
    ) -> Result<(), RelayError> {
        self.outbox.mark_published(published, store::now()).await?;
        for (row, reason) in failed {
            let attempts = u32::try_from(row.attempts).unwrap_or(0).saturating_add(1);
            let delay = self.settings.row_backoff.delay(attempts, 0.5 + rand::random::<f64>() / 2.0);
            tracing::warn!(outbox_id = row.id, order_id = %row.order_id, attempts, error = %reason, "outbox event not published; will retry");
            metrics::outbox_failures(1);
            self.outbox.record_failure(row.id, reason, store::now() + store::chrono_duration(delay)).await?;
        }
        self.outbox.release(released).await?;
        Ok(())
    }

    /// Spawns the loop: wakes on `wake` or every poll interval, stops when asked.
    pub fn spawn(self, wake: Arc<Notify>) -> RelayHandle {
        let (stop, stopped) = watch::channel(false);
        let status = self.status();
        let task = tokio::spawn(self.run(wake, stopped));
        RelayHandle { status, stop, task }
    }

    /// The loop around [`Relay::relay_once`]. Never returns an error and never panics on a
    /// broker or database failure: it logs, backs off and tries again. A full batch means more
    /// is waiting, so the next pass starts at once.
    pub async fn run(mut self, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
        metrics::outbox_started();
        let mut failures = 0u32;
        while !*stop.borrow() {
            let pause = match self.relay_once().await {
                Ok(outcome) => {
                    failures = 0;
                    if outcome.claimed >= self.settings.batch_size as usize {
                        continue;
                    }
                    self.settings.poll_interval
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let delay = self.settings.reconnect.delay(failures, rand::random::<f64>());
                    tracing::warn!(%error, failures, retry_in_ms = delay.as_millis() as u64, "outbox relay pass failed");
                    // Jitter from the floor of the base, so a flapping broker is not hammered.
                    delay.max(self.settings.reconnect.base)
                }
            };
            tokio::select! {
                _ = wake.notified(), if failures == 0 => {}
                _ = tokio::time::sleep(pause) => {}
                changed = stop.changed() => {
                    if changed.is_err() {
                        break; // the handle is gone: nobody can stop us later, so stop now
                    }
                }
            }
        }
        if let Some(publisher) = self.publisher.take() {
            publisher.close().await;
        }
        tracing::info!("outbox relay stopped");
    }
}

/// Commit → confirm.
fn lag(row: &OutboxRow) -> Duration {
    (chrono::Utc::now() - row.created_at).to_std().unwrap_or_default()
}
