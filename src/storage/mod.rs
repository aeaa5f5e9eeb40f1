//! Where orders live: one small trait, a PostgreSQL and an SQLite implementation, chosen by the
//! `DATABASE_URL` scheme. Migrations for each backend are under `migrations/` and run at start.

mod keys;
mod postgres;
mod row;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::Order;
use crate::domain::idempotency::{KeyClaim, KeyCompletion, KeyLease};
use crate::outbox::Outbox;

pub use keys::{KeyTimes, purge_forever};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

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
    /// The relay's view of the same database (same pool).
    fn outbox(&self) -> Arc<dyn Outbox>;
}

/// A storage failure, split by what the client should do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No connection within the acquire timeout, or the database is down: retry later (503).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else: a bug or corrupt data (500).
    #[error("database error: {0}")]
    Query(#[source] sqlx::Error),
    /// The idempotency key's lease was taken over by another request before this one could
    /// complete it (this request outlived its lease); nothing was written (409).
    #[error("the idempotency key was taken over by another request")]
    KeyLeaseLost,
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) { StoreError::Unavailable(error) } else { StoreError::Query(error) }
    }
}

fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        // Broken or unreachable connections: `Protocol` is what a connection cut mid-handshake
        // or mid-reply looks like (e.g. "unexpected response from SSLRequest").
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // PostgreSQL: connection exceptions (08…), shutting down / cannot connect now (57P…),
            // too many connections (53300). SQLite: busy / locked (5, 6).
            code.starts_with("08") || code.starts_with("57P") || code == "53300" || code == "5" || code == "6"
        }
        _ => false,
    }
}

/// Pool settings shared by both backends.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

/// Opens the store named by `url` and brings its schema up to date.
pub async fn connect(url: &str, pool: PoolSettings) -> Result<Arc<dyn OrderStore>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, pool).await?))
    } else {
        Ok(Arc::new(PgStore::connect(url, pool).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_exhaustion_and_io_are_unavailable_not_bugs() {
        assert!(matches!(StoreError::from(sqlx::Error::PoolTimedOut), StoreError::Unavailable(_)));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(matches!(StoreError::from(sqlx::Error::Io(io)), StoreError::Unavailable(_)));
        let cut = sqlx::Error::Protocol("unexpected response from SSLRequest: 0x00".into());
        assert!(matches!(StoreError::from(cut), StoreError::Unavailable(_)));
        assert!(matches!(StoreError::from(sqlx::Error::RowNotFound), StoreError::Query(_)));
        assert!(matches!(StoreError::from(sqlx::Error::ColumnNotFound("x".into())), StoreError::Query(_)));
    }
}
