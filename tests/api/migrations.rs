//! Migrations apply at start-up, once, even when instances start together.

use order_service::storage::{PgStore, SqliteStore};

use crate::kit::{Backend, TestDb};

#[tokio::test]
async fn two_instances_migrating_postgres_at_once_both_start() {
    let db = TestDb::new(Backend::Postgres).await;
    let config = db.config(2);
    let (a, b) = tokio::join!(PgStore::connect(&config), PgStore::connect(&config));
    a.expect("first instance starts");
    b.expect("second instance starts");
    PgStore::connect(&db.config(2)).await.expect("a restart re-runs nothing and succeeds");
    let migrations = std::fs::read_dir("migrations/postgres").expect("folder").count() as i64;
    assert_eq!(db.count("_sqlx_migrations WHERE success").await, migrations);
}

#[tokio::test]
async fn sqlite_migrations_are_idempotent() {
    let db = TestDb::new(Backend::Sqlite).await;
    SqliteStore::connect(&db.config(2)).await.expect("first start");
    SqliteStore::connect(&db.config(2)).await.expect("second start");
    let migrations = std::fs::read_dir("migrations/sqlite").expect("folder").count() as i64;
    assert_eq!(db.count("_sqlx_migrations WHERE success").await, migrations);
}
