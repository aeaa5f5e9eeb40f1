//! The outbox contract on PostgreSQL: safe for several relays (replicas) on one database.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::PgStore;
use crate::domain::StoreError;
use crate::domain::outbox::{OutboxRow, OutboxStore, chrono_duration};
use crate::storage::row::ClaimedRow;

#[async_trait]
impl OutboxStore for PgStore {
    /// One statement: `SKIP LOCKED` lets a concurrent relay take the next rows instead of
    /// waiting, and PostgreSQL re-checks the `WHERE` on rows another relay just claimed, so two
    /// relays never claim the same row while its lease runs.
    async fn claim(&self, now: DateTime<Utc>, lease: Duration, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
        let rows: Vec<ClaimedRow> = sqlx::query_as(
            "UPDATE outbox SET claimed_until = $2 WHERE id IN ( \
               SELECT id FROM outbox \
               WHERE published_at IS NULL AND next_attempt_at <= $1 \
                 AND (claimed_until IS NULL OR claimed_until <= $1) \
               ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING id, order_id, payload::text AS payload, created_at, attempts",
        )
        .bind(now)
        .bind(now + chrono_duration(lease))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        Ok(super::super::row::claimed(rows))
    }

    async fn mark_published(&self, ids: &[i64], now: DateTime<Utc>) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query("UPDATE outbox SET published_at = $2, claimed_until = NULL WHERE id = ANY($1)")
            .bind(ids)
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn record_failure(&self, id: i64, error: &str, retry_at: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3, \
             claimed_until = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(error)
        .bind(retry_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn release(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query("UPDATE outbox SET claimed_until = NULL WHERE id = ANY($1) AND published_at IS NULL")
            .bind(ids)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn count_pending(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetch_one(self.pool()).await?)
    }
}
