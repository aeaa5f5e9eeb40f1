//! How each broker answer settles a row, with a scripted publisher and a recording outbox.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use uuid::Uuid;

use super::*;
use crate::telemetry::traces::propagation::TraceContext;

/// What the broker does with each message, in order.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Ack,
    Nack,
    /// The connection breaks while sending.
    SendFails,
    /// Sent, then the connection breaks before the confirm.
    ConfirmLost,
    /// Sent, and never confirmed (a blocked broker).
    Silent,
}

struct Scripted {
    answers: Mutex<VecDeque<Answer>>,
    sent: Mutex<Vec<Uuid>>,
    /// The trace context each sent message carried.
    traces: Mutex<Vec<Option<TraceContext>>>,
}

impl Scripted {
    fn new(answers: &[Answer]) -> Self {
        Self {
            answers: Mutex::new(answers.iter().copied().collect()),
            sent: Mutex::default(),
            traces: Mutex::default(),
        }
    }
}

#[async_trait]
impl Publish for Scripted {
    fn is_connected(&self) -> bool {
        true
    }

    async fn send(&self, order_id: Uuid, body: &[u8], trace: Option<&TraceContext>) -> Result<Confirm, PublishError> {
        assert!(serde_json::from_slice::<serde_json::Value>(body).is_ok(), "the envelope is JSON");
        let mut answers = self.answers.lock().expect("lock");
        let answer = answers.pop_front().unwrap_or(Answer::Ack);
        if let Answer::SendFails = answer {
            answers.clear();
            answers.push_back(Answer::SendFails); // a broken connection fails every later send
            return Err(PublishError::Connection("connection reset".into()));
        }
        drop(answers);
        self.sent.lock().expect("lock").push(order_id);
        self.traces.lock().expect("lock").push(trace.cloned());
        Ok(Box::pin(async move {
            match answer {
                Answer::Ack => Ok(()),
                Answer::Nack => Err(PublishError::Refused("nacked by the broker")),
                Answer::ConfirmLost => Err(PublishError::Connection("channel closed".into())),
                Answer::Silent | Answer::SendFails => std::future::pending().await,
            }
        }))
    }

    async fn close(&self) {}
}

/// A claim that records how it was settled.
struct Recorded {
    rows: Vec<OutboxRow>,
    settled: Arc<Mutex<Option<Settlement>>>,
}

#[async_trait]
impl Claim for Recorded {
    fn rows(&self) -> &[OutboxRow] {
        &self.rows
    }
    async fn settle(self: Box<Self>, settlement: &Settlement) -> Result<(), StoreError> {
        *self.settled.lock().expect("lock") = Some(settlement.clone());
        Ok(())
    }
}

fn rows(n: i64) -> Vec<OutboxRow> {
    (1..=n)
        .map(|id| OutboxRow {
            id,
            order_id: Uuid::now_v7(),
            payload: r#"{"order":{"order_id":"x","total_amount":9.99}}"#.into(),
            created_at: Utc::now(),
            attempts: 0,
            trace: None,
        })
        .collect()
}

const BACKOFF: Backoff = Backoff { base: Duration::from_secs(1), max: Duration::from_secs(300) };

/// How a batch settled: published ids, failures, and the ids given back (in neither list).
struct Settled {
    published: Vec<i64>,
    failed: Vec<Failure>,
    given_back: Vec<i64>,
}

async fn run(answers: &[Answer], rows: &[OutboxRow]) -> (RelayOutcome, Option<String>, Settled, usize) {
    let publisher = Scripted::new(answers);
    let settled = Arc::new(Mutex::new(None));
    let claim = Box::new(Recorded { rows: rows.to_vec(), settled: Arc::clone(&settled) });
    let (outcome, lost) = publish(&publisher, claim, BACKOFF, Duration::from_secs(10)).await;
    let sent = publisher.sent.lock().expect("lock").len();
    let settlement = settled.lock().expect("lock").take().expect("the claim was settled");
    let given_back = rows
        .iter()
        .map(|row| row.id)
        .filter(|id| !settlement.published.contains(id) && !settlement.failed.iter().any(|f| f.id == *id))
        .collect();
    let settled = Settled { published: settlement.published, failed: settlement.failed, given_back };
    (outcome.expect("the store never fails here"), lost, settled, sent)
}

#[tokio::test]
async fn acked_rows_are_published_and_nothing_else_happens() {
    let (outcome, lost, outbox, _) = run(&[Answer::Ack, Answer::Ack, Answer::Ack], &rows(3)).await;
    assert_eq!(outcome, RelayOutcome { claimed: 3, published: 3, failed: 0 });
    assert_eq!(lost, None);
    assert_eq!(outbox.published, [1, 2, 3]);
    assert!(outbox.failed.is_empty() && outbox.given_back.is_empty());
}

