//! Cheap rejection: the outermost layer of every route refuses a `/v1` request whose limit is
//! full before anything else runs for it — no request id made, no span, no log line, no body
//! read or parsed, no problem serialised, no label set built. Under a flood of clients that
//! re-send at once, rejecting is most of what the service does, so its cost decides how much
//! CPU is left for the orders it admits.
//!
//! What a shed request still gets: the 503 `load-shed` problem with `Retry-After: 1` (bytes
//! built once, [`shed_response`]), its `x-request-id` (the caller's, else a new one), and its
//! count in `http_server_requests_total` / `http_server_request_duration_seconds` through
//! handles taken when the router was built. It is not logged one by one (at tens of thousands
//! a second the log line would be the largest cost); the counters say how many.
//!
//! The answer is sent `HTTP_SHED_DELAY_MS` after the decision: the request holds no permit and
//! nothing was read, only a timer waits, and a client that re-sends the moment it is refused
//! (a retry storm, a misbehaving client) re-sends four times a second per connection (at the
//! default 250 ms) instead of tens of thousands of times — the CPU it would have spent on
//! refusals goes to orders.
//!
//! Never shed here: anything outside `/v1` (health, readiness, metrics, OpenAPI, docs), and a
//! replay of an Idempotency-Key this replica completed ([`crate::http::replays`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::Response;
use metrics::{Counter, Histogram};
use tower::{Layer, Service};

use super::{AdaptiveLimit, Admission};
use crate::domain::idempotency::IdempotencyKey;
use crate::http::error::shed_response;
use crate::http::idempotency::IDEMPOTENCY_KEY;
use crate::http::replays::{CompletedKeys, Replay};
use crate::telemetry::metrics::http_request_handles;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The routes that can be shed, with their method: writes take the write limit, reads the
/// read limit. Anything else passes untouched.
const LANES: [(Method, &str, Class); 6] = [
    (Method::POST, "/v1/orders", Class::Write),
    (Method::POST, "/v1/order", Class::Write),
    (Method::GET, "/v1/orders", Class::Read),
    (Method::GET, "/v1/orders/{id}", Class::Read),
    (Method::HEAD, "/v1/orders", Class::Read),
    (Method::HEAD, "/v1/orders/{id}", Class::Read),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Read,
    Write,
}

/// One lane's 503 series, taken once.
struct Counted {
    requests: Counter,
    duration: Histogram,
}

/// Wraps each route (apply it last, so it runs first) with [`Shed`].
#[derive(Clone)]
pub struct ShedLayer {
    reads: AdaptiveLimit,
    writes: AdaptiveLimit,
    counted: Arc<[Counted; LANES.len()]>,
    delay: Duration,
    replays: CompletedKeys,
}

impl ShedLayer {
    /// Takes the metric handles now: build it after the recorder is installed. A refusal is
    /// sent `delay` after it was decided (`HTTP_SHED_DELAY_MS`).
    pub fn new(gate: &Admission, delay: Duration, replays: CompletedKeys) -> Self {
        let counted = LANES.each_ref().map(|(method, route, _)| {
            let (requests, duration) = http_request_handles(method_label(method), route, 503);
            Counted { requests, duration }
        });
        Self { reads: gate.reads.clone(), writes: gate.writes.clone(), counted: Arc::new(counted), delay, replays }
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        _ => "GET",
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed { inner, gate: self.clone() }
    }
}

/// See the module doc.
#[derive(Clone)]
pub struct Shed<S> {
    inner: S,
    gate: ShedLayer,
}

impl<S> Shed<S> {
    /// The lane of a request that must be refused now, if it must. A write whose
    /// Idempotency-Key this replica completed is never refused: it is marked as a [`Replay`]
    /// and answered from memory, without a permit.
    fn refuse(&self, request: &mut Request) -> Option<usize> {
        let route = request.extensions().get::<MatchedPath>()?.as_str();
        let lane = LANES.iter().position(|(method, path, _)| method == request.method() && *path == route)?;
        let limit = match LANES[lane].2 {
            Class::Read => &self.gate.reads,
            Class::Write => match self.replay_of(request) {
                Some(replay) => {
                    request.extensions_mut().insert(replay);
                    return None;
                }
                None => &self.gate.writes,
            },
        };
        (!limit.has_room()).then_some(lane)
    }

    fn replay_of(&self, request: &Request) -> Option<Replay> {
        let raw = request.headers().get(IDEMPOTENCY_KEY)?.to_str().ok()?;
        let key = IdempotencyKey::parse(raw).ok()?;
        self.gate.replays.get(key.as_str()).map(Replay)
    }
}

impl<S> Service<Request> for Shed<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let mut request = request;
        let Some(lane) = self.refuse(&mut request) else {
            return Box::pin(self.inner.call(request));
        };
        let mut response = shed_response();
        response.headers_mut().insert(REQUEST_ID, request_id(&request));
        let counted = &self.gate.counted[lane];
        counted.requests.increment(1);
        if self.gate.delay.is_zero() {
            counted.duration.record(started.elapsed().as_secs_f64());
            return Box::pin(std::future::ready(Ok(response)));
        }
        let (delay, duration) = (self.gate.delay, counted.duration.clone());
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            duration.record(started.elapsed().as_secs_f64());
            Ok(response)
        })
    }
}

/// The caller's `x-request-id` when it is one the service would keep, else a new one: the same
/// rule as every other answer (`observe::drop_unusable_request_id`).
fn request_id(request: &Request) -> HeaderValue {
    match request.headers().get(REQUEST_ID) {
        Some(id) if crate::http::observe::usable_request_id(id.as_bytes()) => id.clone(),
        _ => {
            let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let id = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut text);
            HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("shed"))
        }
    }
}

#[cfg(test)]
#[path = "shed_tests.rs"]
mod tests;
