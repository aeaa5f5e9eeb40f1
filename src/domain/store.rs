//! The store port: where orders, their events and idempotency keys are kept. The `storage`
//! adapter implements it on PostgreSQL and SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Order;
use super::idempotency::{KeyClaim, KeyCompletion, KeyLease, KeyTimes};

/// The cause of a storage failure, kept for the log (never shown to a client).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Most rows one list call returns, whatever `limit` asks for.
pub const MAX_PAGE: u32 = 100;

/// A keyset page request: orders with `id > after`, in id (creation) order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub user_id: Option<String>,
    pub after: Option<Uuid>,
    pub limit: u32,
}

/// The storage boundary the domain and HTTP layer talk to.
#[async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Writes the order and its `order.created` outbox row in one transaction: both or neither.
    /// With `key`, the same transaction completes that idempotency key with its response; if
    /// the lease was lost meanwhile, nothing is written and the error is [`StoreError::KeyLeaseLost`].
    async fn insert_order(&self, order: &Order, key: Option<&KeyCompletion>) -> Result<(), StoreError>;
    /// Leases `lease.key` for the request with `fingerprint`, unless another request holds it
    /// (lease not yet expired) or completed it (not yet forgotten): then says which.
    async fn claim_key(&self, lease: &KeyLease, fingerprint: &str, times: KeyTimes) -> Result<KeyClaim, StoreError>;
    /// Gives up an unfinished lease (the order failed), so a retry with the key runs again.
    /// A no-op once the key is completed or taken over.
    async fn release_key(&self, lease: &KeyLease) -> Result<(), StoreError>;
    /// Deletes keys forgotten before `now`; returns how many.
    async fn purge_keys(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;
    async fn get_order(&self, id: Uuid) -> Result<Option<Order>, StoreError>;
    async fn list_orders(&self, filter: &ListFilter) -> Result<Vec<Order>, StoreError>;
    /// One round trip, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;
    /// `postgres` or `sqlite`, for `/health/ready`.
    fn backend(&self) -> &'static str;
}

/// A storage failure, split by what the client should do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No connection within the acquire timeout, or the database is down: retry later (503).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// Anything else: a bug or corrupt data (500).
    #[error("database error: {0}")]
    Query(#[source] BoxError),
    /// The idempotency key's lease was taken over by another request before this one could
    /// complete it (this request outlived its lease); nothing was written (409).
    #[error("the idempotency key was taken over by another request")]
    KeyLeaseLost,
}
