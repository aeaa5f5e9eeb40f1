//! The outbox port: what the relay needs from the database, independent of the backend. An
//! order is never committed without its event row ([`super::store::OrderStore::insert_order`]).
//!
//! Rows are claimed with a short **lease** (`claimed_until`) rather than a row lock held for
//! the whole publish: the claim is one statement (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so
//! relays of several replicas take disjoint rows and never wait on each other), and no
//! database lock or transaction is held while talking to the broker. Every claimed row then
//! ends in exactly one of [`OutboxStore::mark_published`], [`OutboxStore::record_failure`]
//! or [`OutboxStore::release`]; a relay that dies first leaves the lease to expire.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use super::store::StoreError;

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
}

/// The outbox side of a store. Times are passed in so both backends compare like with like.
#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// Claims up to `limit` due, unpublished, unclaimed rows until `now + lease`, in id order.
    async fn claim(&self, now: DateTime<Utc>, lease: Duration, limit: u32) -> Result<Vec<OutboxRow>, StoreError>;
    /// Marks rows published (after the broker's ack) and drops their claim.
    async fn mark_published(&self, ids: &[i64], now: DateTime<Utc>) -> Result<(), StoreError>;
    /// Counts a failed attempt on one row: `attempts + 1`, `last_error`, retry not before `retry_at`.
    async fn record_failure(&self, id: i64, error: &str, retry_at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Gives claimed rows back untouched (the broker went away; not the rows' fault).
    async fn release(&self, ids: &[i64]) -> Result<(), StoreError>;
    /// Rows not yet published, whether due or backing off.
    async fn count_pending(&self) -> Result<i64, StoreError>;
}

/// `now` with the millisecond precision every stored time has.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

/// Milliseconds for a `Duration` as chrono wants them (saturating; leases are minutes at most).
pub fn chrono_duration(duration: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::milliseconds(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 2))
}
