//! How each broker answer settles a row, with a scripted publisher and a recording outbox.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::*;
use crate::relay::publisher::Confirm;

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
}

impl Scripted {
    fn new(answers: &[Answer]) -> Self {
        Self { answers: Mutex::new(answers.iter().copied().collect()), sent: Mutex::default() }
    }
}

#[async_trait]
impl Publish for Scripted {
    fn is_connected(&self) -> bool {
        true
    }

    async fn send(&self, order_id: Uuid, body: &[u8]) -> Result<Confirm, PublishError> {
        assert!(serde_json::from_slice::<serde_json::Value>(body).is_ok(), "the envelope is JSON");
        let answer = self.answers.lock().expect("lock").pop_front().unwrap_or(Answer::Ack);
        if let Answer::SendFails = answer {
            return Err(PublishError::Connection("connection reset".into()));
        }
        self.sent.lock().expect("lock").push(order_id);
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

/// Records how rows were settled.
#[derive(Default)]
struct Recorded {
    published: Mutex<Vec<i64>>,
    failed: Mutex<Vec<(i64, String, DateTime<Utc>)>>,
    released: Mutex<Vec<i64>>,
}

#[async_trait]
impl OutboxStore for Recorded {
    async fn claim(&self, _: DateTime<Utc>, _: Duration, _: u32) -> Result<Vec<OutboxRow>, StoreError> {
        unreachable!("a batch does not claim")
    }
    async fn mark_published(&self, ids: &[i64], _: DateTime<Utc>) -> Result<(), StoreError> {
        self.published.lock().expect("lock").extend_from_slice(ids);
        Ok(())
    }
    async fn record_failure(&self, id: i64, error: &str, retry_at: DateTime<Utc>) -> Result<(), StoreError> {
        self.failed.lock().expect("lock").push((id, error.to_owned(), retry_at));
        Ok(())
    }
    async fn release(&self, ids: &[i64]) -> Result<(), StoreError> {
        self.released.lock().expect("lock").extend_from_slice(ids);
        Ok(())
    }
    async fn count_pending(&self) -> Result<i64, StoreError> {
        unreachable!("a batch does not count")
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
        })
        .collect()
}

const BACKOFF: Backoff = Backoff { base: Duration::from_secs(1), max: Duration::from_secs(300) };

async fn run(answers: &[Answer], rows: &[OutboxRow]) -> (RelayOutcome, Option<String>, Recorded, usize) {
    let publisher = Scripted::new(answers);
    let outbox = Recorded::default();
    let (outcome, lost) = publish(&publisher, &outbox, rows, BACKOFF, Duration::from_secs(10)).await;
    let sent = publisher.sent.lock().expect("lock").len();
    (outcome.expect("the store never fails here"), lost, outbox, sent)
}

#[tokio::test]
async fn acked_rows_are_published_and_nothing_else_happens() {
    let (outcome, lost, outbox, _) = run(&[Answer::Ack, Answer::Ack, Answer::Ack], &rows(3)).await;
    assert_eq!(outcome, RelayOutcome { claimed: 3, published: 3, failed: 0 });
    assert_eq!(lost, None);
    assert_eq!(*outbox.published.lock().expect("lock"), [1, 2, 3]);
    assert!(outbox.failed.lock().expect("lock").is_empty() && outbox.released.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn a_nacked_row_fails_on_its_own_with_a_backoff_and_the_rest_are_published() {
    let before = Utc::now();
    let (outcome, lost, outbox, _) = run(&[Answer::Ack, Answer::Nack, Answer::Ack], &rows(3)).await;
    assert_eq!(outcome, RelayOutcome { claimed: 3, published: 2, failed: 1 });
    assert_eq!(lost, None, "a nack is about the message, not the connection");
    assert_eq!(*outbox.published.lock().expect("lock"), [1, 3]);
    let failed = outbox.failed.lock().expect("lock");
    assert_eq!(failed.len(), 1);
    let (id, reason, retry_at) = &failed[0];
    assert_eq!((*id, reason.as_str()), (2, "nacked by the broker"));
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
    assert_eq!(outbox.failed.lock().expect("lock")[0].0, 1);
}

#[tokio::test]
async fn a_connection_lost_while_sending_releases_that_row_and_every_later_one() {
    let (outcome, lost, outbox, sent) = run(&[Answer::Ack, Answer::SendFails, Answer::Ack], &rows(4)).await;
    assert!(lost.is_some_and(|why| why.contains("connection reset")));
    assert_eq!(sent, 1, "nothing is sent after the connection broke");
    assert_eq!(outcome, RelayOutcome { claimed: 4, published: 1, failed: 0 });
    assert_eq!(*outbox.published.lock().expect("lock"), [1]);
    assert_eq!(*outbox.released.lock().expect("lock"), [2, 3, 4], "released untouched, not failed");
    assert!(outbox.failed.lock().expect("lock").is_empty(), "no attempt is counted against the rows");
}

#[tokio::test]
async fn a_connection_lost_before_the_confirm_releases_the_unconfirmed_rows() {
    let (outcome, lost, outbox, _) = run(&[Answer::Ack, Answer::ConfirmLost, Answer::ConfirmLost], &rows(3)).await;
    assert!(lost.is_some());
    assert_eq!(outcome.published, 1);
    assert_eq!(*outbox.released.lock().expect("lock"), [2, 3]);
    assert!(outbox.failed.lock().expect("lock").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_broker_that_never_confirms_gives_up_the_batch_not_the_rows() {
    let (outcome, lost, outbox, _) = run(&[Answer::Ack, Answer::Silent, Answer::Silent], &rows(3)).await;
    assert_eq!(lost.as_deref(), Some("no confirm from the broker in time"));
    assert_eq!(outcome.published, 1);
    assert_eq!(*outbox.released.lock().expect("lock"), [2, 3]);
    assert!(outbox.failed.lock().expect("lock").is_empty());
}
