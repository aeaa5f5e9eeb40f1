//! The one place where an upstream's service stack is composed. Read it top to bottom, the
//! way a lookup travels:
//!
//! deadline ▸ retry ▸ hedge ▸ observe ▸ circuit breaker ▸ bulkhead ▸ attempt timeout ▸ transport (hyper)
//!
//! - deadline: the order's remaining budget bounds everything below, backoff included;
//! - retry: only connect errors, timeouts, 5xx and unusable bodies, within a shared budget;
//! - hedge: a slow attempt (past the upstream's recent p95) gets a second one, paid from the
//!   same budget as retries; the first good answer wins, the other is cancelled;
//! - observe: one metric sample per attempt (hedges too), local refusals included;
//! - breaker: every attempt is one health sample, per key and for the whole upstream (an
//!   attempt the deadline cut off is a timeout for both, one cancelled earlier is no sample);
//! - bulkhead: at most `max_concurrent` calls in flight, the rest refused at once, so a slow
//!   upstream cannot hold every connection and task;
//! - attempt timeout: no single attempt waits longer than `attempt_timeout`, nor past the
//!   deadline; the transport tells the upstream how long that is (`x-envoy-expected-rq-timeout-ms`).
//!
//! Around the stack, the client remembers 404s for `not_found_ttl` (see `not_found`) and the
//! last good answers for `stale_if_error` (see `stale`). A reload builds the stack again from
//! the new settings over the same [`Parts`]: breakers, latency samples, and the retry budget and
//! bulkhead unless their own settings changed.

use std::sync::{Arc, Mutex};

use reqwest::Url;
use tokio::sync::Semaphore;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::retry::budget::TpsBudget;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceBuilder};

use super::breaker::BreakerHandle;
use super::deadline::{AttemptTimeoutLayer, DeadlineLayer};
use super::hedge::HedgeLayer;
use super::latency::LatencyWindow;
use super::observe::ObserveLayer;
use super::retry::{self, RetryPolicy};
use super::transport::Transport;
use super::{Decode, StackService, Upstream, UpstreamClient, UpstreamError, UpstreamRequest};
pub use crate::config::StackConfig;

/// Builds one upstream's client over the shared HTTP client; the handle reads its breakers.
pub fn build<T: Decode + Clone + Sync>(
    http: super::transport::HttpClient,
    upstream: Upstream,
    base: Url,
    config: &StackConfig,
) -> (UpstreamClient<T>, BreakerHandle) {
    compose(Transport::<T>::new(http, base, upstream), upstream, config)
}

/// Wraps any innermost service in the stack (tests put a scripted service there).
pub fn compose<S, T>(inner: S, upstream: Upstream, config: &StackConfig) -> (UpstreamClient<T>, BreakerHandle)
where
    S: Service<UpstreamRequest, Response = Option<T>, Error = UpstreamError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    T: Clone + Send + Sync + 'static,
{
    let parts = Parts {
        upstream,
        breakers: BreakerHandle::new(upstream, config.breaker.clone()),
        latency: Arc::default(),
        budget: Kept::default(),
        bulkhead: Kept::default(),
    };
    let breakers = parts.breakers.clone();
    let build = Box::new(move |config: &StackConfig| stack(inner.clone(), &parts, config));
    (UpstreamClient::new(build, breakers.clone(), config), breakers)
}

/// The layers, top to bottom, over state that outlives a reload.
fn stack<S, T>(inner: S, parts: &Parts, config: &StackConfig) -> StackService<T>
where
    S: Service<UpstreamRequest, Response = Option<T>, Error = UpstreamError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    T: Send + 'static,
{
    let upstream = parts.upstream;
    let budget = parts.budget(config);
    let retry = RetryPolicy::new(upstream, config.max_attempts, config.backoff, Arc::clone(&budget));
    let hedge = HedgeLayer::new(upstream, config.hedge, config.attempt_timeout, Arc::clone(&parts.latency), budget);
    let service = ServiceBuilder::new()
        .layer(DeadlineLayer)
        .retry(retry)
        .layer(hedge)
        .layer(ObserveLayer::new(upstream))
        .layer(parts.breakers.layer())
        .map_err(from_tower)
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::with_semaphore(parts.bulkhead(config.max_concurrent)))
        .layer(AttemptTimeoutLayer::new(config.attempt_timeout))
        .service(inner);
    BoxCloneSyncService::new(service)
}

/// What one upstream's stack keeps across reloads.
struct Parts {
    upstream: Upstream,
    breakers: BreakerHandle,
    /// Recent good answers' latencies: when a hedge is due.
    latency: Arc<LatencyWindow>,
    /// Shared by retries and hedges; kept while its own settings stay the same.
    budget: Kept<(u32, u32), TpsBudget>,
    /// The bulkhead's permits; kept while `max_concurrent` stays the same. A new size starts a
    /// new count: calls already in flight finish on the old one.
    bulkhead: Kept<usize, Semaphore>,
}

impl Parts {
    fn budget(&self, config: &StackConfig) -> Arc<TpsBudget> {
        let (percent, min_per_sec) = (config.retry_budget_percent, config.retry_budget_min_per_sec);
        self.budget.for_settings((percent, min_per_sec), || retry::budget(percent, min_per_sec))
    }

    fn bulkhead(&self, max_concurrent: usize) -> Arc<Semaphore> {
        self.bulkhead.for_settings(max_concurrent, || Arc::new(Semaphore::new(max_concurrent)))
    }
}

/// A value made from settings, kept (with its counts) until the settings change.
struct Kept<K, V>(Mutex<Option<(K, Arc<V>)>>);

impl<K, V> Default for Kept<K, V> {
    fn default() -> Self {
        Self(Mutex::new(None))
    }
}

impl<K: PartialEq, V> Kept<K, V> {
    fn for_settings(&self, settings: K, make: impl FnOnce() -> Arc<V>) -> Arc<V> {
        let mut kept = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match &*kept {
            Some((same, value)) if *same == settings => Arc::clone(value),
            _ => Arc::clone(&kept.insert((settings, make())).1),
        }
    }
}

/// tower's layers speak `BoxError`; turn their errors back into ours.
fn from_tower(error: BoxError) -> UpstreamError {
    match error.downcast::<UpstreamError>() {
        Ok(ours) => *ours,
        Err(error) if error.is::<tower::load_shed::error::Overloaded>() => UpstreamError::BulkheadFull,
        Err(error) if error.is::<tower::timeout::error::Elapsed>() => UpstreamError::Timeout,
        Err(error) => UpstreamError::Connect(error.to_string()),
    }
}

#[cfg(test)]
#[path = "stack_tests.rs"]
pub(crate) mod tests;
