//! The embedded default store: one file, no server, same schema and behaviour as PostgreSQL.
//! SQLite's SQL text, and the statements SQLite shapes differently (no data-modifying CTEs, no
//! array binds, no row locks): each runs as one short transaction.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult};
use sqlx::types::Json;

use super::row::{ClaimedRow, claimed, degraded_column, select_orders};
use super::sql::{Dialect, Queries, SqlStore};
use crate::config::DatabaseConfig;
use crate::domain::idempotency::KeyCompletion;
use crate::domain::outbox::{Claim, OutboxRow, Settlement};
use crate::domain::{Order, StoreError};
use crate::telemetry::traces::propagation::TraceContext;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

pub type SqliteStore = SqlStore<Sqlite>;

impl SqliteStore {
    /// Opens (creating if needed) and migrates. WAL lets readers proceed while one writer
    /// commits; the busy timeout queues writers instead of failing them.
    pub async fn connect(settings: &DatabaseConfig) -> Result<Self, StoreError> {
        let url = settings.url.as_str();
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        // An in-memory database lives as long as its one connection.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool = SqlitePoolOptions::new()
            .max_connections(if in_memory { 1 } else { settings.max_connections })
            .min_connections(u32::from(in_memory))
            .idle_timeout((!in_memory).then_some(Duration::from_secs(600)))
            .max_lifetime((!in_memory).then_some(Duration::from_secs(1800)))
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await.map_err(|e| StoreError::from(sqlx::Error::from(e)))?;
        Ok(Self::new(pool, true))
    }
}

#[async_trait]
impl Dialect for Sqlite {
    const SYSTEM: &'static str = "sqlite";
    const BACKEND: &'static str = "sqlite";
    const SQL: Queries = Queries {
        lease_key: "INSERT INTO idempotency_keys (key, fingerprint, token, locked_until, expires_at, created_at) \
             VALUES (?1, ?2, ?3, ?5, ?6, ?4) \
             ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, token = EXCLUDED.token, \
               locked_until = EXCLUDED.locked_until, expires_at = EXCLUDED.expires_at, \
               created_at = EXCLUDED.created_at, order_id = NULL, response_status = NULL, response_body = NULL \
             WHERE idempotency_keys.expires_at <= ?4 \
                OR (idempotency_keys.response_status IS NULL AND idempotency_keys.locked_until <= ?4) \
             RETURNING token",
        find_key: "SELECT fingerprint, order_id, response_status, response_body, created_at, locked_until \
             FROM idempotency_keys WHERE key = ?1",
        release_key: "DELETE FROM idempotency_keys WHERE key = ?1 AND token = ?2 AND response_status IS NULL",
        purge_keys: "DELETE FROM idempotency_keys \
             WHERE expires_at <= ?1 AND (response_status IS NOT NULL OR locked_until <= ?1)",
        get_order: concat!(select_orders!(), " WHERE o.id = ?"),
        list_orders: concat!(
            select_orders!(),
            " WHERE (?1 IS NULL OR o.user_id = ?1) AND (?2 IS NULL OR o.id > ?2)",
            " ORDER BY o.id LIMIT ?3"
        ),
        // The rows this process holds are skipped in `claim`: one process, one relay.
        claim_outbox: "SELECT id, order_id, CAST(payload AS TEXT) AS payload, created_at, attempts, traceparent, \
             tracestate FROM outbox \
             WHERE published_at IS NULL AND next_attempt_at <= ?1 ORDER BY id LIMIT ?2",
        record_failure: "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3 \
             WHERE id = ?1",
        count_pending: "SELECT count(*) FROM outbox WHERE published_at IS NULL",
    };

