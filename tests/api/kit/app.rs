//! The real application in-process on a random loopback port, over a database of its own and
//! upstreams of its own, and the problem+json reader its answers are checked with.

use std::collections::HashMap;
use std::net::SocketAddr;

use order_service::{Application, Config};
use reqwest::Response;
use serde_json::Value;
use tokio::task::JoinHandle;

use super::{ADA, Backend, TestDb, Upstreams};

/// The application under test, serving on a random loopback port until dropped.
pub struct TestApp {
    pub addr: SocketAddr,
    /// `/metrics` when `METRICS_ADDR` is set.
    pub metrics_addr: Option<SocketAddr>,
    /// The admin API when `ADMIN_ADDR` is set.
    pub admin_addr: Option<SocketAddr>,
    pub http: reqwest::Client,
    pub db: TestDb,
    pub upstreams: Upstreams,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<JoinHandle<std::io::Result<()>>>,
}

pub struct TestAppBuilder {
    backend: Backend,
    env: HashMap<String, String>,
    upstreams: Option<Upstreams>,
    database_port: Option<u16>,
    /// `DATABASE_SESSION_URL` straight to PostgreSQL when `database_port` goes elsewhere.
    session_direct: bool,
    /// Another app's database (a second replica), instead of a new one.
    database: Option<TestDb>,
}

impl TestApp {
    pub fn builder(backend: Backend) -> TestAppBuilder {
        TestAppBuilder {
            backend,
            env: HashMap::new(),
            upstreams: None,
            database_port: None,
            session_direct: false,
            database: None,
        }
    }

