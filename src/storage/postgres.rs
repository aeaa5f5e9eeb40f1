//! The production store.

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use uuid::Uuid;

use super::row::{OrderRow, select_orders};
use super::{ListFilter, OrderStore, PoolSettings, StoreError};
use crate::domain::Order;
use crate::outbox::Outbox;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects and migrates. sqlx holds a PostgreSQL advisory lock while migrating, so
    /// instances starting together apply each migration once and the others wait.
    pub async fn connect(url: &str, settings: PoolSettings) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?.application_name("order-service");
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await.map_err(|e| StoreError::from(sqlx::Error::from(e)))?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl OrderStore for PgStore {
    async fn insert_order(&self, order: &Order) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO orders (id, user_id, product_code, customer_fullname, product_name, \
             total_amount_cents, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
             VALUES ($1, 'order.created', $2, $3, $3)",
        )
        .bind(order.id)
        .bind(Json(order.created_payload()))
        .bind(order.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_order(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        let row: Option<OrderRow> =
            sqlx::query_as(concat!(select_orders!(), " WHERE o.id = $1")).bind(id).fetch_optional(&self.pool).await?;
        row.map(Order::try_from).transpose()
    }

    async fn list_orders(&self, filter: &ListFilter) -> Result<Vec<Order>, StoreError> {
        let rows: Vec<OrderRow> = sqlx::query_as(concat!(
            select_orders!(),
            " WHERE ($1::text IS NULL OR o.user_id = $1) AND ($2::uuid IS NULL OR o.id > $2)",
            " ORDER BY o.id LIMIT $3"
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
        "postgres"
    }

    fn outbox(&self) -> Arc<dyn Outbox> {
        Arc::new(self.clone())
    }
}
