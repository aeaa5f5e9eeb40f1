//! The outbox port: what the relay needs from the database, independent of the backend. An
//! order is never committed without its event row ([`super::store::OrderStore::insert_order`]).
//!
//! A relay **claims** a batch of due rows and holds them while it publishes: on PostgreSQL the
//! claim is a transaction holding the rows' locks (`FOR UPDATE SKIP LOCKED`, so relays of
//! several replicas take disjoint rows and never wait on each other), on SQLite (one process)
//! an in-process set. Every claim ends in [`Claim::settle`] — one commit that **deletes** the
//! confirmed rows (an order without an outbox row reads `published: true`), counts an attempt
//! on each refused row and gives the rest back — or is dropped: a relay that dies mid-batch
//! rolls back, and its rows are claimable again at once. One row version per event (the
//! insert; the delete adds none), one commit per batch.

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use super::store::StoreError;
use crate::telemetry::traces::propagation::TraceContext;

/// One claimed outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Publish order.
    pub id: i64,
    pub order_id: Uuid,
    /// The stored `{"order": {...}}` payload as text; parsed (and possibly found corrupt) by the relay.
    pub payload: String,
    /// The order's commit time, for the publish-lag metric.
    pub created_at: DateTime<Utc>,
    /// Failed attempts so far, for the per-row backoff.
    pub attempts: i32,
    /// The trace context of the request that placed the order, when it was traced.
    pub trace: Option<TraceContext>,
}

/// A refused row: `attempts + 1`, `last_error`, retried not before `retry_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub id: i64,
    pub error: String,
    pub retry_at: DateTime<Utc>,
}

/// How a claimed batch ended; rows in neither list are given back untouched (the broker went
/// away: not the rows' fault).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settlement {
    /// Confirmed by the broker: deleted.
    pub published: Vec<i64>,
    pub failed: Vec<Failure>,
}

/// Rows held by one relay until settled or dropped; nobody else claims them meanwhile.
#[async_trait]
pub trait Claim: Send {
    /// The claimed rows, in id order.
    fn rows(&self) -> &[super::OutboxRow];
    /// Ends the claim in one commit. Dropping a claim instead gives every row back.
    async fn settle(self: Box<Self>, settlement: &Settlement) -> Result<(), StoreError>;
}

/// The outbox side of a store. Times are passed in so both backends compare like with like.
#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// Claims up to `limit` due, unpublished rows no other claim holds, in id order.
    async fn claim(&self, now: DateTime<Utc>, limit: u32) -> Result<Box<dyn Claim>, StoreError>;
    /// Rows not yet published, whether due or backing off.
    async fn count_pending(&self) -> Result<i64, StoreError>;
    /// Tells every listening relay (other replicas' too) that rows are waiting: a wake-up, not
    /// a delivery; losing one costs at most a poll interval. A no-op where one process is all.
    async fn announce(&self) -> Result<(), StoreError>;
}

/// `now` with the millisecond precision every stored time has.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

/// Milliseconds for a `Duration` as chrono wants them (saturating; leases are minutes at most).
pub fn chrono_duration(duration: std::time::Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::milliseconds(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 2))
}
