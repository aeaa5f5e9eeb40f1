//! The circuit-breaker layer: refuses calls while open (no request sent, `Retry-After` = the
//! remaining open time) and feeds every finished attempt back as one health sample.
//!
//! - [`state`] — one breaker: a pure state machine over an injected clock.
//! - [`keyed`] — the upstream-wide breaker plus a bounded map of per-key breakers.

pub mod keyed;
pub mod state;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

pub use keyed::{Changes, KeyedBreakers, KeyedConfig, Ticket, Verdict};
pub use state::{BreakerConfig, Mode, StateName, Transition};

use super::{Upstream, UpstreamError, UpstreamRequest};
use crate::telemetry::metrics;

/// Shared by every clone of the layer's service; also read by `/health/ready`.
#[derive(Debug, Clone)]
pub struct BreakerHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    upstream: Upstream,
    breakers: Mutex<KeyedBreakers>,
}

/// A snapshot for readiness and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerStatus {
    pub upstream: Upstream,
    pub state: StateName,
    pub mode: Mode,
    pub keys_open: usize,
}

impl BreakerHandle {
    pub fn new(upstream: Upstream, config: KeyedConfig) -> Self {
        metrics::breaker_state(upstream.as_str(), StateName::Closed.as_str(), &StateName::LABELS);
        metrics::breaker_keys_open(upstream.as_str(), 0);
        let transitions = Transition::ALL.map(|t| (t.from.as_str(), t.to.as_str()));
        metrics::breaker_transitions_registered(upstream.as_str(), &transitions);
        metrics::breaker_modes_registered(upstream.as_str(), Mode::Auto.as_str(), &Mode::LABELS);
        let breakers = Mutex::new(KeyedBreakers::new(config, Instant::now()));
        Self { shared: Arc::new(Shared { upstream, breakers }) }
    }

    /// The state as it is now, even with no traffic: a due open → half-open transition happens
    /// here (counted and logged like any other), and the state gauges are set from what is read,
    /// so readiness and `/metrics` (which calls this before rendering) never show a stale state,
    /// nor a count of open keys that eviction has since changed.
    pub fn status(&self) -> BreakerStatus {
        let (ticked, state, mode, keys_open) = {
            let mut breakers = self.shared.lock();
            let ticked = breakers.tick(Instant::now());
            (ticked, breakers.upstream_state(), breakers.mode(), breakers.keys_open())
        };
        let (upstream_transition, key_transitions) = ticked;
        for (key, transition) in key_transitions {
            self.shared.report(Changes { upstream: None, key: Some(transition) }, &key, Some(keys_open));
        }
        self.shared.report(Changes { upstream: upstream_transition, key: None }, "", None);
        let upstream = self.shared.upstream;
        metrics::breaker_state(upstream.as_str(), state.as_str(), &StateName::LABELS);
        metrics::breaker_keys_open(upstream.as_str(), keys_open);
        metrics::breaker_mode(upstream.as_str(), mode.as_str(), &Mode::LABELS);
        BreakerStatus { upstream, state, mode, keys_open }
    }

    /// Hands the upstream's breakers to `mode` (an operator's decision: logged, counted).
    pub fn set_mode(&self, mode: Mode) -> BreakerStatus {
        let (from, transition) = {
            let mut breakers = self.shared.lock();
            (breakers.mode(), breakers.set_mode(mode))
        };
        let upstream = self.shared.upstream.as_str();
        metrics::breaker_mode_changed(upstream, mode.as_str());
        tracing::warn!(upstream, from = from.as_str(), to = mode.as_str(), "circuit breaker mode set by an operator");
        self.shared.report(Changes { upstream: transition, key: None }, "", None);
        self.status()
    }

    /// New thresholds for every breaker of the upstream, effective for the next calls.
    pub fn reconfigure(&self, config: KeyedConfig) {
        self.shared.lock().reconfigure(config, Instant::now());
    }

    /// Keys whose own breaker is open or half-open, sorted.
    pub fn open_keys(&self) -> Vec<String> {
        self.shared.lock().open_keys()
    }

    /// The refusal a call for `key` would get right now from an open breaker, without making
    /// the call: lets an order skip its other lookup when this one is refused anyway.
    pub fn refusal(&self, key: &str) -> Option<UpstreamError> {
        let retry_after = self.shared.lock().refuses(key, Instant::now())?;
        Some(UpstreamError::CircuitOpen { retry_after })
    }

    pub fn upstream(&self) -> Upstream {
        self.shared.upstream
    }

    pub fn layer(&self) -> BreakerLayer {
        BreakerLayer { handle: self.clone() }
    }
}

impl crate::ops::BreakerPanel for BreakerHandle {
    fn report(&self) -> crate::ops::BreakerReport {
        self.status().into()
    }

    fn open_keys(&self) -> Vec<String> {
        BreakerHandle::open_keys(self)
    }

    fn set_mode(&self, mode: Mode) -> crate::ops::BreakerReport {
        BreakerHandle::set_mode(self, mode).into()
    }
}

