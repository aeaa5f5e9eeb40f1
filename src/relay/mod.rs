//! The outbox relay: order events leave the database for RabbitMQ.
//!
//! `insert_order` commits each order together with its outbox row. The [`Relay`] claims due
//! rows in id (commit) order, publishes each with publisher confirms, and marks a row
//! published only after the broker's ack. Delivery is **at-least-once**: a relay that dies
//! between the broker's ack and the mark publishes that row again once its claim lease
//! expires; `message_id` (the order id) lets consumers drop the duplicate.
//!
//! - [`Relay::relay_once`] is one pass (connect if needed ▸ claim ▸ [`batch`]), driven directly
//!   by tests; [`Relay::run`] is the thin loop the service runs around it.
//! - [`batch`] — publish, confirm and settle one batch (unit-tested without a broker).
//! - [`publisher`] — the broker traits, their lapin implementation and the event envelope.
//! - [`wake`] — wakes the relay when an order commits; [`pending`] — `outbox_pending` while
//!   the relay is off.

pub mod batch;
pub mod pending;
pub mod publisher;
pub mod wake;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

pub use batch::RelayOutcome;
use publisher::{Broker, Publish};
pub use wake::NotifyingStore;

pub use crate::config::RelaySettings;
use crate::domain::StoreError;
use crate::domain::outbox::{OutboxStore, now};
use crate::ops::BrokerStatus;
use crate::telemetry::metrics;

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

/// What the service keeps of a spawned relay: read it, stop it.
pub struct RelayHandle {
    pub status: BrokerStatus,
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
    outbox: Arc<dyn OutboxStore>,
    broker: Arc<dyn Broker>,
    settings: RelaySettings,
    publisher: Option<Box<dyn Publish>>,
    status: BrokerStatus,
    /// When `outbox_pending` was last counted.
    counted_at: Option<std::time::Instant>,
}

impl Relay {
    pub fn new(outbox: Arc<dyn OutboxStore>, broker: Arc<dyn Broker>, settings: RelaySettings) -> Self {
        Self { outbox, broker, settings, publisher: None, status: BrokerStatus::default(), counted_at: None }
    }

    pub fn status(&self) -> BrokerStatus {
        self.status.clone()
    }

    /// One pass: connects if needed, then claims, publishes and settles one batch.
    pub async fn relay_once(&mut self) -> Result<RelayOutcome, RelayError> {
        if !self.publisher.as_ref().is_some_and(|p| p.is_connected()) {
            self.publisher = None;
            let lost = match tokio::time::timeout(BROKER_TIMEOUT, self.broker.connect()).await {
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
                    self.count_pending().await?;
                }
                return Err(self.broker_lost(reason));
            }
        }
        self.status.set_connected(true);
        let rows = self.outbox.claim(now(), self.settings.lease, self.settings.batch_size).await?;
        let (outcome, lost) = match &self.publisher {
            Some(publisher) => {
                batch::publish(
                    publisher.as_ref(),
                    self.outbox.as_ref(),
                    &rows,
                    self.settings.row_backoff,
                    BROKER_TIMEOUT,
                )
                .await
            }
            None => (Ok(RelayOutcome::default()), Some("not connected".to_owned())),
        };
        let lost = lost.map(|reason| self.broker_lost(reason));
        // Counting costs a query: do it when idle, after a loss, or at most once a second while busy.
        let stale = self.counted_at.is_none_or(|at| at.elapsed() >= PENDING_REFRESH);
        if rows.is_empty() || lost.is_some() || stale {
            self.count_pending().await?;
        }
        match lost {
            Some(error) => Err(error),
            None => outcome.map_err(RelayError::from),
        }
    }

    async fn count_pending(&mut self) -> Result<(), StoreError> {
        let pending = self.outbox.count_pending().await?;
        self.status.set_pending(pending);
        metrics::outbox_pending(pending);
        self.counted_at = Some(std::time::Instant::now());
        Ok(())
    }

    /// Drops the connection (the next pass reconnects) and reports the broker down.
    fn broker_lost(&mut self, reason: String) -> RelayError {
        self.publisher = None;
        self.status.set_connected(false);
        RelayError::Broker(reason)
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
        'passes: while !*stop.borrow() {
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
            let until = tokio::time::Instant::now() + pause;
            loop {
                // While the broker is away the backlog still grows: count it every second
                // between reconnect attempts, however long the backoff has become.
                let step = if failures == 0 { pause } else { PENDING_REFRESH };
                let wait = until.saturating_duration_since(tokio::time::Instant::now()).min(step);
                tokio::select! {
                    _ = wake.notified(), if failures == 0 => break,
                    _ = tokio::time::sleep(wait) => {}
                    changed = stop.changed() => {
                        if changed.is_err() {
                            break 'passes; // the handle is gone: nobody can stop us later, so stop now
                        }
                        break;
                    }
                }
                if tokio::time::Instant::now() >= until {
                    break;
                }
                if let Err(error) = self.count_pending().await {
                    tracing::debug!(%error, "could not count pending outbox events");
                }
            }
        }
        if let Some(publisher) = self.publisher.take() {
            publisher.close().await;
        }
        tracing::info!("outbox relay stopped");
    }
}
