//! `USER_*` and `PRODUCT_*`: each upstream's URL and resilience stack, read by one function
//! under the upstream's variable prefix.

use std::time::Duration;

use reqwest::Url;

use super::env::{ConfigError, Env};
use crate::backoff::Backoff;

/// Every upstream the service calls; adding one is one field here and one line in `read`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamsConfig {
    /// `USER_SERVICE_URL`, `USER_*`.
    pub user: UpstreamConfig,
    /// `PRODUCT_SERVICE_URL`, `PRODUCT_*`.
    pub product: UpstreamConfig,
}

impl UpstreamsConfig {
    pub(super) fn read(env: &Env<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            user: UpstreamConfig::read(env, "USER", "http://127.0.0.1:8082")?,
            product: UpstreamConfig::read(env, "PRODUCT", "http://127.0.0.1:8081")?,
        })
    }
}

/// One upstream: where it is and the stack around it.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// `{PREFIX}_SERVICE_URL`.
    pub url: Url,
    pub stack: StackConfig,
}

impl UpstreamConfig {
    fn read(env: &Env<'_>, prefix: &str, default_url: &str) -> Result<Self, ConfigError> {
        Ok(Self { url: env.url(&format!("{prefix}_SERVICE_URL"), default_url)?, stack: stack_config(env, prefix)? })
    }
}

/// Resilience settings of one upstream (README: `USER_*` / `PRODUCT_*` variables).
#[derive(Debug, Clone, PartialEq)]
pub struct StackConfig {
    pub attempt_timeout: Duration,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub retry_budget_percent: u32,
    pub retry_budget_min_per_sec: u32,
    pub max_concurrent: usize,
    pub breaker: KeyedConfig,
    /// How long a 404 is remembered (zero: not at all), and for how many keys at most.
    pub not_found_ttl: Duration,
    pub not_found_max_keys: usize,
    /// When a slow lookup gets a second attempt.
    pub hedge: HedgeConfig,
    /// `{PREFIX}_STALE_IF_ERROR_MS`: the oldest last good answer that may place an order when
    /// the upstream fails (zero: off), and for how many keys answers are kept.
    pub stale_if_error: Duration,
    pub stale_max_keys: usize,
}

/// Hedged lookups (`{PREFIX}_HEDGE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HedgeConfig {
    /// Hedge after this percentile (50–99) of the upstream's recent good answers; 0: off.
    pub percentile: u32,
    /// Never hedge sooner than this, however fast the upstream lately is.
    pub min_delay: Duration,
}

/// One circuit breaker's thresholds (the upstream-wide one, and each per-key one).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Calls older than this are forgotten (time-based, so a long healthy past never hides a
    /// new failure storm).
    pub window: Duration,
    /// No verdict before this many calls in the window.
    pub min_calls: u32,
    /// Open when failures / calls reaches this (0..=1).
    pub failure_rate: f64,
    /// A call slower than this counts as slow, whatever its result.
    pub slow_call: Duration,
    /// Open when slow calls / calls reaches this (0..=1).
    pub slow_rate: f64,
    /// How long an open breaker rejects before letting probes through.
    pub open_wait: Duration,
    /// Most probes in flight at once while half-open: recovery without a burst.
    pub half_open_probes: u32,
}

/// The upstream-wide breaker and the per-key breakers of one upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyedConfig {
    pub upstream: BreakerConfig,
    pub per_key: BreakerConfig,
    pub max_keys: usize,
    /// Distinct failing keys that make a failure count against the whole upstream.
    pub min_failing_keys: usize,
}

/// Default maximum staleness per upstream (docs/tail-latency.md argues for them): a user's name
/// changes rarely and only labels the order, 10 minutes; a price may change, and an order must
/// not be sold at a price much older than the one its customer saw in the basket, 5 minutes.
const STALE_IF_ERROR_DEFAULTS: [(u64, &str); 2] = [(600_000, "USER"), (300_000, "PRODUCT")];

