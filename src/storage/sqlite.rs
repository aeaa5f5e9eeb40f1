//! The embedded default store: one file, no server, same schema and behaviour as PostgreSQL.
//! SQLite's SQL text, and the statements SQLite shapes differently (no data-modifying CTEs, no
//! array binds): each runs as one short transaction.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult};
use sqlx::types::Json;
use sqlx::{Sqlite, SqlitePool};

use super::row::{degraded_column, select_orders};
use super::sql::{Dialect, Queries, SqlStore};
use crate::config::DatabaseConfig;
use crate::domain::idempotency::KeyCompletion;
use crate::domain::{Order, StoreError};

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
        Ok(Self { pool })
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
        // One writer at a time, so the claim needs no row locks; the lease still keeps a row from
        // being sent twice if two relays ever share a file.
        claim_outbox: "UPDATE outbox SET claimed_until = ?2 WHERE id IN ( \
               SELECT id FROM outbox \
               WHERE published_at IS NULL AND next_attempt_at <= ?1 \
                 AND (claimed_until IS NULL OR claimed_until <= ?1) \
               ORDER BY id LIMIT ?3) \
             RETURNING id, order_id, CAST(payload AS TEXT) AS payload, created_at, attempts",
        record_failure: "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3, \
             claimed_until = NULL WHERE id = ?1",
        count_pending: "SELECT count(*) FROM outbox WHERE published_at IS NULL",
    };

    async fn insert_order(pool: &SqlitePool, order: &Order, key: Option<&KeyCompletion>) -> Result<(), StoreError> {
        let mut tx = pool.begin().await?;
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
            "INSERT INTO outbox (order_id, event_type, payload, created_at, next_attempt_at) \
             VALUES (?1, 'order.created', ?2, ?3, ?3)",
        )
        .bind(order.id)
        .bind(Json(order.created_payload()))
        .bind(order.created_at)
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

    /// One transaction: one fsync for the whole batch.
    async fn mark_published(pool: &SqlitePool, ids: &[i64], now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut tx = pool.begin().await?;
        for id in ids {
            sqlx::query("UPDATE outbox SET published_at = ?2, claimed_until = NULL WHERE id = ?1")
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn release(pool: &SqlitePool, ids: &[i64]) -> Result<(), StoreError> {
        let mut tx = pool.begin().await?;
        for id in ids {
            sqlx::query("UPDATE outbox SET claimed_until = NULL WHERE id = ?1 AND published_at IS NULL")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}
