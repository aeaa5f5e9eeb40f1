//! Migrations apply at start-up, once, even when instances start together.

use order_service::storage::{PgStore, PoolSettings, SqliteStore};

use crate::helpers::{Backend, TestDb};

const POOL: PoolSettings = PoolSettings { max_connections: 2, acquire_timeout: std::time::Duration::from_secs(10) };

#[tokio::test]
async fn two_instances_migrating_postgres_at_once_both_start() {
    let db = TestDb::new(Backend::Postgres).await;
    let (a, b) = tokio::join!(PgStore::connect(&db.url, POOL), PgStore::connect(&db.url, POOL));
    a.expect("first instance starts");
    b.expect("second instance starts");
    PgStore::connect(&db.url, POOL).await.expect("a restart re-runs nothing and succeeds");
    let migrations = std::fs::read_dir("migrations/postgres").expect("folder").count() as i64;
    assert_eq!(db.count("_sqlx_migrations WHERE success").await, migrations);
}

#[tokio::test]
async fn sqlite_migrations_are_idempotent() {
    let db = TestDb::new(Backend::Sqlite).await;
    SqliteStore::connect(&db.url, POOL).await.expect("first start");
    SqliteStore::connect(&db.url, POOL).await.expect("second start");
    let migrations = std::fs::read_dir("migrations/sqlite").expect("folder").count() as i64;
    assert_eq!(db.count("_sqlx_migrations WHERE success").await, migrations);
}
