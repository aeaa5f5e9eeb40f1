//! The control flow both backends share, written once over sqlx's generic [`Database`]: each
//! backend ([`Dialect`]) supplies only its SQL text and the few statements whose shape differs
//! (placing an order is one CTE on PostgreSQL and a short transaction on SQLite; a relay's claim
//! is a transaction holding row locks on PostgreSQL and an in-process set on SQLite).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::database::HasStatementCache;
use sqlx::pool::PoolConnection;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Transaction, Type};
use tracing::Instrument;
use uuid::Uuid;

use super::keys::KeyRow;
use super::pg_insert::Inserts;
use super::row::OrderRow;
use super::warm::{Turn, Warm};
use crate::domain::idempotency::{HeldLease, KeyClaim, KeyCompletion, KeyLease, KeyTimes};
use crate::domain::outbox::{Claim, OutboxStore};
use crate::domain::{ListFilter, Order, OrderStore, StoreError};
use crate::telemetry::traces::propagation::{self, TraceContext};

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
    /// Binds now, limit; returns due rows in id order (`ClaimedRow`).
    pub claim_outbox: &'static str,
    /// Binds id, error, retry_at.
    pub record_failure: &'static str,
    pub count_pending: &'static str,
}

/// What differs between backends.
#[async_trait]
pub(super) trait Dialect: Database + HasStatementCache {
    /// `postgres` or `sqlite`, for `/health/ready`.
    const BACKEND: &'static str;
    /// `db.system.name` of the semantic conventions.
    const SYSTEM: &'static str;
    const SQL: Queries;
    /// The order, its outbox row (with the placing request's trace context, if traced) and the
    /// key's completion: all or nothing.
    async fn insert_order(
        store: &SqlStore<Self>,
        order: &Order,
        key: Option<&KeyCompletion>,
        trace: Option<&TraceContext>,
    ) -> Result<(), StoreError>;
    /// See [`OutboxStore::claim`].
    async fn claim(store: &SqlStore<Self>, now: DateTime<Utc>, limit: u32) -> Result<Box<dyn Claim>, StoreError>;
    /// See [`OutboxStore::announce`].
    async fn announce(store: &SqlStore<Self>) -> Result<(), StoreError>;
    /// sqlx has no generic way to read it.
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

/// A pooled connection, or without the statement cache a transaction: sqlx parses an unnamed
/// statement and binds it in two round trips, and a transaction pooler (PgBouncer 1.18) may hand
/// the server connection to another client in between — measured here: "bind message supplies
/// 12 parameters, but prepared statement \"\" requires 6", another client's statement. Inside a
/// transaction both reach the same server connection; the price is `BEGIN` and `COMMIT`.
pub(super) enum Conn<DB: Database> {
    Pooled(PoolConnection<DB>),
    /// Taken through the warm set, and parked there again when the statement is done.
    Warm(PoolConnection<DB>, Turn<PoolConnection<DB>>),
    Tx(Transaction<'static, DB>),
}

impl<DB: Database> Conn<DB> {
    pub(super) fn get(&mut self) -> &mut DB::Connection {
        match self {
            Conn::Pooled(conn) | Conn::Warm(conn, _) => conn,
            Conn::Tx(tx) => tx,
        }
    }

    /// The statement ended cleanly: commits its transaction, if it has one, or parks its
    /// connection for the next statement. (Dropped instead, a connection goes back to the pool.)
    pub(super) async fn done(self) -> Result<(), sqlx::Error> {
        match self {
            Conn::Pooled(_) => Ok(()),
            Conn::Warm(conn, turn) => {
                turn.park(conn);
                Ok(())
            }
            Conn::Tx(tx) => tx.commit().await,
        }
    }
}

/// A store on one backend's pool; `PgStore` and `SqliteStore` are this over their dialect.
#[derive(Debug)]
pub struct SqlStore<DB: Database> {
    pub(super) pool: Pool<DB>,
    /// Whether statements are prepared under a name and cached (a `DATABASE_STATEMENT_CACHE_CAPACITY`
    /// above 0). Without the cache sqlx would still name each statement and never close it, which
    /// leaks server memory and collides behind a transaction pooler: unnamed it is.
    pub(super) persistent: bool,
    /// Outbox rows claimed in this process (SQLite has no row locks; one process uses it).
    pub(super) held: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<i64>>>,
    /// Connections parked between statements (see `warm`); PostgreSQL with the statement cache.
    warm: Option<Arc<Warm<PoolConnection<DB>>>>,
    /// Orders grouped into shared insert statements (see `group`); PostgreSQL only.
    pub(super) inserts: Option<Inserts>,
}

impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            persistent: self.persistent,
            held: self.held.clone(),
            warm: self.warm.clone(),
            inserts: self.inserts.clone(),
        }
    }
}

impl<DB: Database> SqlStore<DB> {
    pub(super) fn new(pool: Pool<DB>, persistent: bool) -> Self {
        Self { pool, persistent, held: Default::default(), warm: None, inserts: None }
    }

    /// Statements hold at most `size` connections, parked between them instead of given back
    /// (see `warm`); 0 turns parking off.
    pub(super) fn parking(mut self, size: usize, fresh_for: Duration, max_age: Duration) -> Self {
        self.warm = (size > 0).then(|| Warm::new(size, fresh_for, max_age));
        self
    }

