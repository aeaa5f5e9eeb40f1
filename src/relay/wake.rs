//! Wakes the relay after each committed order, so an event normally leaves within one round
//! trip instead of waiting for the next poll.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::domain::idempotency::{KeyClaim, KeyCompletion, KeyLease, KeyTimes};
use crate::domain::{ListFilter, Order, OrderStore, StoreError};

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
}
