//! The retry policy for tower's `Retry`: exponential backoff with full jitter, a bounded number
//! of attempts, never past the order's deadline, and a shared retry budget so an outage cannot
//! multiply the load on an upstream.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower::retry::Policy;
use tower::retry::budget::{Budget, TpsBudget};

use super::{Upstream, UpstreamError, UpstreamRequest};
use crate::backoff::Backoff;
use crate::telemetry::metrics;

#[derive(Clone)]
pub struct RetryPolicy {
    upstream: Upstream,
    max_attempts: u32,
    backoff: Backoff,
    budget: Arc<TpsBudget>,
}

impl RetryPolicy {
    /// Retries spend `budget` (see [`budget`]), shared with the hedge layer.
    pub fn new(upstream: Upstream, max_attempts: u32, backoff: Backoff, budget: Arc<TpsBudget>) -> Self {
        metrics::upstream_retries_registered(upstream.as_str());
        Self { upstream, max_attempts: max_attempts.max(1), backoff, budget }
    }
}

/// `budget_percent` of recent lookups (over a 10 s window) may be retried or hedged, plus
/// `min_per_sec` a second so a quiet service can still retry at all. Every lookup deposits once.
pub fn budget(budget_percent: u32, min_per_sec: u32) -> Arc<TpsBudget> {
    Arc::new(TpsBudget::new(Duration::from_secs(10), min_per_sec, budget_percent as f32 / 100.0))
}

impl<T> Policy<UpstreamRequest, Option<T>, UpstreamError> for RetryPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        request: &mut UpstreamRequest,
        result: &mut Result<Option<T>, UpstreamError>,
    ) -> Option<Self::Future> {
        if request.attempt == 1 {
            // Each order's lookup earns budget once, whatever its outcome.
            self.budget.deposit();
        }
        let Err(error) = result else { return None };
        if !error.is_retryable() || request.attempt >= self.max_attempts {
            return None;
        }
        let delay = self.backoff.delay(request.attempt, rand::random::<f64>());
        if Instant::now() + delay >= request.deadline {
            return None;
        }
        if !self.budget.withdraw() {
            *result = Err(UpstreamError::RetryBudgetExhausted(Box::new(error.clone())));
            return None;
        }
        request.attempt += 1;
        metrics::upstream_retry(self.upstream.as_str());
        tracing::debug!(upstream = self.upstream.as_str(), attempt = request.attempt, delay_ms = delay.as_millis() as u64, error = %error, "retrying");
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, request: &UpstreamRequest) -> Option<UpstreamRequest> {
        Some(request.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy(max_attempts: u32, budget_percent: u32, min_per_sec: u32) -> RetryPolicy {
        RetryPolicy::new(
            Upstream::User,
            max_attempts,
            Backoff { base: 50 * MS, max: 1000 * MS },
            budget(budget_percent, min_per_sec),
        )
    }

    fn request(attempt: u32) -> UpstreamRequest {
        let deadline = Instant::now() + Duration::from_secs(2);
        UpstreamRequest { key: "k".into(), deadline, attempt_deadline: deadline, attempt, hedge: false }
    }

    fn retries(
        p: &mut RetryPolicy,
        req: &mut UpstreamRequest,
        mut result: Result<Option<()>, UpstreamError>,
    ) -> (bool, Result<Option<()>, UpstreamError>) {
        let again = p.retry(req, &mut result).is_some();
        (again, result)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_only_what_may_help() {
        let cases = [
            (UpstreamError::ServerError(500), true),
            (UpstreamError::Timeout, true),
            (UpstreamError::Connect("refused".into()), true),
            (UpstreamError::InvalidResponse("json".into()), true),
            (UpstreamError::UnexpectedStatus(400), false),
            (UpstreamError::CircuitOpen { retry_after: MS }, false),
            (UpstreamError::BulkheadFull, false),
            (UpstreamError::DeadlineExceeded, false),
        ];
        for (error, expected) in cases {
            let mut p = policy(3, 20, 100);
            let (again, _) = retries(&mut p, &mut request(1), Err(error.clone()));
            assert_eq!(again, expected, "{error:?}");
        }
        let mut p = policy(3, 20, 100);
        assert!(!retries(&mut p, &mut request(1), Ok(None)).0, "a 404 is an answer");
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_max_attempts_and_numbers_them() {
        let mut p = policy(3, 20, 100);
        let mut req = request(1);
        assert!(retries(&mut p, &mut req, Err(UpstreamError::Timeout)).0);
        assert_eq!(req.attempt, 2);
        assert!(retries(&mut p, &mut req, Err(UpstreamError::Timeout)).0);
        assert_eq!(req.attempt, 3);
        assert!(!retries(&mut p, &mut req, Err(UpstreamError::Timeout)).0);
    }

    #[tokio::test(start_paused = true)]
    async fn never_waits_past_the_deadline() {
        let mut p = policy(3, 20, 100);
        let now = Instant::now();
        let mut req =
            UpstreamRequest { key: "k".into(), deadline: now, attempt_deadline: now, attempt: 1, hedge: false };
        assert!(!retries(&mut p, &mut req, Err(UpstreamError::Timeout)).0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_budget_says_so_and_keeps_the_last_error() {
        // No per-second allowance: retries are paid only by deposits (20 % of requests).
        let mut p = policy(3, 20, 0);
        let mut granted = 0;
        let mut refused = 0;
        for _ in 0..100 {
            let (again, result) = retries(&mut p, &mut request(1), Err(UpstreamError::ServerError(503)));
            if again {
                granted += 1;
            } else {
                refused += 1;
                assert_eq!(result, Err(UpstreamError::RetryBudgetExhausted(Box::new(UpstreamError::ServerError(503)))));
            }
        }
        assert!((15..=25).contains(&granted), "about 20 % of 100 requests retried, got {granted}");
        assert_eq!(granted + refused, 100);
    }
}
