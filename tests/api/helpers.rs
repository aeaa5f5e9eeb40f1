//! Shared test kit: a database of its own per test, the real application on a random port,
//! and upstreams (the simulator in-process, or wiremock when a test needs to count calls).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use order_service::{Application, Config};
use sqlx::{AssertSqlSafe, Connection, Executor};
use upstream_sim::{RunningSim, SimConfig};
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

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
                Self { backend, url: format!("{base}/{name}"), name, file: None }
            }
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join("order-service-tests");
                std::fs::create_dir_all(&dir).expect("temp dir");
                let file = dir.join(format!("{name}.db"));
                Self { backend, url: format!("sqlite://{}", file.display()), name, file: Some(file) }
            }
        }
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

    pub async fn scalar_text(&self, sql: &str) -> String {
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

/// Where the app under test finds its upstreams.
pub enum Upstreams {
    /// The project's simulator with the fault table of DESIGN.md.
    Simulator(RunningSim),
    /// wiremock servers, for counting requests or shaping answers.
    Mock { users: MockServer, products: MockServer },
}

impl Upstreams {
    pub async fn simulator() -> Self {
        Upstreams::Simulator(upstream_sim::spawn(SimConfig::ephemeral()).await.expect("simulator"))
    }

    /// Empty wiremock servers: every request gets 404 until a test mounts a mock.
    pub async fn mock() -> Self {
        Upstreams::Mock { users: MockServer::start().await, products: MockServer::start().await }
    }

    fn urls(&self) -> (String, String) {
        match self {
            Upstreams::Simulator(sim) => (sim.users_url(), sim.products_url()),
            Upstreams::Mock { users, products } => (users.uri(), products.uri()),
        }
    }

    pub fn sim(&self) -> &RunningSim {
        match self {
            Upstreams::Simulator(sim) => sim,
            Upstreams::Mock { .. } => panic!("this test runs on wiremock upstreams"),
        }
    }

    pub fn mocks(&self) -> (&MockServer, &MockServer) {
        match self {
            Upstreams::Mock { users, products } => (users, products),
            Upstreams::Simulator(_) => panic!("this test runs on the simulator"),
        }
    }

    /// Mounts Ada Lovelace and the Classic Box, answering at once.
    pub async fn mount_healthy(&self) {
        let (users, products) = self.mocks();
        Mock::given(method("GET"))
            .and(path("/users/7c11e1ce2741"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!(
                {"id": "7c11e1ce2741", "firstName": "Ada", "lastName": "Lovelace"}
            )))
            .mount(users)
            .await;
        Mock::given(method("GET"))
            .and(path("/products/classic-box"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!(
                {"code": "classic-box", "name": "Classic Box", "price": 9.99}
            )))
            .mount(products)
            .await;
    }

    /// Every request either upstream received.
    pub async fn received(&self) -> usize {
        let (users, products) = self.mocks();
        users.received_requests().await.unwrap_or_default().len()
            + products.received_requests().await.unwrap_or_default().len()
    }
}

/// The application under test, serving on a random loopback port until dropped.
pub struct TestApp {
    pub addr: SocketAddr,
    /// `/metrics` when `METRICS_ADDR` is set.
    pub metrics_addr: Option<SocketAddr>,
    pub http: reqwest::Client,
    pub db: TestDb,
    pub upstreams: Upstreams,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub struct TestAppBuilder {
    backend: Backend,
    env: HashMap<String, String>,
    upstreams: Option<Upstreams>,
    database_port: Option<u16>,
}

impl TestApp {
    pub fn builder(backend: Backend) -> TestAppBuilder {
        TestAppBuilder { backend, env: HashMap::new(), upstreams: None, database_port: None }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `POST /v1/orders` with a JSON body.
    pub async fn post_order(&self, user_id: &str, product_code: &str) -> reqwest::Response {
        self.http
            .post(self.url("/v1/orders"))
            .json(&serde_json::json!({ "user_id": user_id, "product_code": product_code }))
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("request")
    }

    /// Delivers the shutdown signal (what SIGTERM does to the binary).
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits until `run_until_stopped` has returned.
    pub async fn stopped(&mut self) -> std::io::Result<()> {
        match self.served.take() {
            Some(served) => served.await.expect("server task"),
            None => Ok(()),
        }
    }
}

impl TestAppBuilder {
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.to_owned(), value.to_owned());
        self
    }

    /// The app reaches PostgreSQL through this loopback port (e.g. a cut-able proxy); the test
    /// still inspects its database directly.
    pub fn database_port(mut self, port: u16) -> Self {
        self.database_port = Some(port);
        self
    }

    pub fn upstreams(mut self, upstreams: Upstreams) -> Self {
        self.upstreams = Some(upstreams);
        self
    }

    pub async fn spawn(self) -> TestApp {
        order_service::telemetry::init_logging();
        let db = TestDb::new(self.backend).await;
        let upstreams = match self.upstreams {
            Some(upstreams) => upstreams,
            None => Upstreams::simulator().await,
        };
        let (users_url, products_url) = upstreams.urls();
        let mut env = HashMap::from([
            ("HTTP_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
            (
                "DATABASE_URL".to_owned(),
                match self.database_port {
                    Some(port) => db.url.replace("127.0.0.1:5432", &format!("127.0.0.1:{port}")),
                    None => db.url.clone(),
                },
            ),
            ("DATABASE_MAX_CONNECTIONS".to_owned(), "4".to_owned()),
            ("USER_SERVICE_URL".to_owned(), users_url),
            ("PRODUCT_SERVICE_URL".to_owned(), products_url),
        ]);
        env.extend(self.env);
        let config = Config::from_lookup(|name| env.get(name).cloned()).expect("test config");
        let app = Application::build(config).await.expect("application starts");
        let (addr, metrics_addr) = (app.local_addr(), app.metrics_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        TestApp {
            addr,
            metrics_addr,
            http: reqwest::Client::new(),
            db,
            upstreams,
            stop: Some(stop),
            served: Some(served),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Reads a problem+json response, checking its media type and shape.
pub async fn problem(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap_or_default().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/problem+json"), "status {status}");
    let body: serde_json::Value = response.json().await.expect("problem body");
    assert_eq!(body["status"], status);
    for field in ["type", "title", "detail"] {
        assert!(body[field].is_string(), "problem without {field}: {body}");
    }
    (status, body)
}

/// Declares `async fn name(backend)` tests once, run on PostgreSQL and on SQLite.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $( #[tokio::test] async fn $name() { super::$name($crate::helpers::Backend::Postgres).await } )*
        }
        mod sqlite {
            $( #[tokio::test] async fn $name() { super::$name($crate::helpers::Backend::Sqlite).await } )*
        }
    };
}

impl TestApp {
    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.expect("metrics text")
    }

    /// `GET /health/ready` as JSON.
    pub async fn ready(&self) -> serde_json::Value {
        self.get("/health/ready").await.json().await.expect("readiness json")
    }

    /// The upstream-wide breaker state and open per-key breakers of one upstream.
    pub async fn breaker(&self, upstream: &str) -> (String, u64) {
        let ready = self.ready().await;
        let breakers = ready["breakers"].as_array().expect("breakers");
        let entry = breakers.iter().find(|b| b["upstream"] == upstream).expect("upstream listed");
        (entry["state"].as_str().unwrap_or_default().to_owned(), entry["keys_open"].as_u64().unwrap_or_default())
    }
}

/// Sum of the samples of `name` whose labels include all of `labels` (0 when none).
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let has_all = labels.iter().all(|(k, v)| label_text.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
            has_all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// A loopback port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The real `order-service` binary on `port` over `database_url`, with `upstreams` (the
/// simulator) as user and product services; the caller adds variables and sets its output.
pub fn binary(port: u16, database_url: &str, upstreams: &Upstreams) -> std::process::Command {
    let sim = upstreams.sim();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_order-service"));
    command
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", database_url)
        .env("USER_SERVICE_URL", sim.users_url())
        .env("PRODUCT_SERVICE_URL", sim.products_url());
    command
}

/// Polls `{base}/health/ready` until it answers 200 (at most 10 s).
pub async fn wait_ready(http: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if http.get(format!("{base}/health/ready")).send().await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("order-service never became ready at {base}");
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
