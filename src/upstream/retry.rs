//! The retry policy for tower's `Retry`: exponential backoff with full jitter, a bounded number
//! of attempts, never past the order's deadline, and a shared retry budget so an outage cannot
//! multiply the load on an upstream.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower::retry::Policy;
use tower::retry::budget::{Budget, TpsBudget};

use super::{Upstream, UpstreamError, UpstreamRequest};
use crate::telemetry::metrics;

/// Exponential backoff with full jitter: attempt n waits a uniform time in
/// `[0, min(max, base * 2^(n-1)))`, which spreads retries of many callers apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// `unit` is a uniform sample of `[0, 1)`; passed in so the bounds are testable.
    pub fn delay(&self, failed_attempt: u32, unit: f64) -> Duration {
        let exponent = failed_attempt.saturating_sub(1).min(16);
        let ceiling = self.base.saturating_mul(1 << exponent).min(self.max);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[derive(Clone)]
pub struct RetryPolicy {
    upstream: Upstream,
    max_attempts: u32,
    backoff: Backoff,
    budget: Arc<TpsBudget>,
}

impl RetryPolicy {
    /// `budget_percent` of recent requests (over a 10 s window) may be retried, plus
    /// `min_per_sec` retries a second so a quiet service can still retry at all.
    pub fn new(upstream: Upstream, max_attempts: u32, backoff: Backoff, budget_percent: u32, min_per_sec: u32) -> Self {
        let budget = TpsBudget::new(Duration::from_secs(10), min_per_sec, budget_percent as f32 / 100.0);
        metrics::upstream_retries_registered(upstream.as_str());
        Self { upstream, max_attempts: max_attempts.max(1), backoff, budget: Arc::new(budget) }
    }
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
            budget_percent,
            min_per_sec,
        )
    }

    fn request(attempt: u32) -> UpstreamRequest {
        UpstreamRequest { key: "k".into(), deadline: Instant::now() + Duration::from_secs(2), attempt }
    }

    fn retries(
        p: &mut RetryPolicy,
        req: &mut UpstreamRequest,
        mut result: Result<Option<()>, UpstreamError>,
    ) -> (bool, Result<Option<()>, UpstreamError>) {
        let again = p.retry(req, &mut result).is_some();
        (again, result)
    }

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        let b = Backoff { base: 50 * MS, max: 1000 * MS };
        assert_eq!(b.delay(1, 1.0), 50 * MS);
        assert_eq!(b.delay(2, 1.0), 100 * MS);
        assert_eq!(b.delay(3, 1.0), 200 * MS);
        assert_eq!(b.delay(10, 1.0), 1000 * MS);
        assert_eq!(b.delay(40, 1.0), 1000 * MS, "no overflow");
        assert_eq!(b.delay(3, 0.0), Duration::ZERO, "full jitter starts at zero");
        assert_eq!(b.delay(3, 0.5), 100 * MS);
    }

    proptest::proptest! {
        #[test]
        fn jittered_delays_stay_within_their_bounds(attempt in 1u32..20, unit in 0.0f64..1.0) {
            let b = Backoff { base: 50 * MS, max: 1000 * MS };
            let ceiling = (50 * MS).saturating_mul(1 << (attempt - 1).min(16)).min(1000 * MS);
            proptest::prop_assert!(b.delay(attempt, unit) <= ceiling);
        }
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
        let mut req = UpstreamRequest { key: "k".into(), deadline: Instant::now(), attempt: 1 };
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
