//! Group commit on PostgreSQL (`storage::group`, `storage::pg_insert`): orders placed while the
//! insert writers are busy share one statement, and still get one result each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use order_service::config::DatabaseConfig;
use order_service::domain::StoreError;
use order_service::domain::idempotency::{IdempotencyKey, KeyClaim, KeyCompletion, KeyLease, KeySettings};
use order_service::domain::{Order, OrderStore};
use sqlx::{Connection, Executor, PgConnection};
use tokio::task::JoinHandle;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use uuid::Uuid;

use crate::kit::{Backend, PgBouncer, TestDb, eventually, sample_order};

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

type Placed = JoinHandle<Result<(), StoreError>>;

/// A store with one insert writer, held: its first order's statement waits on a lock another
/// session holds on `orders`, so every order placed meanwhile queues behind it.
struct HeldWriter {
    store: Arc<dyn OrderStore>,
    blocker: PgConnection,
    first: (Order, Placed),
}

impl HeldWriter {
    async fn new(db: &TestDb, mut config: DatabaseConfig) -> Self {
        config.insert_writers = 1;
        let store = order_service::storage::connect(&config).await.expect("store").orders;
        let mut blocker = PgConnection::connect(&db.url).await.expect("connect");
        blocker.execute("BEGIN; LOCK TABLE orders IN SHARE ROW EXCLUSIVE MODE").await.expect("lock");
        let order = sample_order();
        let first = (order.clone(), place(&store, &order, None));
        let waiters = eventually(Duration::from_secs(10), async || db.scalar_i64(BLOCKED).await, |n| *n == 1).await;
        assert_eq!(waiters, 1, "the first statement waits on the lock");
        Self { store, blocker, first }
    }

    fn place(&self, order: &Order, key: Option<KeyCompletion>) -> Placed {
        place(&self.store, order, key)
    }

    /// Lets the first statement through, and returns the first order once written.
    async fn release(mut self) -> Order {
        tokio::task::yield_now().await; // every order placed so far is queued
        self.blocker.execute("COMMIT").await.expect("unlock");
        self.first.1.await.expect("task").expect("the first order");
        self.first.0
    }
}

/// Places `order` in a task of its own. The tests run on one thread (tokio's default for a test):
/// the task has submitted its order to the group by the time the test next awaits.
fn place(store: &Arc<dyn OrderStore>, order: &Order, key: Option<KeyCompletion>) -> Placed {
    let (store, order) = (store.clone(), order.clone());
    tokio::spawn(async move { store.insert_order(&order, key.as_ref()).await })
}

async fn results(placed: Vec<Placed>) -> Vec<Result<(), StoreError>> {
    let mut results = Vec::new();
    for task in placed {
        results.push(task.await.expect("task"));
    }
    results
}

#[tokio::test]
async fn orders_placed_while_the_writer_is_busy_share_a_statement_and_each_gets_its_own_result() {
    let db = TestDb::new(Backend::Postgres).await;
    shared_statement(&db, db.config(8)).await;
}

/// The same through PgBouncer in transaction pooling, with the statement cache off, as a fleet
/// runs (docs/fleet.md): a batch's statement is unnamed and runs in a transaction of its own.
#[tokio::test]
async fn orders_share_a_statement_through_pgbouncer_in_transaction_mode() {
    let db = TestDb::new(Backend::Postgres).await;
    let bouncer = PgBouncer::transaction_mode(2).await;
    let through = db.url.replacen(":5432/", &format!(":{}/", bouncer.port), 1);
    assert_ne!(through, db.url, "the test database is on 5432");
    let mut config = DatabaseConfig::new(&through, 8, Duration::from_secs(10)).expect("url");
    (config.statement_cache_capacity, config.session_url) = (0, db.url.clone());
    shared_statement(&db, config).await;
}

