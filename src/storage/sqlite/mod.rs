//! The embedded default store: one file, no server, same schema and behaviour as PostgreSQL.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::types::Json;
use uuid::Uuid;

use super::keys::KeyRow;
use super::row::{OrderRow, select_orders};
use crate::config::DatabaseConfig;
use crate::domain::idempotency::{HeldLease, KeyClaim, KeyCompletion, KeyLease, KeyTimes};
use crate::domain::{ListFilter, Order, OrderStore, StoreError};

mod outbox;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

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

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait]
impl OrderStore for SqliteStore {
    async fn insert_order(&self, order: &Order, key: Option<&KeyCompletion>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO orders (id, user_id, product_code, customer_fullname, product_name, \
             total_amount_cents, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(order.id)
        .bind(&order.user_id)
        .bind(&order.product_code)
        .bind(&order.customer_fullname)
        .bind(&order.product_name)
        .bind(order.total_amount.cents())
        .bind(order.created_at)
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

    async fn claim_key(&self, lease: &KeyLease, fingerprint: &str, times: KeyTimes) -> Result<KeyClaim, StoreError> {
        // A key released between the two statements is tried again; twice is plenty.
        for _ in 0..3 {
            let leased: Option<(Uuid,)> = sqlx::query_as(
                "INSERT INTO idempotency_keys (key, fingerprint, token, locked_until, expires_at, created_at) \
                 VALUES (?1, ?2, ?3, ?5, ?6, ?4) \
                 ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, token = EXCLUDED.token, \
                   locked_until = EXCLUDED.locked_until, expires_at = EXCLUDED.expires_at, \
                   created_at = EXCLUDED.created_at, order_id = NULL, response_status = NULL, response_body = NULL \
                 WHERE idempotency_keys.expires_at <= ?4 \
                    OR (idempotency_keys.response_status IS NULL AND idempotency_keys.locked_until <= ?4) \
                 RETURNING token",
            )
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
            let held: Option<KeyRow> = sqlx::query_as(
                "SELECT fingerprint, order_id, response_status, response_body, created_at, locked_until \
                 FROM idempotency_keys WHERE key = ?1",
            )
            .bind(lease.key.as_str())
            .fetch_optional(&self.pool)
            .await?;
            if let Some(held) = held {
                return held.into_claim(fingerprint);
            }
        }
        // Taken and released three times over meanwhile: busy, but by short-lived holders.
        Ok(KeyClaim::InFlight { same_request: true, held: HeldLease { since: times.now, until: times.now } })
    }

    async fn release_key(&self, lease: &KeyLease) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE key = ?1 AND token = ?2 AND response_status IS NULL")
            .bind(lease.key.as_str())
            .bind(lease.token)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn purge_keys(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let purged = sqlx::query(
            "DELETE FROM idempotency_keys WHERE expires_at <= ?1 AND (response_status IS NOT NULL OR locked_until <= ?1)",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(purged.rows_affected())
    }

    async fn get_order(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        let row: Option<OrderRow> =
            sqlx::query_as(concat!(select_orders!(), " WHERE o.id = ?")).bind(id).fetch_optional(&self.pool).await?;
        row.map(Order::try_from).transpose()
    }

    async fn list_orders(&self, filter: &ListFilter) -> Result<Vec<Order>, StoreError> {
        let rows: Vec<OrderRow> = sqlx::query_as(concat!(
            select_orders!(),
            " WHERE (?1 IS NULL OR o.user_id = ?1) AND (?2 IS NULL OR o.id > ?2)",
            " ORDER BY o.id LIMIT ?3"
        ))
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
        "sqlite"
    }
}
