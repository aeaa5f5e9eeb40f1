//! The outbox relay: order events leave the database for RabbitMQ.
//!
//! `insert_order` commits each order together with its outbox row. The [`Relay`] claims due
//! rows in id (commit) order, publishes each with publisher confirms, and deletes a row only
//! after the broker's ack, in the commit that ends its claim. Delivery is **at-least-once**: a
//! relay that dies between the broker's ack and that commit leaves the rows to be published
//! again (at once: its claim dies with it); `message_id` (the order id) lets consumers drop
//! the duplicate.
//!
//! - [`Relay::relay_once`] is one pass (connect if needed ▸ claim ▸ send ▸ claim and send the
//!   next batch while the broker confirms this one ▸ settle ▸ … until nothing is due), driven
//!   directly by tests; [`Relay::run`] is the thin loop the service runs around it.
//! - [`batch`] — send, confirm and settle one batch (unit-tested without a broker).
//! - [`publisher`] — the broker traits, their lapin implementation and the event envelope.
//! - [`wake`] — wakes a relay when an order commits (this replica's, or through the database
//!   every replica's); [`pending`] — `outbox_pending` while the relay is off.

pub mod batch;
pub mod pending;
pub mod publisher;
pub mod span;
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

/// Batches one pass claims at most, so a long backlog still lets the loop check for a stop.
const MAX_BATCHES_PER_PASS: usize = 10;

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
    counted_at: Option<tokio::time::Instant>,
    /// The last pass stopped at [`MAX_BATCHES_PER_PASS`] with rows still coming.
    more_waiting: bool,
}

impl Relay {
    pub fn new(outbox: Arc<dyn OutboxStore>, broker: Arc<dyn Broker>, settings: RelaySettings) -> Self {
        let status = BrokerStatus::default();
        Self { outbox, broker, settings, publisher: None, status, counted_at: None, more_waiting: false }
    }

    pub fn status(&self) -> BrokerStatus {
        self.status.clone()
    }

    /// One pass: connects if needed, then claims, publishes and settles one batch.
    pub async fn relay_once(&mut self) -> Result<RelayOutcome, RelayError> {
        if !self.publisher.as_ref().is_some_and(|p| p.is_connected()) {
            self.reconnect().await?;
        }
        self.status.set_connected(true);
        let (outcome, claimed_nothing, lost) = self.pass().await;
        let lost = lost.map(|reason| self.broker_lost(reason));
        // Counting costs a query: do it when idle, after a loss, or at most once a second while busy.
        if claimed_nothing || lost.is_some() || self.count_is_stale() {
            self.count_pending().await?;
        }
        match lost {
            Some(error) => Err(error),
            None => outcome.map_err(RelayError::from),
        }
    }

    /// Connects, after a loss or for the first time. A lost connection shows as `down` at once,
    /// not after the attempt: a connect to an unreachable broker can hang until [`BROKER_TIMEOUT`],
    /// and meanwhile readiness must tell the outage and `outbox_pending` the growing backlog
    /// (counted at most once a second while the attempt lasts).
    async fn reconnect(&mut self) -> Result<(), RelayError> {
        if self.publisher.take().is_some() {
            self.status.set_connected(false);
        }
        let broker = Arc::clone(&self.broker); // not borrowed from `self`: the loop counts meanwhile
        let connect = tokio::time::timeout(BROKER_TIMEOUT, broker.connect());
        tokio::pin!(connect);
        let attempt = loop {
            if self.count_is_stale()
                && let Err(error) = self.count_pending().await
            {
                tracing::debug!(%error, "could not count pending outbox events");
            }
            tokio::select! {
                attempt = &mut connect => break attempt,
                _ = tokio::time::sleep(PENDING_REFRESH) => {}
            }
        };
        match attempt {
            Ok(Ok(publisher)) => {
                tracing::info!("outbox relay connected to the broker");
                self.publisher = Some(publisher);
                Ok(())
            }
            Ok(Err(error)) => Err(self.broker_lost(error.to_string())),
            Err(_) => Err(self.broker_lost("connect timed out".to_owned())),
        }
    }

