//! The production store: PostgreSQL's SQL text, its one-statement order insert and the relay's
//! lock-holding claim.

use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgQueryResult};
use sqlx::{Connection, PgConnection, Postgres, Transaction};

use super::group::Outcome;
use super::pg_insert::{self, NewOrder};
use super::row::{ClaimedRow, claimed, select_orders};
use super::sql::{Dialect, Queries, SqlStore};
use crate::config::DatabaseConfig;
use crate::domain::idempotency::KeyCompletion;
use crate::domain::outbox::{Claim, OutboxRow, Settlement};
use crate::domain::{Order, StoreError};
use crate::telemetry::traces::propagation::TraceContext;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The `NOTIFY` channel relays listen on (`storage::listen`).
pub const OUTBOX_CHANNEL: &str = "order_service_outbox";

pub type PgStore = SqlStore<Postgres>;

/// A pooled connection used more recently than this is handed out without a ping.
const ALIVE_BYPASS_WINDOW: std::time::Duration = std::time::Duration::from_millis(500);

/// sqlx's default, stated so that parked connections (`storage::warm`) retire at the same age.
const MAX_LIFETIME: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Pool connections statements never park: one for the relay's claim transaction, one for
/// `/health/ready`'s check, which take theirs from the pool directly.
const RESERVED_CONNECTIONS: u32 = 2;

impl PgStore {
    /// Migrates over one connection to `DATABASE_SESSION_URL`, then opens the pool on
    /// `DATABASE_URL`. sqlx holds a session advisory lock while migrating (which a transaction
    /// pooler would not keep), so instances starting together apply each migration once and the
    /// others wait.
    pub async fn connect(settings: &DatabaseConfig) -> Result<Self, StoreError> {
        let session = options(&settings.session_url, settings.statement_cache_capacity)?;
        let mut migrating = PgConnection::connect_with(&session).await?;
        MIGRATOR.run(&mut migrating).await.map_err(|e| StoreError::from(sqlx::Error::from(e)))?;
        migrating.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .max_lifetime(MAX_LIFETIME)
            // sqlx pings every idle connection it hands out: one more round trip (and wake-up)
            // per statement. Like HikariCP's `aliveBypassWindowMs` (500 ms), a connection used
            // within the last half second is handed out as it is; one idle longer is pinged.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= ALIVE_BYPASS_WINDOW {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options(&settings.url, settings.statement_cache_capacity)?)
            .await?;
        let persistent = settings.statement_cache_capacity > 0;
        // Statements park their connections between uses (`storage::warm`); the pool keeps
        // `RESERVED_CONNECTIONS` free of that for the relay's claim and the readiness check.
        // Without the statement cache each statement is its own transaction and nothing is parked.
        let parked = if persistent { settings.max_connections.saturating_sub(RESERVED_CONNECTIONS) } else { 0 };
        let mut store = Self::new(pool, persistent).parking(parked as usize, ALIVE_BYPASS_WINDOW, MAX_LIFETIME);
        store.inserts = Some(pg_insert::group(store.clone(), settings.insert_writers, settings.insert_batch_max));
        Ok(store)
    }
}

/// `url` as the service connects to it.
pub(super) fn options(url: &str, statement_cache_capacity: usize) -> Result<PgConnectOptions, StoreError> {
    Ok(PgConnectOptions::from_str(url)?
        .application_name("order-service")
        .statement_cache_capacity(statement_cache_capacity))
}

#[async_trait]
impl Dialect for Postgres {
    const SYSTEM: &'static str = "postgresql";
    const BACKEND: &'static str = "postgres";
    const SQL: Queries = Queries {
        lease_key: "INSERT INTO idempotency_keys (key, fingerprint, token, locked_until, expires_at, created_at) \
             VALUES ($1, $2, $3, $5, $6, $4) \
             ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, token = EXCLUDED.token, \
               locked_until = EXCLUDED.locked_until, expires_at = EXCLUDED.expires_at, \
               created_at = EXCLUDED.created_at, order_id = NULL, response_status = NULL, response_body = NULL \
             WHERE idempotency_keys.expires_at <= $4 \
                OR (idempotency_keys.response_status IS NULL AND idempotency_keys.locked_until <= $4) \
             RETURNING token",
        find_key: "SELECT fingerprint, order_id, response_status, response_body, created_at, locked_until \
             FROM idempotency_keys WHERE key = $1",
        release_key: "DELETE FROM idempotency_keys WHERE key = $1 AND token = $2 AND response_status IS NULL",
        purge_keys: "DELETE FROM idempotency_keys \
             WHERE expires_at <= $1 AND (response_status IS NOT NULL OR locked_until <= $1)",
        get_order: concat!(select_orders!(), " WHERE o.id = $1"),
        list_orders: concat!(
            select_orders!(),
            " WHERE ($1::text IS NULL OR o.user_id = $1) AND ($2::uuid IS NULL OR o.id > $2)",
            " ORDER BY o.id LIMIT $3"
        ),
        // `SKIP LOCKED` lets a concurrent relay (or this relay's next batch) take the next rows
        // instead of waiting. `published_at` and `claimed_until` are written only by relays of
        // the version before 0004 (a lease instead of a lock): honouring them keeps a rolling
        // upgrade from publishing a row twice.
        claim_outbox: "SELECT id, order_id, payload::text AS payload, created_at, attempts, traceparent, tracestate \
             FROM outbox \
             WHERE published_at IS NULL AND next_attempt_at <= $1 \
               AND (claimed_until IS NULL OR claimed_until <= $1) \
             ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
        record_failure: "UPDATE outbox SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3 \
             WHERE id = $1",
        count_pending: "SELECT count(*) FROM outbox WHERE published_at IS NULL",
    };