    async fn insert_order(
        store: &SqliteStore,
        order: &Order,
        key: Option<&KeyCompletion>,
        trace: Option<&TraceContext>,
    ) -> Result<(), StoreError> {
        let mut tx = store.pool.begin().await?;
        sqlx::query(
            "INSERT INTO orders (id, user_id, product_code, customer_fullname, product_name, \
             total_amount_cents, created_at, degraded) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(order.id)
        .bind(&order.user_id)
        .bind(&order.product_code)
        .bind(&order.customer_fullname)
        .bind(&order.product_name)
        .bind(order.total_amount.cents())
        .bind(order.created_at)
        .bind(degraded_column(order))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO outbox (order_id, event_type, payload, created_at, next_attempt_at, traceparent, tracestate) \
             VALUES (?1, 'order.created', ?2, ?3, ?3, ?4, ?5)",
        )
        .bind(order.id)
        .bind(Json(order.created_payload()))
        .bind(order.created_at)
        .bind(trace.map(|t| t.traceparent.as_str()))
        .bind(trace.and_then(|t| t.tracestate.as_deref()))
        .execute(&mut *tx)
        .await?;
        if let Some(done) = key {
            let completed = sqlx::query(
                "UPDATE idempotency_keys SET order_id = ?1, response_status = ?2, response_body = ?3 \
                 WHERE key = ?4 AND token = ?5 AND response_status IS NULL",
            )
            .bind(order.id)
            .bind(i32::from(done.status))
            .bind(&done.body)
            .bind(done.lease.key.as_str())
            .bind(done.lease.token)
            .execute(&mut *tx)
            .await?;
            if completed.rows_affected() == 0 {
                return Err(StoreError::KeyLeaseLost); // dropping `tx` rolls the order back
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// No transaction is held while publishing (SQLite has one writer: it would hold up every
    /// order); the rows this process already holds are skipped instead.
    async fn claim(store: &SqliteStore, now: DateTime<Utc>, limit: u32) -> Result<Box<dyn Claim>, StoreError> {
        let holding = store.held.lock().map_or(0, |held| held.len());
        let rows: Vec<ClaimedRow> = sqlx::query_as(Self::SQL.claim_outbox)
            .bind(now)
            .bind(i64::from(limit).saturating_add(i64::try_from(holding).unwrap_or(i64::MAX)))
            .fetch_all(&store.pool)
            .await?;
        // Filtered and taken under one lock, so two claims never take the same row.
        let mut held = store.held.lock().map_err(|_| StoreError::Query("outbox claims: poisoned lock".into()))?;
        let wanted = usize::try_from(limit).unwrap_or(usize::MAX);
        let rows: Vec<OutboxRow> =
            claimed(rows).into_iter().filter(|row| !held.contains(&row.id)).take(wanted).collect();
        held.extend(rows.iter().map(|row| row.id));
        Ok(Box::new(SqliteClaim { store: store.clone(), rows }))
    }

    async fn announce(_: &SqliteStore) -> Result<(), StoreError> {
        Ok(())
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

/// Rows this process holds until settled or dropped.
struct SqliteClaim {
    store: SqliteStore,
    rows: Vec<OutboxRow>,
}

#[async_trait]
impl Claim for SqliteClaim {
    fn rows(&self) -> &[OutboxRow] {
        &self.rows
    }

    /// One transaction: one fsync for the whole batch.
    async fn settle(self: Box<Self>, settlement: &Settlement) -> Result<(), StoreError> {
        if settlement.published.is_empty() && settlement.failed.is_empty() {
            return Ok(());
        }
        let mut tx = self.store.pool.begin().await?;
        for id in &settlement.published {
            sqlx::query("DELETE FROM outbox WHERE id = ?1").bind(id).execute(&mut *tx).await?;
        }
        for failure in &settlement.failed {
            sqlx::query(<Sqlite as Dialect>::SQL.record_failure)
                .bind(failure.id)
                .bind(&failure.error)
                .bind(failure.retry_at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

impl Drop for SqliteClaim {
    /// Settled or not, the rows are no longer this claim's.
    fn drop(&mut self) {
        if let Ok(mut held) = self.store.held.lock() {
            for row in &self.rows {
                held.remove(&row.id);
            }
        }
    }
}
