//! The row shape both backends read orders into.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreError;
use crate::domain::{Money, Order, Upstream};
use crate::telemetry::traces::propagation::TraceContext;

/// `SELECT … FROM orders o LEFT JOIN outbox x` with the columns of [`OrderRow`], for both
/// backends; a macro so each query stays one `&'static str` (prepared once, cached by sqlx).
macro_rules! select_orders {
    () => {
        "SELECT o.id, o.user_id, o.product_code, o.customer_fullname, o.product_name, \
         o.total_amount_cents, o.created_at, o.degraded, \
         (x.order_id IS NULL OR x.published_at IS NOT NULL) AS published \
         FROM orders o LEFT JOIN outbox x ON x.order_id = o.id"
    };
}
pub(super) use select_orders;

#[derive(sqlx::FromRow)]
pub(super) struct OrderRow {
    id: Uuid,
    user_id: String,
    product_code: String,
    customer_fullname: String,
    product_name: String,
    total_amount_cents: i64,
    created_at: DateTime<Utc>,
    degraded: String,
    published: bool,
}

impl TryFrom<OrderRow> for Order {
    type Error = StoreError;

    fn try_from(row: OrderRow) -> Result<Self, StoreError> {
        let total_amount = Money::from_cents(row.total_amount_cents)
            .map_err(|e| StoreError::from(sqlx::Error::Decode(Box::new(e))))?;
        let degraded = parse_degraded(&row.degraded)
            .ok_or_else(|| StoreError::from(sqlx::Error::Decode(format!("degraded {:?}", row.degraded).into())))?;
        Ok(Order {
            id: row.id,
            user_id: row.user_id,
            product_code: row.product_code,
            customer_fullname: row.customer_fullname,
            product_name: row.product_name,
            total_amount,
            created_at: row.created_at,
            published: row.published,
            degraded,
        })
    }
}

/// The `degraded` column: upstream names, comma-separated, in `Upstream::ALL` order.
pub(super) fn degraded_column(order: &Order) -> String {
    order.degraded.iter().map(|u| u.as_str()).collect::<Vec<_>>().join(",")
}

fn parse_degraded(column: &str) -> Option<Vec<Upstream>> {
    column
        .split(',')
        .filter(|name| !name.is_empty())
        .map(|name| Upstream::ALL.into_iter().find(|u| u.as_str() == name))
        .collect()
}

/// An outbox row as the claim returns it (both backends).
#[derive(sqlx::FromRow)]
pub(super) struct ClaimedRow {
    id: i64,
    order_id: Uuid,
    payload: String,
    created_at: DateTime<Utc>,
    attempts: i32,
    traceparent: Option<String>,
    tracestate: Option<String>,
}

/// Claimed rows in publish (id) order: `RETURNING` does not promise one.
pub(super) fn claimed(rows: Vec<ClaimedRow>) -> Vec<crate::domain::OutboxRow> {
    let mut rows: Vec<_> = rows
        .into_iter()
        .map(|r| crate::domain::OutboxRow {
            id: r.id,
            order_id: r.order_id,
            payload: r.payload,
            created_at: r.created_at,
            attempts: r.attempts,
            trace: r.traceparent.map(|traceparent| TraceContext { traceparent, tracestate: r.tracestate }),
        })
        .collect();
    rows.sort_by_key(|row| row.id);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_degraded_column_reads_back_what_was_written() {
        for degraded in [vec![], vec![Upstream::Product], vec![Upstream::User, Upstream::Product]] {
            let column = degraded.iter().map(|u| u.as_str()).collect::<Vec<_>>().join(",");
            assert_eq!(parse_degraded(&column), Some(degraded), "{column:?}");
        }
        assert_eq!(parse_degraded("stock"), None, "an unknown name is an error, not dropped");
    }
}
