//! Migrations apply at start-up, once, even when instances start together.

use order_service::config::DatabaseConfig;
use order_service::storage::{PgStore, SqliteStore};

use crate::kit::{Backend, TestDb};

fn pool(url: &str) -> DatabaseConfig {
    DatabaseConfig::new(url, 2, std::time::Duration::from_secs(10)).expect("database url")
}

#[tokio::test]
async fn two_instances_migrating_postgres_at_once_both_start() {
    let db = TestDb::new(Backend::Postgres).await;
    let config = pool(&db.url);
    let (a, b) = tokio::join!(PgStore::connect(&config), PgStore::connect(&config));
    a.expect("first instance starts");
    b.expect("second instance starts");
    PgStore::connect(&pool(&db.url)).await.expect("a restart re-runs nothing and succeeds");
    let migrations = std::fs::read_dir("migrations/postgres").expect("folder").count() as i64;
    assert_eq!(db.count("_sqlx_migrations WHERE success").await, migrations);
}

#[tokio::test]
async fn sqlite_migrations_are_idempotent() {
    let db = TestDb::new(Backend::Sqlite).await;
    SqliteStore::connect(&pool(&db.url)).await.expect("first start");
    SqliteStore::connect(&pool(&db.url)).await.expect("second start");
    let migrations = std::fs::read_dir("migrations/sqlite").expect("folder").count() as i64;
    assert_eq!(db.count("_sqlx_migrations WHERE success").await, migrations);
}
