//! Group commit on PostgreSQL (`storage::group`, `storage::pg_insert`): orders placed while the
//! insert writers are busy share one statement, and still get one result each.

use std::time::Duration;

use chrono::Utc;
use order_service::domain::StoreError;
use order_service::domain::idempotency::{IdempotencyKey, KeyClaim, KeyCompletion, KeyLease, KeySettings};
use order_service::domain::{Order, OrderStore};
use sqlx::{Connection, Executor};
use uuid::Uuid;

use crate::kit::{Backend, TestDb, eventually, sample_order};

/// Insert statements waiting on a lock.
const BLOCKED: &str = "SELECT count(*) FROM pg_stat_activity \
                       WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO orders%'";

/// The transactions that wrote these orders (PostgreSQL's `xmin`), one per statement.
async fn transactions(db: &TestDb, ids: &[Uuid]) -> i64 {
    let list = ids.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(",");
    db.scalar_i64(&format!("SELECT count(DISTINCT xmin::text) FROM orders WHERE id IN ({list})")).await
}

async fn leased(store: &dyn OrderStore, key: &str) -> KeyLease {
    let lease = KeyLease { key: IdempotencyKey::parse(key).expect("key"), token: Uuid::now_v7() };
    let settings = KeySettings {
        lease: Duration::from_secs(30),
        retention: Duration::from_secs(3600),
        longest_order: Duration::from_secs(3),
    };
    let times = settings.times(Utc::now());
    assert_eq!(store.claim_key(&lease, "f", times).await.expect("claim"), KeyClaim::Leased(lease.clone()));
    lease
}

#[tokio::test]
async fn orders_placed_while_the_writer_is_busy_share_a_statement_and_each_gets_its_own_result() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut config = db.config(8);
    config.insert_writers = 1;
    let store = order_service::storage::connect(&config).await.expect("store").orders;

    // Another session holds a lock that blocks inserts: the first order's statement waits on it,
    // holding the only writer, while the others queue.
    let mut blocker = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    blocker.execute("BEGIN; LOCK TABLE orders IN SHARE ROW EXCLUSIVE MODE").await.expect("lock");
    let first = sample_order();
    let waiting = tokio::spawn({
        let (store, order) = (store.clone(), first.clone());
        async move { store.insert_order(&order, None).await }
    });
    let waiters = eventually(Duration::from_secs(10), async || db.scalar_i64(BLOCKED).await, |n| *n == 1).await;
    assert_eq!(waiters, 1, "the first statement waits on the lock");

    // Queued behind it: plain orders, one completing a key this request holds, and one whose key
    // was taken over (its lease is stale).
    let plain: Vec<Order> = (0..6).map(|_| sample_order()).collect();
    let held = leased(store.as_ref(), "held").await;
    let keyed = sample_order();
    let stale = KeyLease { key: IdempotencyKey::parse("stale").expect("key"), token: Uuid::now_v7() };
    leased(store.as_ref(), "stale").await; // another token holds it
    let lost = sample_order();
    let completion = |lease: KeyLease| KeyCompletion { lease, status: 201, body: "{}".into() };
    let mut queued = Vec::new();
    for (order, key) in plain
        .iter()
        .map(|o| (o.clone(), None))
        .chain([(keyed.clone(), Some(completion(held))), (lost.clone(), Some(completion(stale)))])
    {
        let store = store.clone();
        queued.push(tokio::spawn(async move { store.insert_order(&order, key.as_ref()).await }));
    }
    // Every submission is queued well before this: the writer is still held by the lock.
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.execute("COMMIT").await.expect("unlock");

    waiting.await.expect("task").expect("the first order");
    let mut results = Vec::new();
    for task in queued {
        results.push(task.await.expect("task"));
    }
    for (order, result) in plain.iter().chain([&keyed]).zip(&results) {
        assert!(result.is_ok(), "order {} failed: {result:?}", order.id);
    }
    assert!(matches!(results[7], Err(StoreError::KeyLeaseLost)), "{:?}", results[7]);

    let written: Vec<Uuid> = plain.iter().chain([&keyed]).map(|o| o.id).collect();
    assert_eq!(db.count("orders").await, 1 + written.len() as i64, "nothing of the lost lease's order was written");
    assert_eq!(db.count("outbox").await, 1 + written.len() as i64, "one event per order written");
    assert_eq!(transactions(&db, &[first.id]).await, 1);
    let shared = transactions(&db, &written).await;
    assert!(shared <= 2, "{} orders queued behind one writer took {shared} transactions", written.len());
    let completed = format!("SELECT count(*) FROM idempotency_keys WHERE key = 'held' AND order_id = '{}'", keyed.id);
    assert_eq!(db.scalar_i64(&completed).await, 1, "the held key is completed with its order");
    let untouched = "SELECT count(*) FROM idempotency_keys WHERE key = 'stale' AND order_id IS NULL";
    assert_eq!(db.scalar_i64(untouched).await, 1, "the stale lease completed nothing");
}

