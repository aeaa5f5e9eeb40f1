//! The two simulated upstreams: answers from the catalogue, bent by any injected faults, plus
//! counters that tests and experiments read (calls per key, requests in flight, work done).
//!
//! An answer's delay is the upstream's **work**. It runs on a task of its own, as a real
//! server's does: a caller that hangs up does not stop it. What stops it is the caller's
//! deadline, `x-envoy-expected-rq-timeout-ms` (Envoy's header: how long the caller will still
//! wait): once that has passed, the work is abandoned — counted, with the time it would still
//! have taken as saved — and the request is answered nothing more (the caller has stopped
//! waiting; an answer, even an error, could only race its timeout). `SIM_HONOUR_DEADLINE=0`
//! ignores the header, to measure what it saves.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::time::Instant;

use crate::catalogue::{Catalogue, Entry, index};
use crate::faults::Faults;

/// Where to listen and what to serve.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub users_addr: SocketAddr,
    pub products_addr: SocketAddr,
    /// The admin API (faults, stats): its own address, so an outage of an upstream's port
    /// never locks out the call that ends it.
    pub admin_addr: SocketAddr,
    pub catalogue: Catalogue,
    /// Whether work stops when the caller's `x-envoy-expected-rq-timeout-ms` has passed.
    pub honour_deadline: bool,
}

impl SimConfig {
    /// The built-in fault table on random loopback ports: what tests want.
    pub fn ephemeral() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            users_addr: any,
            products_addr: any,
            admin_addr: any,
            catalogue: Catalogue::builtin(),
            honour_deadline: true,
        }
    }
}

/// One simulated upstream's catalogue and call counts.
#[derive(Debug)]
struct Upstream {
    entries: HashMap<String, Entry>,
    /// Calls per requested key (known or not), in arrival order; drives the alternation too.
    calls: Mutex<HashMap<String, u64>>,
    work: Mutex<Work>,
}

/// Work done and abandoned, in milliseconds.
#[derive(Debug, Default, Clone, Copy)]
struct Work {
    done_ms: u64,
    abandoned: u64,
    saved_ms: u64,
}

impl Upstream {
    fn new(entries: &[Entry]) -> Self {
        Self { entries: index(entries), calls: Mutex::new(HashMap::new()), work: Mutex::default() }
    }

    fn worked(&self, done: Duration, saved: Duration) {
        let mut work = self.work.lock().unwrap_or_else(|p| p.into_inner());
        work.done_ms += done.as_millis() as u64;
        if !saved.is_zero() {
            work.abandoned += 1;
            work.saved_ms += saved.as_millis() as u64;
        }
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
        let work = *self.work.lock().unwrap_or_else(|p| p.into_inner());
        UpstreamStats {
            total: by_key.values().sum(),
            by_key,
            work_done_ms: work.done_ms,
            abandoned: work.abandoned,
            work_saved_ms: work.saved_ms,
        }
    }

    fn reset(&self) {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clear();
        *self.work.lock().unwrap_or_else(|p| p.into_inner()) = Work::default();
    }
}

/// State shared by both upstreams of one simulator.
#[derive(Debug)]
pub struct Sim {
    users: Upstream,
    products: Upstream,
    pub faults: Faults,
    in_flight: AtomicI64,
    max_in_flight: AtomicI64,
    working: AtomicI64,
    honour_deadline: bool,
}

/// Counters as `GET /__admin/stats` shows them.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Stats {
    pub users: UpstreamStats,
    pub products: UpstreamStats,
    pub in_flight: i64,
    /// The most requests ever in flight at once across both upstreams: proof of overlap.
    pub max_in_flight: i64,
    /// Requests being worked on now (an answer's delay), their caller still waiting or not.
    #[serde(default)]
    pub working: i64,
}

#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct UpstreamStats {
    pub total: u64,
    pub by_key: HashMap<String, u64>,
    /// Time spent working on answers (their delays), finished or not.
    #[serde(default)]
    pub work_done_ms: u64,
    /// Requests whose work stopped because the caller's deadline had passed.
    #[serde(default)]
    pub abandoned: u64,
    /// The work those would still have taken.
    #[serde(default)]
    pub work_saved_ms: u64,
}

impl Sim {
    pub fn new(catalogue: &Catalogue, honour_deadline: bool) -> Self {
        Self {
            users: Upstream::new(&catalogue.users),
            products: Upstream::new(&catalogue.products),
            faults: Faults::default(),
            in_flight: AtomicI64::new(0),
            max_in_flight: AtomicI64::new(0),
            working: AtomicI64::new(0),
            honour_deadline,
        }
    }

