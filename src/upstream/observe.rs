//! Sits just inside the retry layer: sees every attempt (and every local refusal) once, and
//! records it as `upstream_requests_total{outcome}` and one duration observation; an attempt
//! cut off by the order's deadline is a `timeout`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::{Layer, Service};

use super::{Upstream, UpstreamError, UpstreamRequest};
use crate::telemetry::metrics;

#[derive(Debug, Clone, Copy)]
pub struct ObserveLayer {
    upstream: Upstream,
}

impl ObserveLayer {
    /// Registers every outcome's series at zero (see `metrics::upstream_attempts_registered`).
    pub fn new(upstream: Upstream) -> Self {
        metrics::upstream_attempts_registered(upstream.as_str(), &UpstreamError::OUTCOMES);
        Self { upstream }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner, upstream: self.upstream }
    }
}

#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    upstream: Upstream,
}

impl<S, T> Service<UpstreamRequest> for Observe<S>
where
    S: Service<UpstreamRequest, Response = Option<T>, Error = UpstreamError>,
    S::Future: Send + 'static,
{
    type Response = Option<T>;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Result<Option<T>, UpstreamError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), UpstreamError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: UpstreamRequest) -> Self::Future {
        let mut attempt = Attempt {
            upstream: self.upstream.as_str(),
            number: request.attempt,
            hedge: request.hedge,
            started: Instant::now(),
            deadline: request.deadline,
            recorded: false,
        };
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = call.await;
            if let Err(error @ (UpstreamError::CircuitOpen { .. } | UpstreamError::BulkheadFull)) = &result {
                super::span::refused(attempt.upstream, error);
            }
            attempt.record(match &result {
                Ok(Some(_)) => "success",
                Ok(None) => "not_found",
                Err(error) => error.outcome(),
            });
            result
        })
    }
}

/// One attempt's sample. Dropped unfinished once the order's deadline has run out, it is a
/// `timeout` (the breaker layer counts it so too); dropped earlier (cancelled because the other
/// lookup failed or the client left), it is no sample at all.
struct Attempt {
    upstream: &'static str,
    number: u32,
    hedge: bool,
    started: Instant,
    deadline: Instant,
    recorded: bool,
}

impl Attempt {
    fn record(&mut self, outcome: &'static str) {
        self.recorded = true;
        let elapsed = self.started.elapsed();
        metrics::upstream_attempt(self.upstream, outcome, elapsed);
        tracing::debug!(
            upstream = self.upstream,
            attempt = self.number,
            hedge = self.hedge,
            outcome,
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            "upstream attempt"
        );
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.recorded && Instant::now() >= self.deadline {
            self.record("timeout");
        }
    }
}