/// `{prefix}_*` resilience settings; the defaults are argued for in the README.
fn stack_config(env: &Env<'_>, prefix: &str) -> Result<StackConfig, ConfigError> {
    let var = |name: &str| format!("{prefix}_{name}");
    let percent = |name: &str, default: u32| -> Result<f64, ConfigError> {
        Ok(f64::from(env.number(&var(name), default, 1..=100)?) / 100.0)
    };
    let window = env.millis(&var("BREAKER_WINDOW_MS"), 10_000)?;
    let slow_call = env.millis(&var("BREAKER_SLOW_CALL_MS"), 600)?;
    let slow_rate = percent("BREAKER_SLOW_RATE_PERCENT", 80)?;
    let open_wait = env.millis(&var("BREAKER_OPEN_MS"), 5_000)?;
    let half_open_probes = env.number(&var("BREAKER_HALF_OPEN_PROBES"), 2, 1..=100)?;
    let breaker = |min_calls: u32, failure_rate: f64| BreakerConfig {
        window,
        min_calls,
        failure_rate,
        slow_call,
        slow_rate,
        open_wait,
        half_open_probes,
    };
    let upstream =
        breaker(env.number(&var("BREAKER_MIN_CALLS"), 20, 1..=10_000)?, percent("BREAKER_FAILURE_RATE_PERCENT", 80)?);
    let per_key = breaker(
        env.number(&var("BREAKER_KEY_MIN_CALLS"), 5, 1..=10_000)?,
        percent("BREAKER_KEY_FAILURE_RATE_PERCENT", 90)?,
    );
    let hedge_percentile = env.number(&var("HEDGE_PERCENTILE"), 95, 0..=99)?;
    if (1..50).contains(&hedge_percentile) {
        let reason = format!("expected 0 (off) or a percentile from 50 to 99, got {hedge_percentile}");
        return Err(super::env::invalid(&var("HEDGE_PERCENTILE"), reason));
    }
    let (stale_default, _) = STALE_IF_ERROR_DEFAULTS.iter().find(|(_, p)| *p == prefix).copied().unwrap_or((0, ""));
    Ok(StackConfig {
        attempt_timeout: env.millis(&var("ATTEMPT_TIMEOUT_MS"), 800)?,
        max_attempts: env.number(&var("MAX_ATTEMPTS"), 3, 1..=10)?,
        backoff: Backoff {
            base: env.millis(&var("BACKOFF_BASE_MS"), 50)?,
            max: env.millis(&var("BACKOFF_MAX_MS"), 1_000)?,
        },
        retry_budget_percent: env.number(&var("RETRY_BUDGET_PERCENT"), 20, 0..=100)?,
        retry_budget_min_per_sec: env.number(&var("RETRY_BUDGET_MIN_PER_SEC"), 5, 0..=10_000)?,
        max_concurrent: env.number(&var("MAX_CONCURRENT"), 64, 1..=10_000)?,
        not_found_ttl: Duration::from_millis(env.number(&var("NOT_FOUND_TTL_MS"), 5_000, 0..=3_600_000)?),
        not_found_max_keys: env.number(&var("NOT_FOUND_MAX_KEYS"), 1024, 1..=1_000_000)?,
        hedge: HedgeConfig { percentile: hedge_percentile, min_delay: env.millis(&var("HEDGE_MIN_DELAY_MS"), 50)? },
        stale_if_error: Duration::from_millis(env.number(&var("STALE_IF_ERROR_MS"), stale_default, 0..=86_400_000)?),
        stale_max_keys: env.number(&var("STALE_IF_ERROR_MAX_KEYS"), 10_000, 1..=1_000_000)?,
        breaker: KeyedConfig {
            upstream,
            per_key,
            max_keys: env.number(&var("BREAKER_MAX_KEYS"), 1024, 1..=1_000_000)?,
            min_failing_keys: env.number(&var("BREAKER_MIN_FAILING_KEYS"), 3, 1..=1000)?,
        },
    })
}
