//! A pass over several batches: the next batch is claimed and sent while the broker confirms
//! the one before, and every batch is settled once.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use uuid::Uuid;

use super::publisher::{Confirm, PublishError};
use super::*;
use crate::domain::OutboxRow;
use crate::domain::outbox::{Claim, Settlement};
use crate::telemetry::traces::propagation::TraceContext;

/// Hands out prepared batches, one per claim, then empty claims; records each settlement and
/// counts the claims.
struct Batches {
    queue: Mutex<VecDeque<Vec<OutboxRow>>>,
    settled: Arc<Mutex<Vec<Settlement>>>,
    claims: AtomicUsize,
}

impl Batches {
    fn new(batches: impl IntoIterator<Item = Vec<OutboxRow>>) -> Self {
        let queue = Mutex::new(batches.into_iter().collect());
        Self { queue, settled: Arc::default(), claims: AtomicUsize::new(0) }
    }
}

struct Recorded {
    rows: Vec<OutboxRow>,
    settled: Arc<Mutex<Vec<Settlement>>>,
}

#[async_trait]
impl Claim for Recorded {
    fn rows(&self) -> &[OutboxRow] {
        &self.rows
    }
    async fn settle(self: Box<Self>, settlement: &Settlement) -> Result<(), StoreError> {
        self.settled.lock().expect("lock").push(settlement.clone());
        Ok(())
    }
}

