//! A database of its own per test (PostgreSQL or SQLite), dropped after it, with the few
//! statements tests use to inspect or sabotage it.

use std::path::PathBuf;
use std::time::Duration;

use order_service::config::DatabaseConfig;
use order_service::storage::{self, Stores};
use sqlx::{AssertSqlSafe, Connection, Executor, Postgres, Sqlite};
use uuid::Uuid;

/// PostgreSQL where test databases are created; each test gets `test_<uuid>` of its own.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A database that exists for one test and is dropped after it.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    name: String,
    file: Option<PathBuf>,
    /// Dropped with this handle; false for [`TestDb::shared`] handles.
    owned: bool,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        let name = format!("test_{}", Uuid::new_v4().simple());
        match backend {
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL must be running for the tests ({admin}): {e}"));
                conn.execute(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
                    .await
                    .expect("create test database");
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base);
                Self { backend, url: format!("{base}/{name}"), name, file: None, owned: true }
            }
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join("order-service-tests");
                std::fs::create_dir_all(&dir).expect("temp dir");
                let file = dir.join(format!("{name}.db"));
                Self { backend, url: format!("sqlite://{}", file.display()), name, file: Some(file), owned: true }
            }
        }
    }

    /// Another handle on the same database (a second replica's), which leaves it in place when
    /// dropped: the first handle drops it.
    pub fn shared(&self) -> TestDb {
        Self { backend: self.backend, url: self.url.clone(), name: self.name.clone(), file: None, owned: false }
    }

    /// Runs one statement against the test database (to inspect or sabotage it).
    pub async fn execute(&self, sql: &str) {
        match self.backend {
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.expect("connect");
                conn.execute(AssertSqlSafe(sql)).await.expect(sql);
            }
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.expect("connect");
                conn.execute(AssertSqlSafe(sql)).await.expect(sql);
            }
        }
    }

    /// `SELECT count(*)` of a table, straight from the database.
    pub async fn count(&self, table: &str) -> i64 {
        self.scalar_i64(&format!("SELECT count(*) FROM {table}")).await
    }

    pub async fn scalar_i64(&self, sql: &str) -> i64 {
        self.scalar(sql).await
    }

    pub async fn scalar_text(&self, sql: &str) -> String {
        self.scalar(sql).await
    }

    /// The store the service would open over this database, with a pool of `max_connections`.
    pub async fn stores(&self, max_connections: u32) -> Stores {
        storage::connect(&self.config(max_connections)).await.expect("store")
    }

    pub fn config(&self, max_connections: u32) -> DatabaseConfig {
        DatabaseConfig::new(&self.url, max_connections, Duration::from_secs(10)).expect("database url")
    }

    /// The one value `sql` selects.
    async fn scalar<T>(&self, sql: &str) -> T
    where
        T: Send + Unpin + sqlx::Type<Postgres> + for<'r> sqlx::Decode<'r, Postgres>,
        T: sqlx::Type<Sqlite> + for<'r> sqlx::Decode<'r, Sqlite>,
    {
        match self.backend {
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.expect("connect");
                sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(&mut conn).await.expect(sql)
            }
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.expect("connect");
                sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(&mut conn).await.expect(sql)
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Some(file) = &self.file {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
            return;
        }
        let name = self.name.clone();
        // Drop runs outside any async context we can rely on: use a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
                    let _ =
                        conn.execute(AssertSqlSafe(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))).await;
                }
            });
        })
        .join();
    }
}

/// Ada's Classic Box order, built as the service builds one (for store-level tests).
pub fn sample_order() -> order_service::domain::Order {
    use order_service::domain::{Money, Order, Product, ProductCode, User, UserId};
    let user = User { first_name: "Ada".into(), last_name: "Lovelace".into() };
    let product = Product { name: "Classic Box".into(), price: Money::parse_decimal("9.99").expect("price") };
    let (user_id, code) =
        (UserId::parse("7c11e1ce2741").expect("id"), ProductCode::parse("classic-box").expect("code"));
    Order::new(&user_id, &code, &user, &product)
}
