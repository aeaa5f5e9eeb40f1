//! The transactional outbox relay: order events leave the database for RabbitMQ.
//!
//! `insert_order` commits each order together with its outbox row. The [`Relay`] claims due
//! rows in id (commit) order, publishes each with publisher confirms, and marks a row
//! published only after the broker's ack. Delivery is **at-least-once**: a relay that dies
//! between the broker's ack and the mark publishes that row again once its claim lease
//! expires; `message_id` (the order id) lets consumers drop the duplicate.
//!
//! - [`store`] — the claim / mark / fail / release contract and its settings.
//! - `postgres`, `sqlite` — that contract per backend.
//! - [`publisher`] — one lapin connection and channel, the event envelope.
//! - [`relay`] — one pass ([`Relay::relay_once`]) and the loop around it.
//! - [`pending`] — `outbox_pending` while the relay is off.

pub mod pending;
mod postgres;
pub mod publisher;
pub mod relay;
mod sqlite;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::domain::Order;
use crate::domain::idempotency::{KeyClaim, KeyCompletion, KeyLease};
use crate::storage::{KeyTimes, ListFilter, OrderStore, StoreError};

pub use publisher::Publisher;
pub use relay::{Relay, RelayError, RelayHandle, RelayOutcome, RelaySettings, RelayStatus};
pub use store::{Outbox, OutboxRow};

/// An [`OrderStore`] that wakes the relay after each committed order, so an event normally
/// leaves within one round trip instead of waiting for the next poll.
pub struct NotifyingStore {
    inner: Arc<dyn OrderStore>,
    wake: Arc<Notify>,
}

impl NotifyingStore {
    pub fn new(inner: Arc<dyn OrderStore>, wake: Arc<Notify>) -> Self {
        Self { inner, wake }
    }
}

#[async_trait]
impl OrderStore for NotifyingStore {
    async fn insert_order(&self, order: &Order, key: Option<&KeyCompletion>) -> Result<(), StoreError> {
        self.inner.insert_order(order, key).await?;
        // `notify_one` stores a permit when the relay is busy, so no commit is missed.
        self.wake.notify_one();
        Ok(())
    }

    async fn claim_key(&self, lease: &KeyLease, fingerprint: &str, times: KeyTimes) -> Result<KeyClaim, StoreError> {
        self.inner.claim_key(lease, fingerprint, times).await
    }

    async fn release_key(&self, lease: &KeyLease) -> Result<(), StoreError> {
        self.inner.release_key(lease).await
    }

    async fn purge_keys(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.purge_keys(now).await
    }

    async fn get_order(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        self.inner.get_order(id).await
    }

    async fn list_orders(&self, filter: &ListFilter) -> Result<Vec<Order>, StoreError> {
        self.inner.list_orders(filter).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn outbox(&self) -> Arc<dyn Outbox> {
        self.inner.outbox()
    }
}