    /// Claims and sends batch after batch, settling each one while the next is claimed and sent,
    /// until a claim comes back short of `batch_size` (or [`MAX_BATCHES_PER_PASS`]). A short claim
    /// ends the pass without one more claim to find the table empty: rows committed meanwhile have
    /// woken the relay again (a stored `Notify` permit), and at moderate load that extra claim was
    /// one of the three transactions each pass cost. Returns what was settled, whether the pass
    /// claimed nothing at all, and why the broker was lost if it was.
    async fn pass(&mut self) -> (Result<RelayOutcome, StoreError>, bool, Option<String>) {
        let Some(publisher) = self.publisher.as_deref() else {
            return (Ok(RelayOutcome::default()), false, Some("not connected".to_owned()));
        };
        let (backoff, limit) = (self.settings.row_backoff, self.settings.batch_size);
        let mut total = Ok(RelayOutcome::default());
        let (mut lost, mut drained, mut claimed) = (None, false, 0);
        let mut previous: Option<batch::Sent> = None;
        for _ in 0..MAX_BATCHES_PER_PASS {
            // The next batch is claimed and sent while the one before is confirmed and committed.
            let outbox = &self.outbox;
            let next = async {
                if drained {
                    return Ok(None); // the last claim was short: only its settling is left
                }
                let claim = outbox.claim(now(), limit).await?;
                claimed += claim.rows().len();
                drained = claim.rows().len() < limit as usize;
                Ok::<_, StoreError>(if claim.rows().is_empty() {
                    None
                } else {
                    Some(batch::send(publisher, claim).await)
                })
            };
            let done = async {
                match previous.take() {
                    Some(sent) => Some(batch::settle(sent, backoff, BROKER_TIMEOUT).await),
                    None => None,
                }
            };
            let (next, done) = tokio::join!(next, done);
            if let Some(done) = done {
                settled(&mut total, &mut lost, done);
            }
            let sent = match next {
                Ok(sent) => sent,
                Err(error) => {
                    total = Err(error);
                    break;
                }
            };
            let broke = sent.as_ref().is_some_and(|sent| sent.lost.is_some());
            let nothing_sent = sent.is_none();
            previous = sent;
            if nothing_sent || broke || lost.is_some() || total.is_err() {
                break;
            }
        }
        if let Some(done) = previous.take() {
            settled(&mut total, &mut lost, batch::settle(done, backoff, BROKER_TIMEOUT).await);
        }
        self.more_waiting = !drained && lost.is_none() && total.is_ok();
        (total, claimed == 0, lost)
    }

    /// Whether `outbox_pending` was last counted over [`PENDING_REFRESH`] ago (or never).
    fn count_is_stale(&self) -> bool {
        self.counted_at.is_none_or(|at| at.elapsed() >= PENDING_REFRESH)
    }

    async fn count_pending(&mut self) -> Result<(), StoreError> {
        let pending = self.outbox.count_pending().await?;
        self.status.set_pending(pending);
        metrics::outbox_pending(pending);
        self.counted_at = Some(tokio::time::Instant::now());
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
        let mut started: Option<tokio::time::Instant> = None;
        'passes: while !*stop.borrow() {
            // Passes start at least `pass_spacing` apart: see `RelaySettings::pass_spacing`.
            if let Some(ready) = started.map(|at| at + self.settings.pass_spacing)
                && tokio::time::Instant::now() < ready
            {
                tokio::select! {
                    _ = tokio::time::sleep_until(ready) => {}
                    changed = stop.changed() => {
                        if changed.is_err() {
                            break 'passes;
                        }
                        continue 'passes;
                    }
                }
            }
            started = Some(tokio::time::Instant::now());
            let pause = match self.relay_once().await {
                Ok(_) => {
                    failures = 0;
                    if self.more_waiting {
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

/// Adds one settled batch to the pass: its outcome, or the first store error; the first loss.
fn settled(
    total: &mut Result<RelayOutcome, StoreError>,
    lost: &mut Option<String>,
    (outcome, broke): (Result<RelayOutcome, StoreError>, Option<String>),
) {
    match (total.as_mut(), outcome) {
        (Ok(total), Ok(outcome)) => *total += outcome,
        (Ok(_), Err(error)) => *total = Err(error),
        (Err(_), _) => {}
    }
    if lost.is_none() {
        *lost = broke;
    }
}

#[cfg(test)]
#[path = "pass_tests.rs"]
mod pass_tests;