#[async_trait]
impl OutboxStore for Batches {
    async fn claim(&self, _: DateTime<Utc>, _: u32) -> Result<Box<dyn Claim>, StoreError> {
        self.claims.fetch_add(1, Ordering::SeqCst);
        let rows = self.queue.lock().expect("lock").pop_front().unwrap_or_default();
        Ok(Box::new(Recorded { rows, settled: Arc::clone(&self.settled) }))
    }
    async fn count_pending(&self) -> Result<i64, StoreError> {
        Ok(self.queue.lock().expect("lock").iter().map(Vec::len).sum::<usize>() as i64)
    }
    async fn announce(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Confirms the first batch only once a row of the second batch has been sent: a relay that
/// waited for the first batch's confirms before sending the next would never see them.
struct Gated {
    second_batch: Vec<Uuid>,
    second_sent: watch::Sender<bool>,
}

#[async_trait]
impl Publish for Gated {
    fn is_connected(&self) -> bool {
        true
    }
    async fn send(&self, order_id: Uuid, _: &[u8], _: Option<&TraceContext>) -> Result<Confirm, PublishError> {
        if self.second_batch.contains(&order_id) {
            self.second_sent.send_replace(true);
            return Ok(Box::pin(async { Ok(()) }));
        }
        let mut sent = self.second_sent.subscribe();
        Ok(Box::pin(async move {
            sent.wait_for(|sent| *sent).await.map_err(|_| PublishError::Connection("gone".into()))?;
            Ok(())
        }))
    }
    async fn close(&self) {}
}

struct GatedBroker(Vec<Uuid>);

#[async_trait]
impl Broker for GatedBroker {
    async fn connect(&self) -> Result<Box<dyn Publish>, PublishError> {
        Ok(Box::new(Gated { second_batch: self.0.clone(), second_sent: watch::channel(false).0 }))
    }
}

/// Confirms every event at once.
struct Acking;

#[async_trait]
impl Publish for Acking {
    fn is_connected(&self) -> bool {
        true
    }
    async fn send(&self, _: Uuid, _: &[u8], _: Option<&TraceContext>) -> Result<Confirm, PublishError> {
        Ok(Box::pin(async { Ok(()) }))
    }
    async fn close(&self) {}
}

#[async_trait]
impl Broker for Acking {
    async fn connect(&self) -> Result<Box<dyn Publish>, PublishError> {
        Ok(Box::new(Acking))
    }
}

fn row(id: i64) -> OutboxRow {
    OutboxRow {
        id,
        order_id: Uuid::now_v7(),
        payload: r#"{"order":{"order_id":"x"}}"#.into(),
        created_at: Utc::now(),
        attempts: 0,
        trace: None,
    }
}

#[tokio::test(start_paused = true)]
async fn the_next_batch_is_sent_while_the_broker_confirms_the_one_before() {
    let (first, second) = (vec![row(1), row(2)], vec![row(3), row(4)]);
    let second_ids = second.iter().map(|r| r.order_id).collect();
    let outbox = Arc::new(Batches::new([first, second]));
    let settings = RelaySettings { batch_size: 2, ..RelaySettings::default() };
    let mut relay = Relay::new(outbox.clone(), Arc::new(GatedBroker(second_ids)), settings);

    let outcome = relay.relay_once().await.expect("no batch waits out the confirm timeout");
    assert_eq!(outcome, RelayOutcome { claimed: 4, published: 4, failed: 0 });
    let published: Vec<Vec<i64>> = outbox.settled.lock().expect("lock").iter().map(|s| s.published.clone()).collect();
    assert_eq!(published, [vec![1, 2], vec![3, 4]], "each batch settled once, in order");
    assert_eq!(outbox.claims.load(Ordering::SeqCst), 3, "two full batches, then a claim that found nothing");
    assert!(!relay.more_waiting, "the pass ended on an empty claim");
}

#[tokio::test(start_paused = true)]
async fn a_short_claim_ends_the_pass_without_claiming_again() {
    let outbox = Arc::new(Batches::new([vec![row(1), row(2)], vec![row(3)], vec![row(4)]]));
    let settings = RelaySettings { batch_size: 2, ..RelaySettings::default() };
    let mut relay = Relay::new(outbox.clone(), Arc::new(Acking), settings);

    let outcome = relay.relay_once().await.expect("pass");
    assert_eq!(outcome, RelayOutcome { claimed: 3, published: 3, failed: 0 });
    assert_eq!(outbox.claims.load(Ordering::SeqCst), 2, "a full batch, then a short one, then no third claim");
    let published: Vec<Vec<i64>> = outbox.settled.lock().expect("lock").iter().map(|s| s.published.clone()).collect();
    assert_eq!(published, [vec![1, 2], vec![3]]);
    assert!(!relay.more_waiting, "a short claim means nothing more was waiting");
}

/// Claims made by a spawned relay woken every millisecond for `for_ms`, then once after a quiet
/// second: the first figure counts passes under a steady stream, the second whether the relay
/// starts at once after a quiet spell.
async fn passes_under_a_steady_stream(spacing: Duration, for_ms: u64) -> (usize, bool) {
    let outbox = Arc::new(Batches::new([]));
    let settings = RelaySettings { pass_spacing: spacing, ..RelaySettings::default() };
    let wake = Arc::new(Notify::new());
    let handle = Relay::new(outbox.clone(), Arc::new(Acking), settings).spawn(Arc::clone(&wake));
    tokio::time::sleep(Duration::from_millis(1)).await; // the first pass, at start
    let before = outbox.claims.load(Ordering::SeqCst);
    for _ in 0..for_ms {
        wake.notify_one();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let steady = outbox.claims.load(Ordering::SeqCst) - before;
    tokio::time::sleep(Duration::from_millis(500)).await; // quiet, well inside the 1 s poll
    let quiet = outbox.claims.load(Ordering::SeqCst);
    wake.notify_one();
    tokio::time::sleep(Duration::from_micros(100)).await;
    let prompt = outbox.claims.load(Ordering::SeqCst) > quiet;
    handle.stop().await;
    (steady, prompt)
}

#[tokio::test(start_paused = true)]
async fn under_a_steady_stream_of_commits_passes_start_a_spacing_apart() {
    let (spaced, prompt) = passes_under_a_steady_stream(Duration::from_millis(10), 100).await;
    assert!((9..=11).contains(&spaced), "100 ms of wake-ups, passes 10 ms apart: {spaced} passes");
    assert!(prompt, "a relay woken after a quiet spell starts at once");
    let (unspaced, _) = passes_under_a_steady_stream(Duration::ZERO, 100).await;
    assert!(unspaced >= 90, "without spacing every wake-up is a pass: {unspaced} passes");
}

/// Acks everything while `connected`; the broker hands it out once, and every later connect
/// hangs (an unreachable broker whose connect never answers).
struct Flaky(Arc<AtomicBool>);

#[async_trait]
impl Publish for Flaky {
    fn is_connected(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    async fn send(&self, _: Uuid, _: &[u8], _: Option<&TraceContext>) -> Result<Confirm, PublishError> {
        Ok(Box::pin(async { Ok(()) }))
    }
    async fn close(&self) {}
}

struct ConnectsOnceThenHangs {
    connected: Arc<AtomicBool>,
    connects: AtomicUsize,
}

#[async_trait]
impl Broker for ConnectsOnceThenHangs {
    async fn connect(&self) -> Result<Box<dyn Publish>, PublishError> {
        if self.connects.fetch_add(1, Ordering::SeqCst) == 0 {
            return Ok(Box::new(Flaky(Arc::clone(&self.connected))));
        }
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_lost_connection_shows_down_and_the_backlog_is_counted_while_the_reconnect_hangs() {
    let outbox = Arc::new(Batches::new([]));
    let connected = Arc::new(AtomicBool::new(true));
    let broker = ConnectsOnceThenHangs { connected: Arc::clone(&connected), connects: AtomicUsize::new(0) };
    let mut relay = Relay::new(outbox.clone(), Arc::new(broker), RelaySettings::default());
    let status = relay.status();
    relay.relay_once().await.expect("the first connect works");
    assert_eq!(status.broker(), "up");

    connected.store(false, Ordering::SeqCst); // the connection is cut while the relay is idle
    outbox.queue.lock().expect("lock").push_back(vec![row(1), row(2)]); // orders keep committing
    let pass = relay.relay_once();
    tokio::pin!(pass);
    tokio::select! {
        _ = &mut pass => panic!("the reconnect hangs until the broker timeout"),
        _ = tokio::time::sleep(Duration::from_secs(3)) => {}
    }
    assert_eq!(status.broker(), "down", "readiness tells the outage during the attempt, not after it");
    assert_eq!(status.pending(), Some(2), "the backlog is counted while the attempt lasts");
    assert!(matches!(pass.await, Err(RelayError::Broker(reason)) if reason == "connect timed out"));
}