/// Behind a held writer: plain orders, one completing a key its request holds, and one whose key
/// was taken over (its lease is stale).
async fn shared_statement(db: &TestDb, config: DatabaseConfig) {
    let held = HeldWriter::new(db, config).await;
    let plain: Vec<Order> = (0..6).map(|_| sample_order()).collect();
    let lease = leased(held.store.as_ref(), "held").await;
    let keyed = sample_order();
    let stale = KeyLease { key: IdempotencyKey::parse("stale").expect("key"), token: Uuid::now_v7() };
    leased(held.store.as_ref(), "stale").await; // another token holds it
    let lost = sample_order();
    let completion = |lease: KeyLease| KeyCompletion { lease, status: 201, body: "{}".into() };
    let mut placed: Vec<Placed> = plain.iter().map(|order| held.place(order, None)).collect();
    placed.push(held.place(&keyed, Some(completion(lease))));
    placed.push(held.place(&lost, Some(completion(stale))));
    let first = held.release().await;

    let results = results(placed).await;
    for (order, result) in plain.iter().chain([&keyed]).zip(&results) {
        assert!(result.is_ok(), "order {} failed: {result:?}", order.id);
    }
    assert!(matches!(results[7], Err(StoreError::KeyLeaseLost)), "{:?}", results[7]);

    let written: Vec<Uuid> = plain.iter().chain([&keyed]).map(|o| o.id).collect();
    assert_eq!(db.count("orders").await, 1 + written.len() as i64, "nothing of the lost lease's order was written");
    assert_eq!(db.count("outbox").await, 1 + written.len() as i64, "one event per order written");
    assert_eq!(transactions(db, &[first.id]).await, 1);
    let shared = transactions(db, &written).await;
    assert_eq!(shared, 1, "{} orders queued behind one writer took {shared} transactions", written.len());
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
    let held = HeldWriter::new(&db, db.config(8)).await;
    let mut refused = sample_order();
    refused.customer_fullname = "Ada\0Lovelace".into(); // PostgreSQL's text holds no NUL
    let mut orders: Vec<Order> = (0..4).map(|_| sample_order()).collect();
    orders.insert(2, refused);
    let placed = orders.iter().map(|order| held.place(order, None)).collect();
    held.release().await;
    for (i, result) in results(placed).await.iter().enumerate() {
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
    let held = HeldWriter::new(&db, db.config(8)).await;
    let orders: Vec<Order> = (0..20).map(|_| sample_order()).collect();
    let mut placed = Vec::new();
    for order in &orders {
        placed.push(held.place(order, None));
        tokio::task::yield_now().await; // submitted in this order
    }
    held.release().await;
    for result in results(placed).await {
        result.expect("order");
    }
    let ids: Vec<Uuid> = orders.iter().map(|o| o.id).collect();
    assert_eq!(transactions(&db, &ids).await, 1, "grouped");
    let mut conn = PgConnection::connect(&db.url).await.expect("connect");
    let outbox: Vec<Uuid> =
        sqlx::query_scalar("SELECT order_id FROM outbox ORDER BY id").fetch_all(&mut conn).await.expect("outbox");
    let ours: Vec<Uuid> = outbox.into_iter().filter(|id| ids.contains(id)).collect();
    assert_eq!(ours, ids, "outbox ids follow the queue");
}

/// The `db.operation.batch.size` of every `insert_order` span, as a tracing backend receives it:
/// `None` for a span that never recorded one. Spans still open are under their id; closed ones in
/// `closed` (an id can be reused once its span is closed).
#[derive(Clone, Default)]
struct BatchSizes {
    open: Arc<Mutex<HashMap<Id, Option<u64>>>>,
    closed: Arc<Mutex<Vec<Option<u64>>>>,
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for BatchSizes {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        if attrs.metadata().name() == "insert_order" {
            self.open.lock().expect("lock").insert(id.clone(), None);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some(size) = self.open.lock().expect("lock").get_mut(id) {
            values.record(&mut BatchSize(size));
        }
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        if let Some(size) = self.open.lock().expect("lock").remove(&id) {
            self.closed.lock().expect("lock").push(size);
        }
    }
}

struct BatchSize<'a>(&'a mut Option<u64>);

impl Visit for BatchSize<'_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "db.operation.batch.size" {
            *self.0 = Some(value);
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

/// The database span says how many orders its statement carried, when it carried more than its
/// own (docs/tracing.md): the first order alone says nothing, the three queued behind it say 3.
#[tokio::test]
async fn an_insert_span_says_how_many_orders_its_statement_carried() {
    let sizes = BatchSizes::default();
    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry().with(sizes.clone()));
    let db = TestDb::new(Backend::Postgres).await;
    let held = HeldWriter::new(&db, db.config(8)).await;
    let queued: Vec<Placed> = (0..3).map(|_| held.place(&sample_order(), None)).collect();
    held.release().await;
    for result in results(queued).await {
        result.expect("order");
    }
    let mut closed = sizes.closed.lock().expect("lock").clone();
    closed.sort();
    assert_eq!(closed, [None, Some(3), Some(3), Some(3)], "one span per order, all closed");
}