    /// Grouped with the orders placed at the same time (`pg_insert`); the span says how many
    /// orders the statement carried when it was more than this one.
    async fn insert_order(
        store: &PgStore,
        order: &Order,
        key: Option<&KeyCompletion>,
        trace: Option<&TraceContext>,
    ) -> Result<(), StoreError> {
        let order = NewOrder::new(order, key, trace);
        let size = match &store.inserts {
            // As long as a statement would wait for a connection: writers held by a database that
            // stopped answering make an order unavailable (503), not hang.
            Some(inserts) => match inserts.submit(order, store.pool.options().get_acquire_timeout()).await {
                Outcome::Done(result) => result?,
                Outcome::Impatient => return Err(sqlx::Error::PoolTimedOut.into()),
                Outcome::Stopped => return Err(StoreError::Unavailable("the store is shutting down".into())),
            },
            // A store that does not group (only the group's own copy, which writes batches directly).
            None => pg_insert::write(store, vec![order]).await.pop().expect("one result per order")?,
        };
        if size > 1 {
            tracing::Span::current().record("db.operation.batch.size", size);
        }
        Ok(())
    }

    /// A transaction holding the claimed rows' locks until settled: a relay that dies
    /// mid-batch rolls back (PostgreSQL ends the transaction with the connection) and its rows
    /// are claimable again at once. Nothing claimed: no transaction is kept.
    ///
    /// Its commit does not wait for the WAL flush (`synchronous_commit = off`, set in the same
    /// round trip as `BEGIN`): a database crash can at worst forget the last few settled batches,
    /// whose rows are then published again, which at-least-once delivery (and consumers
    /// de-duplicating on `message_id`) already allows. The order's own commit stays synchronous.
    async fn claim(store: &PgStore, now: DateTime<Utc>, limit: u32) -> Result<Box<dyn Claim>, StoreError> {
        let mut tx = store.pool.begin_with("BEGIN; SET LOCAL synchronous_commit = off").await?;
        let rows: Vec<ClaimedRow> = sqlx::query_as(Self::SQL.claim_outbox)
            .bind(now)
            .bind(i64::from(limit))
            .persistent(store.persistent)
            .fetch_all(&mut *tx)
            .await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(Box::new(PgClaim { tx: None, rows: Vec::new(), persistent: store.persistent }));
        }
        Ok(Box::new(PgClaim { tx: Some(tx), rows: claimed(rows), persistent: store.persistent }))
    }

    /// Its own statement, after the order's commit, never inside it: a transaction that
    /// notifies takes a database-wide lock from its commit until the commit is flushed, which
    /// serialised every order (pgbench of the order statement at 64 clients here: 3,300 tx/s
    /// without, 200–300 with `pg_notify` in it). A lost wake-up costs a poll at most, so this
    /// one commits without waiting for the flush.
    async fn announce(store: &PgStore) -> Result<(), StoreError> {
        let mut conn = store.conn().await?;
        sqlx::query("SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')")
            .bind(OUTBOX_CHANNEL)
            .persistent(store.persistent)
            .execute(conn.get())
            .await?;
        Ok(conn.done().await?)
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }
}

/// Claimed rows and the transaction holding their locks.
struct PgClaim {
    tx: Option<Transaction<'static, Postgres>>,
    rows: Vec<OutboxRow>,
    persistent: bool,
}

#[async_trait]
impl Claim for PgClaim {
    fn rows(&self) -> &[OutboxRow] {
        &self.rows
    }

    /// Deletes the published rows and counts the failures in the claim's transaction; a claim
    /// with neither only rolls back (no commit to flush).
    async fn settle(self: Box<Self>, settlement: &Settlement) -> Result<(), StoreError> {
        let Some(mut tx) = self.tx else { return Ok(()) };
        if settlement.published.is_empty() && settlement.failed.is_empty() {
            tx.rollback().await?;
            return Ok(());
        }
        if !settlement.published.is_empty() {
            sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
                .bind(&settlement.published)
                .persistent(self.persistent)
                .execute(&mut *tx)
                .await?;
        }
        for failure in &settlement.failed {
            sqlx::query(<Postgres as Dialect>::SQL.record_failure)
                .bind(failure.id)
                .bind(&failure.error)
                .bind(failure.retry_at)
                .persistent(self.persistent)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