    /// The app over wiremock upstreams that know Ada and the Classic Box and answer at once,
    /// with `env` added (what the outbox tests, which are about what comes after, start with).
    pub async fn with_healthy_upstreams(backend: Backend, env: &[(&str, &str)]) -> TestApp {
        let builder = TestApp::builder(backend).upstreams(Upstreams::healthy().await);
        env.iter().fold(builder, |builder, (name, value)| builder.env(name, value)).spawn().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `POST /v1/orders` with a JSON body.
    pub async fn post_order(&self, user_id: &str, product_code: &str) -> Response {
        self.http.post(self.url("/v1/orders")).json(&order(user_id, product_code)).send().await.expect("request")
    }

    /// `POST /v1/orders` on a task of its own, for a test that holds it in flight.
    pub fn post_order_in_background(&self, user_id: &str, product_code: &str) -> JoinHandle<reqwest::Result<Response>> {
        tokio::spawn(self.http.post(self.url("/v1/orders")).json(&order(user_id, product_code)).send())
    }

    /// Places `n` of Ada's Classic Box orders (each must be a 201) and returns their bodies, in
    /// creation order.
    pub async fn place_orders(&self, n: usize) -> Vec<Value> {
        let mut orders = Vec::with_capacity(n);
        for _ in 0..n {
            let response = self.post_order(ADA, "classic-box").await;
            assert_eq!(response.status(), 201);
            orders.push(response.json().await.expect("json"));
        }
        orders
    }

    pub async fn get(&self, path: &str) -> Response {
        self.http.get(self.url(path)).send().await.expect("request")
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.expect("metrics text")
    }

    /// `GET /health/ready` as JSON.
    pub async fn ready(&self) -> Value {
        self.get("/health/ready").await.json().await.expect("readiness json")
    }

    /// The upstream-wide breaker state and open per-key breakers of one upstream.
    pub async fn breaker(&self, upstream: &str) -> (String, u64) {
        let ready = self.ready().await;
        let breakers = ready["breakers"].as_array().expect("breakers");
        let entry = breakers.iter().find(|b| b["upstream"] == upstream).expect("upstream listed");
        (entry["state"].as_str().unwrap_or_default().to_owned(), entry["keys_open"].as_u64().unwrap_or_default())
    }

    /// A URL on the admin address (`ADMIN_ADDR` must be set, e.g. to `127.0.0.1:0`).
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr.expect("ADMIN_ADDR is set"))
    }

    /// `PUT /admin/breakers/{upstream}` with `{"mode": mode}`: the answer's JSON.
    pub async fn force_breaker(&self, upstream: &str, mode: &str) -> Value {
        let url = self.admin_url(&format!("/admin/breakers/{upstream}"));
        let response = self.http.put(url).json(&serde_json::json!({ "mode": mode })).send().await.expect("admin");
        assert_eq!(response.status(), 200, "PUT mode {mode}");
        response.json().await.expect("breaker json")
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

    /// `DATABASE_SESSION_URL` goes straight to PostgreSQL (what a pooler in transaction mode needs).
    pub fn session_direct(mut self) -> Self {
        self.session_direct = true;
        self
    }

    /// A second replica: the app runs on `db` (another app's database) instead of a new one.
    pub fn same_database_as(mut self, db: &TestDb) -> Self {
        self.backend = db.backend;
        self.database = Some(db.shared());
        self
    }

    pub fn upstreams(mut self, upstreams: Upstreams) -> Self {
        self.upstreams = Some(upstreams);
        self
    }

    pub async fn spawn(self) -> TestApp {
        order_service::telemetry::init_logging();
        let db = match self.database {
            Some(db) => db,
            None => TestDb::new(self.backend).await,
        };
        let upstreams = match self.upstreams {
            Some(upstreams) => upstreams,
            None => Upstreams::simulator().await,
        };
        let (users_url, products_url) = upstreams.urls();
        let pgbouncer = match (self.backend, self.database_port) {
            (Backend::Postgres, None) => pgbouncer_port(),
            _ => None,
        };
        let mut env = HashMap::from([
            ("HTTP_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
            (
                "DATABASE_URL".to_owned(),
                match self.database_port.or(pgbouncer) {
                    Some(port) => db.url.replace("127.0.0.1:5432", &format!("127.0.0.1:{port}")),
                    None => db.url.clone(),
                },
            ),
            ("DATABASE_MAX_CONNECTIONS".to_owned(), "4".to_owned()),
            ("DATABASE_SESSION_URL".to_owned(), if self.session_direct { db.url.clone() } else { String::new() }),
            ("USER_SERVICE_URL".to_owned(), users_url),
            ("PRODUCT_SERVICE_URL".to_owned(), products_url),
        ]);
        if pgbouncer.is_some() {
            // What the service needs behind PgBouncer 1.18 in transaction pooling (docs/fleet.md).
            env.insert("DATABASE_STATEMENT_CACHE_CAPACITY".to_owned(), "0".to_owned());
            env.insert("DATABASE_SESSION_URL".to_owned(), db.url.clone());
        }
        env.extend(self.env);
        let config = Config::from_lookup(|name| env.get(name).cloned()).expect("test config");
        let app = Application::build(config).await.expect("application starts");
        let (addr, metrics_addr, admin_addr) = (app.local_addr(), app.metrics_addr(), app.admin_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        TestApp {
            addr,
            metrics_addr,
            admin_addr,
            http: reqwest::Client::new(),
            db,
            upstreams,
            stop: Some(stop),
            served: Some(served),
        }
    }
}

/// `TEST_PGBOUNCER_PORT`: PostgreSQL apps reach their database through PgBouncer in transaction
/// pooling on this loopback port (its `*` database entry maps every name to 127.0.0.1:5432), while
/// the test reads the database directly. `scripts/test-through-pgbouncer` runs the order tests so.
fn pgbouncer_port() -> Option<u16> {
    std::env::var("TEST_PGBOUNCER_PORT").ok().and_then(|port| port.parse().ok())
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

/// The body of `POST /v1/orders`.
fn order(user_id: &str, product_code: &str) -> Value {
    serde_json::json!({ "user_id": user_id, "product_code": product_code })
}

/// The ids of orders as the API returned them.
pub fn order_ids(orders: &[Value]) -> Vec<String> {
    orders.iter().map(|o| o["id"].as_str().expect("id").to_owned()).collect()
}

/// Reads a problem+json response, checking its media type and shape.
pub async fn problem(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap_or_default().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/problem+json"), "status {status}");
    let body: Value = response.json().await.expect("problem body");
    assert_eq!(body["status"], status);
    for field in ["type", "title", "detail"] {
        assert!(body[field].is_string(), "problem without {field}: {body}");
    }
    (status, body)
}