/// A statement error one order's data causes fails the whole statement; each order of that batch
/// is then written alone, so only that order fails.
#[tokio::test]
async fn an_order_the_database_refuses_fails_alone_not_its_batch() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut config = db.config(8);
    config.insert_writers = 1;
    let store = order_service::storage::connect(&config).await.expect("store").orders;
    let mut blocker = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    blocker.execute("BEGIN; LOCK TABLE orders IN SHARE ROW EXCLUSIVE MODE").await.expect("lock");
    let first = tokio::spawn({
        let store = store.clone();
        async move { store.insert_order(&sample_order(), None).await }
    });
    let waiters = eventually(Duration::from_secs(10), async || db.scalar_i64(BLOCKED).await, |n| *n == 1).await;
    assert_eq!(waiters, 1, "the first statement waits on the lock");
    let mut refused = sample_order();
    refused.customer_fullname = "Ada\0Lovelace".into(); // PostgreSQL's text holds no NUL
    let mut orders: Vec<Order> = (0..4).map(|_| sample_order()).collect();
    orders.insert(2, refused);
    let queued: Vec<_> = orders
        .iter()
        .map(|order| {
            let (store, order) = (store.clone(), order.clone());
            tokio::spawn(async move { store.insert_order(&order, None).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.execute("COMMIT").await.expect("unlock");
    first.await.expect("task").expect("first");
    let mut results = Vec::new();
    for task in queued {
        results.push(task.await.expect("task"));
    }
    for (i, result) in results.iter().enumerate() {
        if i == 2 {
            assert!(matches!(result, Err(StoreError::Query(_))), "the refused order: {result:?}");
        } else {
            assert!(result.is_ok(), "order {i} shares the refused order's fate: {result:?}");
        }
    }
    assert_eq!((db.count("orders").await, db.count("outbox").await), (5, 5));
}

#[tokio::test]
async fn events_keep_the_order_their_orders_were_queued_in() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut config = db.config(8);
    config.insert_writers = 1;
    let store = order_service::storage::connect(&config).await.expect("store").orders;
    let mut blocker = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    blocker.execute("BEGIN; LOCK TABLE orders IN SHARE ROW EXCLUSIVE MODE").await.expect("lock");
    let first = tokio::spawn({
        let store = store.clone();
        async move { store.insert_order(&sample_order(), None).await }
    });
    let waiters = eventually(Duration::from_secs(10), async || db.scalar_i64(BLOCKED).await, |n| *n == 1).await;
    assert_eq!(waiters, 1, "the first statement waits on the lock");
    let orders: Vec<Order> = (0..20).map(|_| sample_order()).collect();
    let mut queued = Vec::new();
    for order in &orders {
        let (store, order) = (store.clone(), order.clone());
        queued.push(tokio::spawn(async move { store.insert_order(&order, None).await }));
        tokio::task::yield_now().await; // queued in this order
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.execute("COMMIT").await.expect("unlock");
    first.await.expect("task").expect("first");
    for task in queued {
        task.await.expect("task").expect("order");
    }
    let ids: Vec<Uuid> = orders.iter().map(|o| o.id).collect();
    assert!(transactions(&db, &ids).await < ids.len() as i64, "grouped");
    let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    let outbox: Vec<Uuid> =
        sqlx::query_scalar("SELECT order_id FROM outbox ORDER BY id").fetch_all(&mut conn).await.expect("outbox");
    let ours: Vec<Uuid> = outbox.into_iter().filter(|id| ids.contains(id)).collect();
    assert_eq!(ours, ids, "outbox ids follow the queue");
}