impl From<BreakerStatus> for crate::ops::BreakerReport {
    fn from(status: BreakerStatus) -> Self {
        Self {
            upstream: status.upstream.as_str(),
            state: status.state.as_str(),
            mode: status.mode,
            keys_open: status.keys_open,
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, KeyedBreakers> {
        // A panic while holding the lock leaves consistent counters; keep serving.
        self.breakers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Metrics and logs for state changes; called with the lock released.
    fn report(&self, changes: Changes, key: &str, keys_open: Option<usize>) {
        let upstream = self.upstream.as_str();
        if let Some(t) = changes.upstream {
            metrics::breaker_transition(upstream, t.from.as_str(), t.to.as_str());
            metrics::breaker_state(upstream, t.to.as_str(), &StateName::LABELS);
            tracing::warn!(upstream, from = t.from.as_str(), to = t.to.as_str(), "circuit breaker changed state");
        }
        if let (Some(t), Some(keys_open)) = (changes.key, keys_open) {
            metrics::breaker_key_transition(upstream, t.from.as_str(), t.to.as_str());
            metrics::breaker_keys_open(upstream, keys_open);
            tracing::info!(
                upstream,
                key,
                from = t.from.as_str(),
                to = t.to.as_str(),
                "per-key circuit breaker changed state"
            );
        }
    }
}

/// What this attempt says about the upstream's health; `None` when it says nothing
/// (refused locally before any request was sent).
pub fn verdict(error: &UpstreamError) -> Option<Verdict> {
    match error {
        UpstreamError::Connect(_) => Some(Verdict::Unreachable),
        UpstreamError::ServerError(_) | UpstreamError::Timeout | UpstreamError::InvalidResponse(_) => {
            Some(Verdict::Failed)
        }
        // The upstream answered, consistently: our request, not its health.
        UpstreamError::UnexpectedStatus(_) => Some(Verdict::Healthy),
        UpstreamError::DeadlineExceeded
        | UpstreamError::CircuitOpen { .. }
        | UpstreamError::BulkheadFull
        | UpstreamError::RetryBudgetExhausted(_) => None,
    }
}

#[derive(Debug, Clone)]
pub struct BreakerLayer {
    handle: BreakerHandle,
}

impl<S> Layer<S> for BreakerLayer {
    type Service = BreakerService<S>;

    fn layer(&self, inner: S) -> BreakerService<S> {
        BreakerService { inner, shared: Arc::clone(&self.handle.shared) }
    }
}

#[derive(Debug, Clone)]
pub struct BreakerService<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Holds a ticket while the attempt runs. Dropped unfinished, it is a timeout when the order's
/// deadline has run out (the upstream did not answer in the time it had: without this, a
/// deadline shorter than the attempt timeout would hide a hang from the breakers), and no
/// verdict otherwise (the other lookup failed, the client left): only its probe slot is freed.
struct InFlight {
    shared: Arc<Shared>,
    key: String,
    ticket: Option<Ticket>,
    started: Instant,
    deadline: Instant,
}

impl InFlight {
    fn finish(mut self, verdict: Option<Verdict>) {
        self.settle(verdict);
    }

    fn settle(&mut self, verdict: Option<Verdict>) {
        let Some(ticket) = self.ticket.take() else { return };
        let Some(verdict) = verdict else {
            self.shared.lock().release(&self.key, ticket);
            return;
        };
        let now = Instant::now();
        let (changes, keys_open) = {
            let mut breakers = self.shared.lock();
            let changes = breakers.record(&self.key, ticket, verdict, now - self.started, now);
            let keys_open = changes.key.map(|_| breakers.keys_open());
            (changes, keys_open)
        };
        self.shared.report(changes, &self.key, keys_open);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let cut_off = Instant::now() >= self.deadline;
        self.settle(cut_off.then_some(Verdict::Failed));
    }
}

impl<S, T> Service<UpstreamRequest> for BreakerService<S>
where
    S: Service<UpstreamRequest, Response = Option<T>, Error = UpstreamError> + Clone + Send + 'static,
    S::Future: Send,
    T: Send + 'static,
{
    type Response = Option<T>;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Result<Option<T>, UpstreamError>> + Send>>;

    /// Always ready: whether to call is decided per key in `call`, and the inner service's
    /// readiness (the bulkhead) is only claimed for calls the breaker admits.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), UpstreamError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: UpstreamRequest) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        let (admission, changes, keys_open) = {
            let mut breakers = shared.lock();
            let (admission, changes) = breakers.admit(&request.key, Instant::now());
            let keys_open = changes.key.map(|_| breakers.keys_open());
            (admission, changes, keys_open)
        };
        shared.report(changes, &request.key, keys_open);
        let ticket = match admission {
            Ok(ticket) => ticket,
            Err(refused) => {
                let error = UpstreamError::CircuitOpen { retry_after: refused.retry_after };
                return Box::pin(std::future::ready(Err(error)));
            }
        };
        let in_flight = InFlight {
            shared,
            key: request.key.clone(),
            ticket: Some(ticket),
            started: Instant::now(),
            deadline: request.deadline,
        };
        let inner = self.inner.clone();
        Box::pin(async move {
            let result = inner.oneshot(request).await;
            let verdict = match &result {
                Ok(_) => Some(Verdict::Healthy),
                Err(error) => verdict(error),
            };
            in_flight.finish(verdict);
            result
        })
    }
}
