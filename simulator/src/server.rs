//! The two simulated upstreams: answers from the catalogue, plus counters that tests and
//! experiments read (calls per key, requests in flight across both upstreams).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::catalogue::{Catalogue, Entry, index};

/// Where to listen and what to serve.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub users_addr: SocketAddr,
    pub products_addr: SocketAddr,
    pub catalogue: Catalogue,
}

impl SimConfig {
    /// The built-in fault table on random loopback ports: what tests want.
    pub fn ephemeral() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self { users_addr: any, products_addr: any, catalogue: Catalogue::builtin() }
    }
}

/// One simulated upstream's catalogue and call counts.
#[derive(Debug)]
struct Upstream {
    entries: HashMap<String, Entry>,
    /// Calls per requested key (known or not), in arrival order; drives the alternation too.
    calls: Mutex<HashMap<String, u64>>,
}

impl Upstream {
    fn new(entries: &[Entry]) -> Self {
        Self { entries: index(entries), calls: Mutex::new(HashMap::new()) }
    }

    /// Counts the call and returns its 1-based number for this key.
    fn count(&self, key: &str) -> u64 {
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let n = calls.entry(key.to_owned()).or_default();
        *n += 1;
        *n
    }

    fn snapshot(&self) -> UpstreamStats {
        let by_key = self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone();
        UpstreamStats { total: by_key.values().sum(), by_key }
    }

    fn reset(&self) {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// State shared by both upstreams of one simulator.
#[derive(Debug)]
pub struct Sim {
    users: Upstream,
    products: Upstream,
    in_flight: AtomicI64,
    max_in_flight: AtomicI64,
}

/// Counters as `GET /__admin/stats` shows them.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Stats {
    pub users: UpstreamStats,
    pub products: UpstreamStats,
    pub in_flight: i64,
    /// The most requests ever in flight at once across both upstreams: proof of overlap.
    pub max_in_flight: i64,
}

#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct UpstreamStats {
    pub total: u64,
    pub by_key: HashMap<String, u64>,
}

impl Sim {
    pub fn new(catalogue: &Catalogue) -> Self {
        Self {
            users: Upstream::new(&catalogue.users),
            products: Upstream::new(&catalogue.products),
            in_flight: AtomicI64::new(0),
            max_in_flight: AtomicI64::new(0),
        }
    }

    pub fn stats(&self) -> Stats {
        Stats {
            users: self.users.snapshot(),
            products: self.products.snapshot(),
            in_flight: self.in_flight.load(Ordering::SeqCst),
            max_in_flight: self.max_in_flight.load(Ordering::SeqCst),
        }
    }

    /// Forgets counts and the alternation, as if freshly started.
    pub fn reset(&self) {
        self.users.reset();
        self.products.reset();
        self.max_in_flight.store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    fn enter(self: &Arc<Self>) -> InFlight {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }
}

/// Decrements the in-flight count however the request ends (answered or abandoned).
struct InFlight(Arc<Sim>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Clone, Copy)]
enum Which {
    Users,
    Products,
}

#[derive(Clone)]
struct AppState {
    sim: Arc<Sim>,
    which: Which,
}

async fn answer(State(app): State<AppState>, Path(key): Path<String>) -> Response {
    let _guard = app.sim.enter();
    let upstream = match app.which {
        Which::Users => &app.sim.users,
        Which::Products => &app.sim.products,
    };
    let call = upstream.count(&key);
    let Some(entry) = upstream.entries.get(&key) else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    tokio::time::sleep(entry.delay()).await;
    let status = match entry.alternate_status {
        Some(alt) if call % 2 == 1 => alt,
        _ => entry.status,
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match (&entry.body, status.is_success()) {
        (Some(body), true) => (status, Json(body.clone())).into_response(),
        _ => error(status, "simulated failure"),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn stats(State(app): State<AppState>) -> Json<Stats> {
    Json(app.sim.stats())
}

async fn reset(State(app): State<AppState>) -> StatusCode {
    app.sim.reset();
    StatusCode::NO_CONTENT
}

fn router(sim: Arc<Sim>, which: Which) -> Router {
    let path = match which {
        Which::Users => "/users/{key}",
        Which::Products => "/products/{key}",
    };
    Router::new()
        .route(path, get(answer))
        .route("/__admin/stats", get(stats))
        .route("/__admin/reset", post(reset))
        .with_state(AppState { sim, which })
}

/// A running simulator; dropping it stops both servers.
#[derive(Debug)]
pub struct RunningSim {
    pub users_addr: SocketAddr,
    pub products_addr: SocketAddr,
    pub sim: Arc<Sim>,
    users_task: JoinHandle<()>,
    products_task: JoinHandle<()>,
}

impl RunningSim {
    pub fn users_url(&self) -> String {
        format!("http://{}", self.users_addr)
    }

    pub fn products_url(&self) -> String {
        format!("http://{}", self.products_addr)
    }

    /// Resolves when either server stops (it only does on an I/O error).
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = &mut self.users_task => {}
            _ = &mut self.products_task => {}
        }
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.users_task.abort();
        self.products_task.abort();
    }
}

/// Binds both ports, then serves in the background on the current runtime.
pub async fn spawn(config: SimConfig) -> std::io::Result<RunningSim> {
    let sim = Arc::new(Sim::new(&config.catalogue));
    let users = TcpListener::bind(config.users_addr).await?;
    let products = TcpListener::bind(config.products_addr).await?;
    let users_addr = users.local_addr()?;
    let products_addr = products.local_addr()?;
    let serve = |listener: TcpListener, which| {
        let app = router(Arc::clone(&sim), which);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "simulator server stopped");
            }
        })
    };
    Ok(RunningSim {
        users_addr,
        products_addr,
        users_task: serve(users, Which::Users),
        products_task: serve(products, Which::Products),
        sim,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternation_starts_with_the_error_and_is_shared() {
        let sim = Sim::new(&Catalogue::builtin());
        assert_eq!(sim.users.count("e6f24d7d1c7e"), 1);
        assert_eq!(sim.users.count("e6f24d7d1c7e"), 2);
        assert_eq!(sim.users.count("nobody"), 1);
        let stats = sim.stats();
        assert_eq!(stats.users.total, 3);
        assert_eq!(stats.users.by_key["e6f24d7d1c7e"], 2);
        sim.reset();
        assert_eq!(sim.stats().users.total, 0);
    }
}
