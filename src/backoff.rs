//! Exponential backoff with full jitter, shared by the upstream retries and the outbox relay.

use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

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
}
