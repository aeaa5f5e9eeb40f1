//! The one place where an upstream's service stack is composed. Read it top to bottom, the
//! way a lookup travels:
//!
//! deadline ▸ retry ▸ observe ▸ circuit breaker ▸ bulkhead ▸ attempt timeout ▸ reqwest
//!
//! - deadline: the order's remaining budget bounds everything below, backoff included;
//! - retry: only connect errors, timeouts, 5xx and unusable bodies, within a shared budget;
//! - observe: one metric sample per attempt, local refusals included;
//! - breaker: every attempt is one health sample, per key and for the whole upstream (an
//!   attempt the deadline cut off is a timeout for both, one cancelled earlier is no sample);
//! - bulkhead: at most `max_concurrent` calls in flight, the rest refused at once, so a slow
//!   upstream cannot hold every connection and task;
//! - attempt timeout: no single attempt waits longer than `attempt_timeout`.
//!
//! Around the stack, the client remembers 404s for `not_found_ttl` (see `not_found`).

use reqwest::Url;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceBuilder};

use super::breaker::BreakerHandle;
use super::deadline::DeadlineLayer;
use super::not_found::NotFoundCache;
use super::observe::ObserveLayer;
use super::retry::RetryPolicy;
use super::transport::Transport;
use super::{Decode, Upstream, UpstreamClient, UpstreamError, UpstreamRequest};
pub use crate::config::StackConfig;

/// Builds one upstream's client over the shared HTTP client; the handle reads its breakers.
pub fn build<T: Decode>(
    http: reqwest::Client,
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
    T: Send + 'static,
{
    let breakers = BreakerHandle::new(upstream, config.breaker.clone());
    let retry = RetryPolicy::new(
        upstream,
        config.max_attempts,
        config.backoff,
        config.retry_budget_percent,
        config.retry_budget_min_per_sec,
    );
    let service = ServiceBuilder::new()
        .layer(DeadlineLayer)
        .retry(retry)
        .layer(ObserveLayer::new(upstream))
        .layer(breakers.layer())
        .map_err(from_tower)
        .load_shed()
        .concurrency_limit(config.max_concurrent)
        .timeout(config.attempt_timeout)
        .service(inner);
    let not_found = NotFoundCache::new(config.not_found_ttl, config.not_found_max_keys);
    let client = UpstreamClient::new(BoxCloneSyncService::new(service), breakers.clone());
    (client.remembering_not_found(not_found), breakers)
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
mod tests;