    pub fn stats(&self) -> Stats {
        Stats {
            users: self.users.snapshot(),
            products: self.products.snapshot(),
            in_flight: self.in_flight.load(Ordering::SeqCst),
            max_in_flight: self.max_in_flight.load(Ordering::SeqCst),
            working: self.working.load(Ordering::SeqCst),
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

    fn upstream(&self, which: Which) -> &Upstream {
        match which {
            Which::Users => &self.users,
            Which::Products => &self.products,
        }
    }

    /// Works `planned` on a task of its own, for at most the caller's `budget` (when the
    /// deadline is honoured); whether the work was finished.
    async fn work(self: &Arc<Self>, which: Which, planned: Duration, budget: Option<Duration>) -> bool {
        if planned.is_zero() {
            return true;
        }
        let spent = match budget {
            Some(budget) if self.honour_deadline => planned.min(budget),
            _ => planned,
        };
        let sim = Arc::clone(self);
        let work = tokio::spawn(async move {
            sim.working.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(spent).await;
            sim.upstream(which).worked(spent, planned - spent);
            sim.working.fetch_sub(1, Ordering::SeqCst);
        });
        work.await.is_ok() && spent == planned
    }
}

/// Envoy's deadline header: the milliseconds the caller will still wait.
pub const EXPECTED_TIMEOUT: &str = "x-envoy-expected-rq-timeout-ms";

fn caller_budget(headers: &HeaderMap) -> Option<Duration> {
    let ms: u64 = headers.get(EXPECTED_TIMEOUT)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_millis(ms))
}

/// Decrements the in-flight count however the request ends (answered or abandoned).
struct InFlight(Arc<Sim>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One of the two simulated upstreams; `user` / `product` in the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Which {
    #[serde(rename = "user")]
    Users,
    #[serde(rename = "product")]
    Products,
}

#[derive(Clone)]
struct AppState {
    sim: Arc<Sim>,
    which: Which,
}

async fn answer(State(app): State<AppState>, Path(key): Path<String>, headers: HeaderMap) -> Response {
    let _guard = app.sim.enter();
    let upstream = app.sim.upstream(app.which);
    let call = upstream.count(&key);
    let plan = app.sim.faults.plan(app.which, &key, Instant::now(), || rand::random_range(0..100));
    if plan.hang {
        return std::future::pending().await;
    }
    if plan.reset {
        return reset();
    }
    let entry = upstream.entries.get(&key);
    let planned = entry.map_or(Duration::ZERO, Entry::delay) + plan.extra_delay;
    if !app.sim.work(app.which, planned, caller_budget(&headers)).await {
        // The caller has stopped waiting: nothing more is sent (see the module doc).
        return std::future::pending().await;
    }
    let Some(entry) = entry else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    let status = match (plan.status, entry.alternate_status) {
        (Some(injected), _) => injected,
        (None, Some(alt)) if call % 2 == 1 => alt,
        _ => entry.status,
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let response = match (&entry.body, status.is_success()) {
        (Some(body), true) => (status, Json(body.clone())).into_response(),
        _ => error(status, "simulated failure"),
    };
    match plan.bytes_per_sec {
        Some(rate) => dribble(response, rate).await,
        None => response,
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// A body that fails before its first byte: hyper drops the connection without an answer.
fn reset() -> Response {
    let failing = futures_util::stream::once(async { Err::<Bytes, std::io::Error>(std::io::Error::other("reset")) });
    Response::new(Body::from_stream(failing))
}

/// Re-sends `response`'s body a few bytes at a time, `rate` bytes a second.
async fn dribble(response: Response, rate: u32) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let chunk = (rate as usize / 10).max(1);
    let pieces: Vec<Bytes> = bytes.chunks(chunk).map(Bytes::copy_from_slice).collect();
    let stream = futures_util::stream::unfold(pieces.into_iter(), |mut pieces| async move {
        let piece = pieces.next()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((Ok::<Bytes, std::io::Error>(piece), pieces))
    });
    let mut parts = parts;
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from_stream(stream))
}

/// One upstream's routes.
pub(crate) fn router(sim: Arc<Sim>, which: Which) -> Router {
    let path = match which {
        Which::Users => "/users/{key}",
        Which::Products => "/products/{key}",
    };
    Router::new().route(path, get(answer)).with_state(AppState { sim, which })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternation_starts_with_the_error_and_is_shared() {
        let sim = Sim::new(&Catalogue::builtin(), true);
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
