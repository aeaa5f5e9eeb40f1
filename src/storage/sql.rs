//! The control flow both backends share, written once over sqlx's generic [`Database`]: each
//! backend ([`Dialect`]) supplies only its SQL text and the few statements whose shape differs
//! (placing an order is one CTE on PostgreSQL and a short transaction on SQLite; batch updates
//! bind an array on PostgreSQL and loop in one transaction on SQLite).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, Type};
use tracing::Instrument;
use uuid::Uuid;

use super::keys::KeyRow;
use super::row::{ClaimedRow, OrderRow, claimed};
use crate::domain::idempotency::{HeldLease, KeyClaim, KeyCompletion, KeyLease, KeyTimes};
use crate::domain::outbox::{OutboxRow, OutboxStore, chrono_duration};
use crate::domain::{ListFilter, Order, OrderStore, StoreError};

/// The SQL text of the shared statements, in each backend's placeholder syntax.
pub(super) struct Queries {
    /// Leases a key unless held or completed: binds key, fingerprint, token, now, lease_until,
    /// expires_at; returns the token when leased.
    pub lease_key: &'static str,
    /// The row of a key that is held: binds key.
    pub find_key: &'static str,
    /// Binds key, token.
    pub release_key: &'static str,
    /// Binds now.
    pub purge_keys: &'static str,
    /// Binds id.
    pub get_order: &'static str,
    /// Binds user_id (nullable), after (nullable), limit.
    pub list_orders: &'static str,
    /// Binds now, claimed_until, limit; returns the claimed rows.
    pub claim_outbox: &'static str,
    /// Binds id, error, retry_at.
    pub record_failure: &'static str,
    pub count_pending: &'static str,
}

/// What differs between backends.
#[async_trait]
pub(super) trait Dialect: Database {
    /// `postgres` or `sqlite`, for `/health/ready`.
    const BACKEND: &'static str;
    /// `db.system.name` of the semantic conventions.
    const SYSTEM: &'static str;
    const SQL: Queries;
    /// The order, its outbox row and the key's completion: all or nothing.
    async fn insert_order(pool: &Pool<Self>, order: &Order, key: Option<&KeyCompletion>) -> Result<(), StoreError>;
    async fn mark_published(pool: &Pool<Self>, ids: &[i64], now: DateTime<Utc>) -> Result<(), StoreError>;
    async fn release(pool: &Pool<Self>, ids: &[i64]) -> Result<(), StoreError>;
    /// sqlx has no generic way to read it.
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

/// A store on one backend's pool; `PgStore` and `SqliteStore` are this over their dialect.
#[derive(Debug)]
pub struct SqlStore<DB: Database> {
    pub(super) pool: Pool<DB>,
}

impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        Self { pool: self.pool.clone() }
    }
}

impl<DB: Database> SqlStore<DB> {
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }
}

#[async_trait]
impl<DB> OrderStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'r> KeyRow: FromRow<'r, DB::Row>,
    for<'r> OrderRow: FromRow<'r, DB::Row>,
    for<'r> (Uuid,): FromRow<'r, DB::Row>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> Uuid: Encode<'q, DB> + Type<DB>,
    for<'q> Option<Uuid>: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    /// The order's transaction, as a client span of the database semantic conventions.
    async fn insert_order(&self, order: &Order, key: Option<&KeyCompletion>) -> Result<(), StoreError> {
        let span = tracing::info_span!(
            "insert_order",
            otel.name = "INSERT orders",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            db.system.name = DB::SYSTEM,
            db.operation.name = "INSERT",
            db.collection.name = "orders",
        );
        let result = DB::insert_order(&self.pool, order, key).instrument(span.clone()).await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }

    async fn claim_key(&self, lease: &KeyLease, fingerprint: &str, times: KeyTimes) -> Result<KeyClaim, StoreError> {
        // A key released between the two statements is tried again; twice is plenty.
        for _ in 0..3 {
            let leased: Option<(Uuid,)> = sqlx::query_as(DB::SQL.lease_key)
                .bind(lease.key.as_str())
                .bind(fingerprint)
                .bind(lease.token)
                .bind(times.now)
                .bind(times.lease_until)
                .bind(times.expires_at)
                .fetch_optional(&self.pool)
                .await?;
            if leased.is_some() {
                return Ok(KeyClaim::Leased(lease.clone()));
            }
            let held: Option<KeyRow> =
                sqlx::query_as(DB::SQL.find_key).bind(lease.key.as_str()).fetch_optional(&self.pool).await?;
            if let Some(held) = held {
                return held.into_claim(fingerprint);
            }
        }
        // Taken and released three times over meanwhile: busy, but by short-lived holders.
        Ok(KeyClaim::InFlight { same_request: true, held: HeldLease { since: times.now, until: times.now } })
    }

    async fn release_key(&self, lease: &KeyLease) -> Result<(), StoreError> {
        sqlx::query(DB::SQL.release_key).bind(lease.key.as_str()).bind(lease.token).execute(&self.pool).await?;
        Ok(())
    }

    async fn purge_keys(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let purged = sqlx::query(DB::SQL.purge_keys).bind(now).execute(&self.pool).await?;
        Ok(DB::rows_affected(&purged))
    }

    async fn get_order(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        let row: Option<OrderRow> = sqlx::query_as(DB::SQL.get_order).bind(id).fetch_optional(&self.pool).await?;
        row.map(Order::try_from).transpose()
    }

    async fn list_orders(&self, filter: &ListFilter) -> Result<Vec<Order>, StoreError> {
        let rows: Vec<OrderRow> = sqlx::query_as(DB::SQL.list_orders)
            .bind(filter.user_id.as_deref())
            .bind(filter.after)
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(Order::try_from).collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        DB::BACKEND
    }
}

#[async_trait]
impl<DB> OutboxStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: IntoArguments<DB>,
    for<'r> ClaimedRow: FromRow<'r, DB::Row>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    (i64,): for<'r> FromRow<'r, DB::Row>,
{
    async fn claim(&self, now: DateTime<Utc>, lease: Duration, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
        let rows: Vec<ClaimedRow> = sqlx::query_as(DB::SQL.claim_outbox)
            .bind(now)
            .bind(now + chrono_duration(lease))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(claimed(rows))
    }

    async fn mark_published(&self, ids: &[i64], now: DateTime<Utc>) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        DB::mark_published(&self.pool, ids, now).await
    }

    async fn record_failure(&self, id: i64, error: &str, retry_at: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(DB::SQL.record_failure).bind(id).bind(error).bind(retry_at).execute(&self.pool).await?;
        Ok(())
    }

    async fn release(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        DB::release(&self.pool, ids).await
    }

    async fn count_pending(&self) -> Result<i64, StoreError> {
        let (pending,): (i64,) = sqlx::query_as(DB::SQL.count_pending).fetch_one(&self.pool).await?;
        Ok(pending)
    }
}
