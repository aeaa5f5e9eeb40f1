//! One typed configuration, grouped by concern, read from the environment once at start-up.
//!
//! Every variable is optional and has the default documented in the README table; a variable
//! that is set but invalid stops start-up with one line naming it. This module imports nothing
//! of the service but [`crate::backoff`]: the adapters read their part of it.
//!
//! - [`env`] — typed reading, redaction, the record behind `--print-config`.
//! - [`http`] — `HTTP_*`, `METRICS_ADDR`, `SHUTDOWN_*`.
//! - [`store`] — `DATABASE_*`, `AMQP_URL`, `OUTBOX_*`.
//! - [`upstream`] — `USER_*`, `PRODUCT_*`: one entry per upstream.
//! - [`telemetry`] — `OTEL_*`: trace export (the specification's variables).
//! - [`source`] — `ORDER_SERVICE_ENV_FILE` over the environment, read again on reload.

mod env;
mod http;
mod source;
mod store;
mod telemetry;
mod upstream;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use env::ConfigError;
use env::Env;
pub use http::{HttpConfig, LimitAlgorithm, LimitConfig, ShutdownConfig};
pub use source::{ENV_FILE, Source, is_reloadable};
pub use store::{Backend, BrokerConfig, DatabaseConfig, RelaySettings};
pub use telemetry::{Sampler, TracingConfig};
pub use upstream::{BreakerConfig, HedgeConfig, KeyedConfig, StackConfig, UpstreamConfig, UpstreamsConfig};

/// Everything the service needs to start; see the README for each variable.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub broker: BrokerConfig,
    pub orders: OrderConfig,
    pub upstreams: UpstreamsConfig,
    pub shutdown: ShutdownConfig,
    pub tracing: TracingConfig,
    /// Where these settings were read from, to read them again on reload.
    pub source: Source,
    /// Every variable with the value in force (defaults included, passwords hidden): what
    /// `--print-config` prints and what a reload compares.
    pub values: BTreeMap<String, Option<String>>,
}

/// How an order is placed: its budget and its idempotency keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderConfig {
    /// `ORDER_DEADLINE_MS`: the whole order's budget for upstream work.
    pub deadline: Duration,
    /// `IDEMPOTENCY_*`.
    pub idempotency: IdempotencyConfig,
}

/// How long idempotency keys are held and kept (the rules are in `domain::idempotency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotencyConfig {
    /// `IDEMPOTENCY_LEASE_MS`: how long an unfinished request holds its key before another may
    /// take it over; at least the longest an order can take, so only a crashed or cancelled
    /// request's key is ever taken over.
    pub lease: Duration,
    /// `IDEMPOTENCY_RETENTION_HOURS`: how long a completed key replays its response.
    pub retention: Duration,
    /// The longest an order can take (deadline + database acquire timeout): a lease younger
    /// than this may belong to a live request, an older one only to a crashed one.
    pub longest_order: Duration,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (tests need not touch the process environment), with
    /// the `ORDER_SERVICE_ENV_FILE` it names, if any, over it.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let file = lookup(ENV_FILE).filter(|v| !v.trim().is_empty()).map(|v| PathBuf::from(v.trim()));
        let from_file = match &file {
            Some(path) => source::read_env_file(path)?,
            None => BTreeMap::new(),
        };
        let merged = |name: &str| from_file.get(name).cloned().or_else(|| lookup(name));
        let env = Env::new(&merged);
        let mut config = Self::read(&env)?;
        env.record(ENV_FILE, file.as_ref().map(|path| path.display().to_string()));
        let values = env.seen.into_inner();
        // Also the variables read but not shown (e.g. OTEL_EXPORTER_OTLP_TRACES_PROTOCOL):
        // without them a reload would read a different start-up environment.
        let mut names = env.asked.into_inner();
        names.extend(values.keys().cloned());
        let base = names.into_iter().filter_map(|name| lookup(&name).map(|value| (name, value))).collect();
        config.source = Source { base, file };
        config.values = values;
        Ok(config)
    }

    /// The settings as they read now: the start-up environment with the environment file
    /// read again (what a reload puts in force, if valid).
    pub fn reread(&self) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| self.source.base.get(name).cloned())
    }

    /// Every variable the service reads, with the value it would run with (the default when
    /// unset; `None` for an unset optional one; passwords redacted): `order-service
    /// --print-config`. The one source of the defaults for scripts, experiments and benchmarks.
    pub fn effective(lookup: impl Fn(&str) -> Option<String>) -> Result<BTreeMap<String, Option<String>>, ConfigError> {
        Ok(Self::from_lookup(lookup)?.values)
    }

    fn read(env: &Env<'_>) -> Result<Self, ConfigError> {
        let database = DatabaseConfig::read(env)?;
        let deadline = env.millis("ORDER_DEADLINE_MS", 2000)?;
        let longest_order = deadline + database.acquire_timeout;
        let idempotency = IdempotencyConfig {
            lease: env.millis("IDEMPOTENCY_LEASE_MS", 30_000)?,
            retention: Duration::from_secs(3600 * env.number("IDEMPOTENCY_RETENTION_HOURS", 24, 1..=24 * 365)?),
            longest_order,
        };
        // A lease shorter than an order could let a retry take over a key whose order is still
        // being placed; that one would then fail to complete (409) rather than duplicate, but
        // the client would see a needless failure.
        if idempotency.lease < longest_order {
            let reason = "must be at least ORDER_DEADLINE_MS + DATABASE_ACQUIRE_TIMEOUT_MS".to_owned();
            return Err(env::invalid("IDEMPOTENCY_LEASE_MS", reason));
        }
        Ok(Self {
            http: HttpConfig::read(env)?,
            database,
            broker: BrokerConfig::read(env)?,
            orders: OrderConfig { deadline, idempotency },
            upstreams: UpstreamsConfig::read(env)?,
            shutdown: ShutdownConfig::read(env)?,
            tracing: TracingConfig::read(env)?,
            source: Source::default(),
            values: BTreeMap::new(),
        })
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
