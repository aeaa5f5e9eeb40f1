//! Both ends of time in the stack. Outermost, [`DeadlineLayer`]: nothing below it — attempts,
//! backoff sleeps, hedges — outlives the order's deadline, which travels in each request.
//! Innermost, [`AttemptTimeoutLayer`]: each attempt ends at the sooner of its own timeout and
//! the order's deadline, and that instant travels with it, so the transport can tell the
//! upstream how long it will still wait (`x-envoy-expected-rq-timeout-ms`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Layer, Service};

use super::{UpstreamError, UpstreamRequest};

#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

impl<S> Service<UpstreamRequest> for Deadline<S>
where
    S: Service<UpstreamRequest, Error = UpstreamError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, UpstreamError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), UpstreamError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: UpstreamRequest) -> Self::Future {
        let deadline = request.deadline;
        let call = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout_at(deadline, call).await {
                // The last attempt was cut off by the order's deadline, not its own timeout.
                Ok(Err(UpstreamError::Timeout)) if Instant::now() >= deadline => Err(UpstreamError::DeadlineExceeded),
                Ok(answer) => answer,
                Err(_) => Err(UpstreamError::DeadlineExceeded),
            }
        })
    }
}

/// Ends each attempt at `min(now + timeout, the order's deadline)` with `Timeout`.
#[derive(Debug, Clone, Copy)]
pub struct AttemptTimeoutLayer {
    timeout: Duration,
}

impl AttemptTimeoutLayer {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for AttemptTimeoutLayer {
    type Service = AttemptTimeout<S>;

    fn layer(&self, inner: S) -> AttemptTimeout<S> {
        AttemptTimeout { inner, timeout: self.timeout }
    }
}

#[derive(Debug, Clone)]
pub struct AttemptTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> Service<UpstreamRequest> for AttemptTimeout<S>
where
    S: Service<UpstreamRequest, Error = UpstreamError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, UpstreamError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), UpstreamError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: UpstreamRequest) -> Self::Future {
        let ends = (Instant::now() + self.timeout).min(request.deadline);
        request.attempt_deadline = ends;
        let call = self.inner.call(request);
        Box::pin(async move { tokio::time::timeout_at(ends, call).await.unwrap_or(Err(UpstreamError::Timeout)) })
    }
}

/// What `x-envoy-expected-rq-timeout-ms` says: the whole milliseconds the service will still wait
/// for this attempt (rounded down, so the upstream never works for an answer nobody reads).
pub fn expected_timeout_ms(request: &UpstreamRequest, now: Instant) -> u128 {
    request.attempt_deadline.saturating_duration_since(now).as_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// An upstream that never answers.
    fn hanging() -> impl Service<UpstreamRequest, Response = (), Error = UpstreamError, Future: Send> + Clone {
        tower::service_fn(|_: UpstreamRequest| std::future::pending::<Result<(), UpstreamError>>())
    }

    fn request(deadline_in: Duration) -> UpstreamRequest {
        let deadline = Instant::now() + deadline_in;
        UpstreamRequest { key: "k".into(), deadline, attempt_deadline: deadline, attempt: 1, hedge: false }
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_ends_at_its_timeout_or_the_deadline_whichever_is_sooner() {
        use tower::ServiceExt;
        let mut attempt = AttemptTimeoutLayer::new(800 * MS).layer(hanging());
        let started = Instant::now();
        assert_eq!(attempt.ready().await.expect("ready").call(request(2000 * MS)).await, Err(UpstreamError::Timeout));
        assert_eq!(started.elapsed(), 800 * MS);
        let started = Instant::now();
        let _ = attempt.ready().await.expect("ready").call(request(300 * MS)).await;
        assert_eq!(started.elapsed(), 300 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn the_header_says_the_time_left_for_the_attempt() {
        let mut r = request(2000 * MS);
        r.attempt_deadline = Instant::now() + 800 * MS;
        assert_eq!(expected_timeout_ms(&r, Instant::now()), 800);
        tokio::time::advance(Duration::from_micros(300_500)).await;
        assert_eq!(expected_timeout_ms(&r, Instant::now()), 499, "rounded down");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(expected_timeout_ms(&r, Instant::now()), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_cut_off_by_the_deadline_is_deadline_exceeded_above_the_stack() {
        use tower::ServiceExt;
        let stack = tower::ServiceBuilder::new()
            .layer(DeadlineLayer)
            .layer(AttemptTimeoutLayer::new(800 * MS))
            .service(hanging());
        assert_eq!(stack.clone().oneshot(request(300 * MS)).await, Err(UpstreamError::DeadlineExceeded));
        assert_eq!(stack.oneshot(request(2000 * MS)).await, Err(UpstreamError::Timeout), "its own timeout");
    }
}
