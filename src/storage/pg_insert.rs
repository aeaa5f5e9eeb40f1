//! PostgreSQL's order insert: one statement writes a batch of orders, their outbox rows and their
//! keys' completions (one array per column, `unnest`ed), and orders placed at the same time are
//! grouped into it ([`super::group`]; `DATABASE_INSERT_WRITERS`, `DATABASE_INSERT_BATCH_MAX`).
//!
//! A batch is one transaction, all or nothing, so its orders share their fate only where it is
//! the database's: a broken connection fails every order of the batch, as it would have failed
//! each alone. A statement error that one order's data could cause (anything but "unavailable")
//! makes each order of the batch try again alone, so it fails only the order that caused it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::group::Group;
use super::postgres::PgStore;
use super::row::degraded_column;
use crate::domain::idempotency::KeyCompletion;
use crate::domain::store::BoxError;
use crate::domain::{Order, StoreError};
use crate::telemetry::traces::propagation::TraceContext;

/// Orders waiting for, or in, a grouped insert; the result is the size of the batch written.
pub(crate) type Inserts = Group<NewOrder, Result<usize, StoreError>>;

/// One order's row, outbox row and key completion, owned so it can wait for its batch.
#[derive(Debug)]
pub(crate) struct NewOrder {
    id: Uuid,
    user_id: String,
    product_code: String,
    customer_fullname: String,
    product_name: String,
    cents: i64,
    created_at: DateTime<Utc>,
    payload: String,
    degraded: String,
    /// With a key: its completion (status, body), the key and this request's lease token.
    status: Option<i32>,
    body: Option<String>,
    key: Option<String>,
    token: Option<Uuid>,
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl NewOrder {
    pub(super) fn new(order: &Order, key: Option<&KeyCompletion>, trace: Option<&TraceContext>) -> Self {
        Self {
            id: order.id,
            user_id: order.user_id.clone(),
            product_code: order.product_code.clone(),
            customer_fullname: order.customer_fullname.clone(),
            product_name: order.product_name.clone(),
            cents: order.total_amount.cents(),
            created_at: order.created_at,
            payload: order.created_payload().to_string(),
            degraded: degraded_column(order),
            status: key.map(|done| i32::from(done.status)),
            body: key.map(|done| done.body.clone()),
            key: key.map(|done| done.lease.key.as_str().to_owned()),
            token: key.map(|done| done.lease.token),
            traceparent: trace.map(|t| t.traceparent.clone()),
            tracestate: trace.and_then(|t| t.tracestate.clone()),
        }
    }
}

/// Starts grouping inserts over `store` (which must not group itself).
pub(super) fn group(store: PgStore, writers: usize, max: usize) -> Inserts {
    Group::spawn(writers, max, move |batch: Vec<NewOrder>| {
        let store = store.clone();
        async move { write(&store, batch).await }
    })
}

/// One result per order of `batch`: the batch's size, or why that order was not written.
pub(super) async fn write(store: &PgStore, batch: Vec<NewOrder>) -> Vec<Result<usize, StoreError>> {
    let size = batch.len();
    match insert(store, &batch).await {
        Ok(written) => batch.iter().map(|order| outcome(order, &written, size)).collect(),
        Err(StoreError::Query(_)) if size > 1 => {
            let mut results = Vec::with_capacity(size);
            for order in batch {
                let one = std::slice::from_ref(&order);
                results.push(insert(store, one).await.and_then(|written| outcome(&order, &written, 1)));
            }
            results
        }
        Err(error) => shared(error, size),
    }
}

/// An order missing from what its statement wrote held a key whose lease was lost: its `WHERE`
/// left it out, and nothing of it was written.
fn outcome(order: &NewOrder, written: &[Uuid], size: usize) -> Result<usize, StoreError> {
    if written.contains(&order.id) {
        Ok(size)
    } else if order.key.is_some() {
        Err(StoreError::KeyLeaseLost)
    } else {
        Err(StoreError::Query("an order without a key was not written by its statement".into()))
    }
}

/// The statement; returns the ids of the orders written.
async fn insert(store: &PgStore, batch: &[NewOrder]) -> Result<Vec<Uuid>, StoreError> {
    let mut conn = store.conn().await?;
    let query = match batch {
        [one] => sqlx::query_scalar(INSERT_ONE)
            .bind(one.id)
            .bind(one.user_id.as_str())
            .bind(one.product_code.as_str())
            .bind(one.customer_fullname.as_str())
            .bind(one.product_name.as_str())
            .bind(one.cents)
            .bind(one.created_at)
            .bind(one.payload.as_str())
            .bind(one.degraded.as_str())
            .bind(one.status)
            .bind(one.body.as_deref())
            .bind(one.key.as_deref())
            .bind(one.token)
            .bind(one.traceparent.as_deref())
            .bind(one.tracestate.as_deref()),
        _ => sqlx::query_scalar(INSERT_MANY)
            .bind(batch.iter().map(|o| o.id).collect::<Vec<_>>())
            .bind(batch.iter().map(|o| o.user_id.as_str()).collect::<Vec<_>>())
            .bind(batch.iter().map(|o| o.product_code.as_str()).collect::<Vec<_>>())
            .bind(batch.iter().map(|o| o.customer_fullname.as_str()).collect::<Vec<_>>())
            .bind(batch.iter().map(|o| o.product_name.as_str()).collect::<Vec<_>>())
            .bind(batch.iter().map(|o| o.cents).collect::<Vec<_>>())
            .bind(batch.iter().map(|o| o.created_at).collect::<Vec<_>>())
            .bind(batch.iter().map(|o| o.payload.as_str()).collect::<Vec<_>>())
            .bind(batch.iter().map(|o| o.degraded.as_str()).collect::<Vec<_>>())
            .bind(batch.iter().map(|o| o.status).collect::<Vec<_>>())
            .bind(batch.iter().map(|o| o.body.as_deref()).collect::<Vec<_>>())
            .bind(batch.iter().map(|o| o.key.as_deref()).collect::<Vec<_>>())
            .bind(batch.iter().map(|o| o.token).collect::<Vec<_>>())
            .bind(batch.iter().map(|o| o.traceparent.as_deref()).collect::<Vec<_>>())
            .bind(batch.iter().map(|o| o.tracestate.as_deref()).collect::<Vec<_>>()),
    };
    let written: Vec<Uuid> = query.persistent(store.persistent).fetch_all(conn.get()).await?;
    conn.done().await?;
    Ok(written)
}

/// One statement, so one round trip and an implicit transaction: data-modifying CTEs commit
/// together or not at all (≈ 1.9× the rate of BEGIN/INSERT/INSERT/COMMIT under pgbench at 64
/// clients here). An order with a key is written only if its request still holds the key, and
/// completing the key is part of the same statement. The parameters are those of
/// [`INSERT_MANY`], one value each: a batch of one is the common case at low load, and this
/// plan costs PostgreSQL about 15 % less than `unnest` of one (pgbench, prepared).
const INSERT_ONE: &str = "WITH k AS ( \
       UPDATE idempotency_keys SET order_id = $1, response_status = $10, response_body = $11 \
       WHERE $12::text IS NOT NULL AND key = $12 AND token = $13 AND response_status IS NULL \
       RETURNING 1), \
     o AS ( \
       INSERT INTO orders (id, user_id, product_code, customer_fullname, product_name, \
                           total_amount_cents, created_at, degraded) \
       SELECT $1, $2, $3, $4, $5, $6, $7, $9 WHERE $12::text IS NULL OR EXISTS (SELECT 1 FROM k) \
       RETURNING id, created_at), \
     x AS ( \
       INSERT INTO outbox (order_id, event_type, payload, created_at, next_attempt_at, traceparent, tracestate) \
       SELECT id, 'order.created', $8::jsonb, created_at, created_at, $14, $15 FROM o \
       RETURNING order_id) \
     SELECT order_id FROM x";

/// [`INSERT_ONE`] for a batch: one array per column. Outbox rows are numbered in the batch's
/// order, so events keep the order their orders were submitted in.
const INSERT_MANY: &str = "WITH i AS ( \
       SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], \
                            $7::timestamptz[], $8::text[], $9::text[], $10::int4[], $11::text[], $12::text[], \
                            $13::uuid[], $14::text[], $15::text[]) WITH ORDINALITY \
         AS i(id, user_id, product_code, customer_fullname, product_name, cents, created_at, payload, \
              degraded, status, body, key, token, traceparent, tracestate, n)), \
     k AS ( \
       UPDATE idempotency_keys SET order_id = i.id, response_status = i.status, response_body = i.body \
       FROM i WHERE i.key IS NOT NULL AND idempotency_keys.key = i.key AND idempotency_keys.token = i.token \
         AND idempotency_keys.response_status IS NULL \
       RETURNING i.id), \
     o AS ( \
       INSERT INTO orders (id, user_id, product_code, customer_fullname, product_name, \
                           total_amount_cents, created_at, degraded) \
       SELECT id, user_id, product_code, customer_fullname, product_name, cents, created_at, degraded \
       FROM i WHERE i.key IS NULL OR i.id IN (SELECT id FROM k) \
       RETURNING id), \
     x AS ( \
       INSERT INTO outbox (order_id, event_type, payload, created_at, next_attempt_at, traceparent, tracestate) \
       SELECT i.id, 'order.created', i.payload::jsonb, i.created_at, i.created_at, i.traceparent, i.tracestate \
       FROM i JOIN o ON o.id = i.id ORDER BY i.n \
       RETURNING order_id) \
     SELECT order_id FROM x";

/// `error`, once for each of `size` orders.
fn shared(error: StoreError, size: usize) -> Vec<Result<usize, StoreError>> {
    let (cause, unavailable) = match error {
        StoreError::Unavailable(cause) => (cause, true),
        StoreError::Query(cause) => (cause, false),
        StoreError::KeyLeaseLost => return (0..size).map(|_| Err(StoreError::KeyLeaseLost)).collect(),
    };
    let cause = Arc::new(Shared(cause));
    let each = || -> StoreError {
        let cause: BoxError = Box::new(Arc::clone(&cause));
        if unavailable { StoreError::Unavailable(cause) } else { StoreError::Query(cause) }
    };
    (0..size).map(|_| Err(each())).collect()
}

/// One batch's failure, told to each of its orders.
#[derive(Debug)]
struct Shared(BoxError);

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Shared {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}