#[tokio::test]
async fn a_nacked_row_fails_on_its_own_with_a_backoff_and_the_rest_are_published() {
    let before = Utc::now();
    let (outcome, lost, outbox, _) = run(&[Answer::Ack, Answer::Nack, Answer::Ack], &rows(3)).await;
    assert_eq!(outcome, RelayOutcome { claimed: 3, published: 2, failed: 1 });
    assert_eq!(lost, None, "a nack is about the message, not the connection");
    assert_eq!(outbox.published, [1, 3]);
    assert_eq!(outbox.failed.len(), 1);
    let Failure { id, error, retry_at } = &outbox.failed[0];
    assert_eq!((*id, error.as_str()), (2, "nacked by the broker"));
    // First failure: half to all of the 1 s base, jittered.
    let wait = (*retry_at - before).num_milliseconds();
    assert!((450..=1100).contains(&wait), "retried after its own backoff, got {wait} ms");
}

#[tokio::test]
async fn a_corrupt_payload_fails_its_row_without_reaching_the_broker() {
    let mut batch = rows(2);
    batch[0].payload = "{not json".into();
    let (outcome, _, outbox, sent) = run(&[Answer::Ack], &batch).await;
    assert_eq!(outcome, RelayOutcome { claimed: 2, published: 1, failed: 1 });
    assert_eq!(sent, 1, "only the good row was sent");
    assert_eq!(outbox.failed[0].id, 1);
}

#[tokio::test]
async fn a_connection_lost_while_sending_releases_that_row_and_every_later_one() {
    let (outcome, lost, outbox, sent) = run(&[Answer::Ack, Answer::SendFails, Answer::Ack], &rows(4)).await;
    assert!(lost.is_some_and(|why| why.contains("connection reset")));
    assert_eq!(sent, 1, "nothing is sent after the connection broke");
    assert_eq!(outcome, RelayOutcome { claimed: 4, published: 1, failed: 0 });
    assert_eq!(outbox.published, [1]);
    assert_eq!(outbox.given_back, [2, 3, 4], "given back untouched, not failed");
    assert!(outbox.failed.is_empty(), "no attempt is counted against the rows");
}

#[tokio::test]
async fn a_connection_lost_before_the_confirm_releases_the_unconfirmed_rows() {
    let (outcome, lost, outbox, _) = run(&[Answer::Ack, Answer::ConfirmLost, Answer::ConfirmLost], &rows(3)).await;
    assert!(lost.is_some());
    assert_eq!(outcome.published, 1);
    assert_eq!(outbox.given_back, [2, 3]);
    assert!(outbox.failed.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_broker_that_never_confirms_gives_up_the_batch_not_the_rows() {
    let (outcome, lost, outbox, _) = run(&[Answer::Ack, Answer::Silent, Answer::Silent], &rows(3)).await;
    assert_eq!(lost.as_deref(), Some("no confirm from the broker in time"));
    assert_eq!(outcome.published, 1);
    assert_eq!(outbox.given_back, [2, 3]);
    assert!(outbox.failed.is_empty());
}

#[tokio::test]
async fn a_message_carries_its_orders_stored_trace_context_where_this_process_does_not_trace() {
    let mut rows = rows(2);
    let placed = TraceContext {
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        tracestate: Some("vendor=1".into()),
    };
    rows[0].trace = Some(placed.clone());
    let publisher = Scripted::new(&[Answer::Ack, Answer::Ack]);
    let claim = Box::new(Recorded { rows, settled: Arc::default() });
    let (outcome, _) = publish(&publisher, claim, BACKOFF, Duration::from_secs(10)).await;
    assert_eq!(outcome.expect("settled").published, 2);
    assert_eq!(*publisher.traces.lock().expect("lock"), [Some(placed), None], "an untraced order's message has none");
}

/// Confirms nothing until the whole batch has been handed over, and records the order in which
/// the sends began (where lapin queues the frames): a relay that awaited each send before
/// starting the next would never get past the first.
struct AllAtOnce {
    batch: usize,
    started: Mutex<Vec<Uuid>>,
    all_started: tokio::sync::Notify,
}

#[async_trait]
impl Publish for AllAtOnce {
    fn is_connected(&self) -> bool {
        true
    }

    async fn send(&self, order_id: Uuid, _: &[u8], _: Option<&TraceContext>) -> Result<Confirm, PublishError> {
        let everyone = {
            let mut started = self.started.lock().expect("lock");
            started.push(order_id);
            started.len() == self.batch
        };
        if everyone {
            self.all_started.notify_waiters();
        } else {
            self.all_started.notified().await;
        }
        Ok(Box::pin(async { Ok(()) }))
    }

    async fn close(&self) {}
}

#[tokio::test(start_paused = true)]
async fn a_batch_is_handed_to_the_broker_all_at_once_in_claim_order() {
    let batch = rows(40); // above join_all's small-batch threshold (30), where it switches strategy
    let publisher =
        AllAtOnce { batch: batch.len(), started: Mutex::default(), all_started: tokio::sync::Notify::new() };
    let claim = Box::new(Recorded { rows: batch.clone(), settled: Arc::default() });
    let sent = tokio::time::timeout(Duration::from_secs(5), send(&publisher, claim))
        .await
        .expect("every send was started before any was awaited to the end");
    assert_eq!(sent.lost, None);
    let order: Vec<Uuid> = batch.iter().map(|row| row.order_id).collect();
    assert_eq!(*publisher.started.lock().expect("lock"), order, "the broker gets the batch in claim order");
    let (outcome, _) = settle(sent, BACKOFF, Duration::from_secs(10)).await;
    assert_eq!(outcome.expect("settled").published, 40);
}