    /// A connection for one statement; [`Conn::done`] after it.
    pub(super) async fn conn(&self) -> Result<Conn<DB>, sqlx::Error> {
        if !self.persistent {
            return Ok(Conn::Tx(self.pool.begin().await?));
        }
        let Some(warm) = &self.warm else { return Ok(Conn::Pooled(self.pool.acquire().await?)) };
        // The turn and the pool share the pool's acquire timeout (`DATABASE_ACQUIRE_TIMEOUT_MS`):
        // a statement waits no longer for both than it used to for the pool alone.
        let until = tokio::time::Instant::now() + self.pool.options().get_acquire_timeout();
        let timed_out = |_| sqlx::Error::PoolTimedOut;
        let mut turn = tokio::time::timeout_at(until, warm.turn()).await.map_err(timed_out)?;
        let conn = match turn.take() {
            Some(conn) => conn,
            None => tokio::time::timeout_at(until, self.pool.acquire()).await.map_err(timed_out)??,
        };
        Ok(Conn::Warm(conn, turn))
    }

    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }
}

#[async_trait]
impl<DB> OrderStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
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
    /// The order's transaction, as a client span of the database semantic conventions. The
    /// outbox row keeps the context of the span placing the order, for the relay's publish span.
    async fn insert_order(&self, order: &Order, key: Option<&KeyCompletion>) -> Result<(), StoreError> {
        let trace = propagation::current();
        let span = tracing::info_span!(
            "insert_order",
            otel.name = "INSERT orders",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            db.system.name = DB::SYSTEM,
            db.operation.name = "INSERT",
            db.collection.name = "orders",
            db.operation.batch.size = tracing::field::Empty,
        );
        let result = DB::insert_order(self, order, key, trace.as_ref()).instrument(span.clone()).await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }

    async fn claim_key(&self, lease: &KeyLease, fingerprint: &str, times: KeyTimes) -> Result<KeyClaim, StoreError> {
        // A key released between the two statements is tried again; twice is plenty.
        for _ in 0..3 {
            let mut conn = self.conn().await?;
            let leased: Option<(Uuid,)> = sqlx::query_as(DB::SQL.lease_key)
                .bind(lease.key.as_str())
                .bind(fingerprint)
                .bind(lease.token)
                .bind(times.now)
                .bind(times.lease_until)
                .bind(times.expires_at)
                .persistent(self.persistent)
                .fetch_optional(conn.get())
                .await?;
            conn.done().await?;
            if leased.is_some() {
                return Ok(KeyClaim::Leased(lease.clone()));
            }
            let mut conn = self.conn().await?;
            let held: Option<KeyRow> = sqlx::query_as(DB::SQL.find_key)
                .bind(lease.key.as_str())
                .persistent(self.persistent)
                .fetch_optional(conn.get())
                .await?;
            conn.done().await?;
            if let Some(held) = held {
                return held.into_claim(fingerprint);
            }
        }
        // Taken and released three times over meanwhile: busy, but by short-lived holders.
        Ok(KeyClaim::InFlight { same_request: true, held: HeldLease { since: times.now, until: times.now } })
    }

    async fn release_key(&self, lease: &KeyLease) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        sqlx::query(DB::SQL.release_key)
            .bind(lease.key.as_str())
            .bind(lease.token)
            .persistent(self.persistent)
            .execute(conn.get())
            .await?;
        Ok(conn.done().await?)
    }

    async fn purge_keys(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        let purged = sqlx::query(DB::SQL.purge_keys).bind(now).persistent(self.persistent).execute(conn.get()).await?;
        conn.done().await?;
        Ok(DB::rows_affected(&purged))
    }

    async fn get_order(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        let mut conn = self.conn().await?;
        let row: Option<OrderRow> =
            sqlx::query_as(DB::SQL.get_order).bind(id).persistent(self.persistent).fetch_optional(conn.get()).await?;
        conn.done().await?;
        row.map(Order::try_from).transpose()
    }

    async fn list_orders(&self, filter: &ListFilter) -> Result<Vec<Order>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<OrderRow> = sqlx::query_as(DB::SQL.list_orders)
            .bind(filter.user_id.as_deref())
            .bind(filter.after)
            .bind(i64::from(filter.limit))
            .persistent(self.persistent)
            .fetch_all(conn.get())
            .await?;
        conn.done().await?;
        rows.into_iter().map(Order::try_from).collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // The simple query protocol: one round trip, which any pooler passes. `sqlx::query` would
        // parse and bind in two round trips, between which PgBouncer in transaction pooling may
        // hand the server connection to another client (readiness then fails at random).
        sqlx::raw_sql("SELECT 1").execute(&self.pool).await?;
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
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: IntoArguments<DB>,
    (i64,): for<'r> FromRow<'r, DB::Row>,
{
    async fn claim(&self, now: DateTime<Utc>, limit: u32) -> Result<Box<dyn Claim>, StoreError> {
        DB::claim(self, now, limit).await
    }

    async fn count_pending(&self) -> Result<i64, StoreError> {
        let mut conn = self.conn().await?;
        let (pending,): (i64,) =
            sqlx::query_as(DB::SQL.count_pending).persistent(self.persistent).fetch_one(conn.get()).await?;
        conn.done().await?;
        Ok(pending)
    }

    async fn announce(&self) -> Result<(), StoreError> {
        DB::announce(self).await
    }
}
