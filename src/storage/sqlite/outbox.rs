//! The outbox contract on SQLite: one process, one writer at a time, so the claim needs no
//! row locks; the lease still keeps a row from being sent twice if two relays ever share a file.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::SqliteStore;
use crate::domain::StoreError;
use crate::domain::outbox::{OutboxRow, OutboxStore, chrono_duration};
use crate::storage::row::ClaimedRow;

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn claim(&self, now: DateTime<Utc>, lease: Duration, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
        let rows: Vec<ClaimedRow> = sqlx::query_as(
            "UPDATE outbox SET claimed_until = ?2 WHERE id IN ( \
               SELECT id FROM outbox \
               WHERE published_at IS NULL AND next_attempt_at <= ?1 \
                 AND (claimed_until IS NULL OR claimed_until <= ?1) \
               ORDER BY id LIMIT ?3) \
             RETURNING id, order_id, CAST(payload AS TEXT) AS payload, created_at, attempts",
        )
        .bind(now)
        .bind(now + chrono_duration(lease))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        Ok(super::super::row::claimed(rows))
    }

    async fn mark_published(&self, ids: &[i64], now: DateTime<Utc>) -> Result<(), StoreError> {
        // One transaction: one fsync for the whole batch.
        let mut tx = self.pool().begin().await?;
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

    async fn record_failure(&self, id: i64, error: &str, retry_at: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3, \
             claimed_until = NULL WHERE id = ?1",
        )
        .bind(id)
        .bind(error)
        .bind(retry_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn release(&self, ids: &[i64]) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        for id in ids {
            sqlx::query("UPDATE outbox SET claimed_until = NULL WHERE id = ?1 AND published_at IS NULL")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn count_pending(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetch_one(self.pool()).await?)
    }
}
