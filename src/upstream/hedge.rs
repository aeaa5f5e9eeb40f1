//! Hedged lookups, just inside the retry layer: when an attempt has not answered after the
//! upstream's recent p95 (or the configured percentile; never less than a floor), a second
//! attempt for the same key is sent and the first good answer wins; the other is dropped,
//! which cancels it (its breaker ticket is released without a verdict, its HTTP request is
//! abandoned). Only lookups (idempotent GETs) pass through this stack.
//!
//! A hedge is an attempt like any other below this layer: observed, admitted by the breaker,
//! bounded by the bulkhead and its own attempt timeout. It is sent only if the order's deadline
//! leaves it at least the hedge delay, and only if the **retry budget** pays for it (the same
//! budget as retries), so a failing upstream is never hit twice as hard: once the budget is
//! spent, neither retries nor hedges are sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Layer, Service, ServiceExt};

use super::latency::LatencyWindow;
use super::{Upstream, UpstreamError, UpstreamRequest};
pub use crate::config::HedgeConfig;
use crate::telemetry::metrics;

type Answer<T> = Result<Option<T>, UpstreamError>;

#[derive(Clone)]
pub struct HedgeLayer {
    upstream: Upstream,
    config: HedgeConfig,
    /// A hedge after the first attempt has timed out would only be a retry.
    attempt_timeout: Duration,
    latency: Arc<LatencyWindow>,
    budget: Arc<TpsBudget>,
}

impl HedgeLayer {
    pub fn new(
        upstream: Upstream,
        config: HedgeConfig,
        attempt_timeout: Duration,
        latency: Arc<LatencyWindow>,
        budget: Arc<TpsBudget>,
    ) -> Self {
        Self { upstream, config, attempt_timeout, latency, budget }
    }
}

impl<S> Layer<S> for HedgeLayer {
    type Service = Hedge<S>;

    fn layer(&self, inner: S) -> Hedge<S> {
        Hedge { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub struct Hedge<S> {
    inner: S,
    layer: HedgeLayer,
}

impl HedgeLayer {
    /// When to hedge now: the percentile of recent good answers, at least the floor; `None`
    /// when hedging is off, there are too few recent answers to tell slow from normal, or the
    /// delay would reach the attempt timeout.
    fn delay(&self, now: Instant) -> Option<Duration> {
        if self.config.percentile == 0 {
            return None;
        }
        let delay = self.latency.percentile(self.config.percentile, now)?.max(self.config.min_delay);
        (delay < self.attempt_timeout).then_some(delay)
    }
}

impl<S, T> Service<UpstreamRequest> for Hedge<S>
where
    S: Service<UpstreamRequest, Response = Option<T>, Error = UpstreamError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    T: Send + 'static,
{
    type Response = Option<T>;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Answer<T>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), UpstreamError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: UpstreamRequest) -> Self::Future {
        let started = Instant::now();
        let layer = self.layer.clone();
        let primary = timed(self.inner.call(request.clone()), Arc::clone(&layer.latency));
        let Some(delay) = layer.delay(started) else {
            return Box::pin(primary);
        };
        let inner = self.inner.clone();
        Box::pin(async move {
            let mut primary = std::pin::pin!(primary);
            tokio::select! {
                biased;
                answer = &mut primary => return answer,
                () = tokio::time::sleep_until(started + delay) => {}
            }
            let left = request.deadline.saturating_duration_since(Instant::now());
            if left < delay || !layer.budget.withdraw() {
                return primary.await;
            }
            let upstream = layer.upstream.as_str();
            metrics::upstream_hedge(upstream);
            tracing::debug!(upstream, attempt = request.attempt, delay_ms = delay.as_millis() as u64, "hedging");
            let hedge = UpstreamRequest { hedge: true, ..request };
            first_good(primary, timed(inner.oneshot(hedge), layer.latency)).await
        })
    }
}

/// Records how long a good answer took (the estimator's samples).
async fn timed<T>(call: impl Future<Output = Answer<T>>, latency: Arc<LatencyWindow>) -> Answer<T> {
    let started = Instant::now();
    let answer = call.await;
    if answer.is_ok() {
        let now = Instant::now();
        latency.record(now - started, now);
    }
    answer
}

/// The first good answer of the two (a 404 is one); the other is dropped, cancelling it. If both
/// fail, the primary's error: the hedge was only ever a second chance.
async fn first_good<T>(primary: impl Future<Output = Answer<T>>, hedge: impl Future<Output = Answer<T>>) -> Answer<T> {
    let (mut primary, mut hedge) = (std::pin::pin!(primary), std::pin::pin!(hedge));
    tokio::select! {
        answer = &mut primary => match answer {
            Ok(_) => answer,
            Err(_) => hedge.await.or(answer),
        },
        answer = &mut hedge => match answer {
            Ok(_) => answer,
            Err(_) => primary.await,
        },
    }
}

#[cfg(test)]
#[path = "hedge_tests.rs"]
mod tests;
