//! One typed configuration, read from the environment once at start-up.
//!
//! Every variable is optional and has the default documented in the README table; a variable
//! that is set but invalid stops start-up with one line naming it.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::Url;

use crate::domain::idempotency::KeySettings;
use crate::outbox::RelaySettings;
use crate::upstream::breaker::{BreakerConfig, KeyedConfig};
use crate::backoff::Backoff;
use crate::upstream::stack::StackConfig;

/// Everything the service needs to start; see the README for each variable.
#[derive(Debug, Clone)]
pub struct Config {
    /// `HTTP_ADDR`: where the API (and `/metrics`) listens.
    pub http_addr: SocketAddr,
    /// `DATABASE_URL`: `postgres://…` or `sqlite://…`; the scheme picks the store.
    pub database_url: String,
    /// `DATABASE_MAX_CONNECTIONS`: pool size; bounds what a flood can take from the database.
    pub database_max_connections: u32,
    /// `DATABASE_ACQUIRE_TIMEOUT_MS`: how long a request waits for a pooled connection before
    /// the order fails with 503, so a slow or absent database never hangs a client.
    pub database_acquire_timeout: Duration,
    /// `AMQP_URL`: the broker; `None` leaves the relay off and events wait in the outbox.
    pub amqp_url: Option<String>,
    /// `OUTBOX_*`: how the relay polls, batches, leases and backs off (used only with `AMQP_URL`).
    pub relay: RelaySettings,
    /// `OUTBOX_PENDING_INTERVAL_MS`: how often `outbox_pending` is counted while the relay is
    /// off (with it on, the relay counts after its passes). A count scans the backlog, which
    /// grows without bound with the relay off: not every second.
    pub outbox_pending_interval: Duration,
    /// `USER_SERVICE_URL`.
    pub user_service_url: Url,
    /// `PRODUCT_SERVICE_URL`.
    pub product_service_url: Url,
    /// `ORDER_DEADLINE_MS`: the whole order's budget for upstream work.
    pub order_deadline: Duration,
    /// `METRICS_ADDR`: when set, `/metrics` is served there (and not on the API port), so it can
    /// be bound to a private interface.
    pub metrics_addr: Option<SocketAddr>,
    /// `HTTP_BODY_LIMIT_BYTES`: larger request bodies get 413 before they are read.
    pub body_limit_bytes: usize,
    /// `HTTP_HEADER_READ_TIMEOUT_MS`: a connection that has not sent a whole request head within
    /// this is closed (slowloris); hyper also times an HTTP/1 connection's wait for its next head
    /// with it, so it bounds HTTP/1 keep-alive too.
    pub header_read_timeout: Duration,
    /// `HTTP_FIRST_BYTE_TIMEOUT_MS`: a connection that has sent nothing within this is closed.
    pub first_byte_timeout: Duration,
    /// `HTTP_IDLE_TIMEOUT_MS`: a connection with no request in flight for this long (HTTP/1
    /// keep-alive, HTTP/2 with no stream) is closed.
    pub idle_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS`: connections open at once (lingering ones included); more are
    /// accepted and closed at once. Below the process's file limit, so `accept` never fails.
    pub max_connections: usize,
    /// `HTTP_BODY_READ_TIMEOUT_MS`: a request body that has not fully arrived within this gets 408.
    pub body_read_timeout: Duration,
    /// `HTTP_MAX_IN_FLIGHT`: order writes (`POST /v1/…`) served at once before shedding with 503;
    /// a body is read before its request counts here. The default,
    /// 128, is twice an upstream's bulkhead (64) plus room for orders waiting on the database
    /// pool: more in flight only queue for the pool and cost memory (bench/run: peak RSS with
    /// 1,000 connections 74 MiB at 512, 59–62 MiB at 128).
    pub max_in_flight: usize,
    /// `HTTP_MAX_READS_IN_FLIGHT`: `GET /v1/…` requests served at once, a limit apart from
    /// writes so a flood of orders cannot starve reads (nor the reverse).
    pub max_reads_in_flight: usize,
    /// `SHUTDOWN_DELAY_MS`: after SIGTERM, keep serving (unready) this long before closing.
    pub shutdown_delay: Duration,
    /// `SHUTDOWN_DRAIN_TIMEOUT_MS`: the longest in-flight requests may take to finish.
    pub shutdown_drain_timeout: Duration,
    /// `IDEMPOTENCY_LEASE_MS`, `IDEMPOTENCY_RETENTION_HOURS`: see [`KeySettings`].
    pub idempotency: KeySettings,
    /// `USER_*`: the resilience stack around user-service.
    pub user_stack: StackConfig,
    /// `PRODUCT_*`: the resilience stack around product-service.
    pub product_stack: StackConfig,
}

/// A variable that is set but unusable; `Display` is the one line start-up prints.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {var}: {reason}")]
pub struct ConfigError {
    pub var: String,
    pub reason: String,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::read(&Env::new(&lookup))
    }

    /// Every variable the service reads, with the value it would run with (the default when
    /// unset; `None` for an unset optional one; passwords redacted): `order-service
    /// --print-config`. The one source of the defaults for scripts, experiments and benchmarks.
    pub fn effective(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<std::collections::BTreeMap<String, Option<String>>, ConfigError> {
        let env = Env::new(&lookup);
        Self::read(&env)?;
        Ok(env.seen.into_inner())
    }

    fn read(env: &Env<'_>) -> Result<Self, ConfigError> {
        let database_acquire_timeout = env.millis("DATABASE_ACQUIRE_TIMEOUT_MS", 1000)?;
        let order_deadline = env.millis("ORDER_DEADLINE_MS", 2000)?;
        let config = Self {
            http_addr: env.parse("HTTP_ADDR", "127.0.0.1:8000", "expected host:port")?,
            database_url: env.record_with("DATABASE_URL", database_url(env.get("DATABASE_URL")), redact)?,
            database_max_connections: env.number("DATABASE_MAX_CONNECTIONS", 16, 1..=1000)?,
            database_acquire_timeout,
            amqp_url: env.record_optional("AMQP_URL", amqp_url(env.get("AMQP_URL")))?,
            relay: relay_settings(env)?,
            outbox_pending_interval: env.millis("OUTBOX_PENDING_INTERVAL_MS", 5000)?,
            user_service_url: env.url("USER_SERVICE_URL", "http://127.0.0.1:8082")?,
            product_service_url: env.url("PRODUCT_SERVICE_URL", "http://127.0.0.1:8081")?,
            order_deadline,
            metrics_addr: env.record_optional(
                "METRICS_ADDR",
                env.get("METRICS_ADDR").map(|_| env.parse("METRICS_ADDR", "", "expected host:port")).transpose(),
            )?,
            body_limit_bytes: env.number("HTTP_BODY_LIMIT_BYTES", 16 * 1024, 256..=1 << 24)?,
            header_read_timeout: env.millis("HTTP_HEADER_READ_TIMEOUT_MS", 30_000)?,
            first_byte_timeout: env.millis("HTTP_FIRST_BYTE_TIMEOUT_MS", 10_000)?,
            idle_timeout: env.millis("HTTP_IDLE_TIMEOUT_MS", 60_000)?,
            max_connections: env.number("HTTP_MAX_CONNECTIONS", 10_000, 1..=1_000_000)?,
            body_read_timeout: env.millis("HTTP_BODY_READ_TIMEOUT_MS", 10_000)?,
            max_in_flight: env.number("HTTP_MAX_IN_FLIGHT", 128, 1..=1_000_000)?,
            max_reads_in_flight: env.number("HTTP_MAX_READS_IN_FLIGHT", 128, 1..=1_000_000)?,
            shutdown_delay: Duration::from_millis(env.number("SHUTDOWN_DELAY_MS", 0, 0..=600_000)?),
            shutdown_drain_timeout: env.millis("SHUTDOWN_DRAIN_TIMEOUT_MS", 10_000)?,
            idempotency: KeySettings {
                lease: env.millis("IDEMPOTENCY_LEASE_MS", 30_000)?,
                retention: Duration::from_secs(3600 * env.number("IDEMPOTENCY_RETENTION_HOURS", 24, 1..=24 * 365)?),
                longest_order: order_deadline + database_acquire_timeout,
            },
            user_stack: stack_config(env, "USER")?,
            product_stack: stack_config(env, "PRODUCT")?,
        };
        // A lease shorter than an order could let a retry take over a key whose order is still
        // being placed; that one would then fail to complete (409) rather than duplicate, but
        // the client would see a needless failure.
        if config.idempotency.lease < config.order_deadline + config.database_acquire_timeout {
            let reason = "must be at least ORDER_DEADLINE_MS + DATABASE_ACQUIRE_TIMEOUT_MS".to_owned();
            return Err(invalid("IDEMPOTENCY_LEASE_MS", reason));
        }
        Ok(config)
    }
}

/// `OUTBOX_*` relay settings; defaults in [`RelaySettings::default`] and the README.
fn relay_settings(env: &Env<'_>) -> Result<RelaySettings, ConfigError> {
    let d = RelaySettings::default();
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let retry_base = env.millis("OUTBOX_RETRY_BASE_MS", ms(d.row_backoff.base))?;
    let retry_max = env.millis("OUTBOX_RETRY_MAX_MS", ms(d.row_backoff.max))?;
    if retry_max < retry_base {
        return Err(invalid("OUTBOX_RETRY_MAX_MS", "must not be below OUTBOX_RETRY_BASE_MS".into()));
    }
    let reconnect_max = env.millis("OUTBOX_RECONNECT_MAX_MS", ms(d.reconnect.max))?;
    Ok(RelaySettings {
        poll_interval: env.millis("OUTBOX_POLL_INTERVAL_MS", ms(d.poll_interval))?,
        batch_size: env.number("OUTBOX_BATCH_SIZE", d.batch_size, 1..=10_000)?,
        lease: env.millis("OUTBOX_CLAIM_LEASE_MS", ms(d.lease))?,
        row_backoff: Backoff { base: retry_base, max: retry_max },
        reconnect: Backoff { base: d.reconnect.base.min(reconnect_max), max: reconnect_max },
    })
}

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
        breaker: KeyedConfig {
            upstream,
            per_key,
            max_keys: env.number(&var("BREAKER_MAX_KEYS"), 1024, 1..=1_000_000)?,
            min_failing_keys: env.number(&var("BREAKER_MIN_FAILING_KEYS"), 3, 1..=1000)?,
        },
    })
}

/// Typed access to variables, each error naming its variable; remembers what it read (and the
/// value used) for [`Config::effective`].
struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    seen: std::cell::RefCell<std::collections::BTreeMap<String, Option<String>>>,
}

impl<'a> Env<'a> {
    fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { lookup, seen: Default::default() }
    }

    fn get(&self, var: &str) -> Option<String> {
        (self.lookup)(var).filter(|v| !v.trim().is_empty())
    }

    fn record(&self, var: &str, value: Option<String>) {
        self.seen.borrow_mut().insert(var.to_owned(), value);
    }

    fn record_with<T: Clone + Into<String>>(
        &self,
        var: &str,
        value: Result<T, ConfigError>,
        show: fn(&str) -> String,
    ) -> Result<T, ConfigError> {
        if let Ok(value) = &value {
            self.record(var, Some(show(&value.clone().into())));
        }
        value
    }

    fn record_optional<T: ToString>(
        &self,
        var: &str,
        value: Result<Option<T>, ConfigError>,
    ) -> Result<Option<T>, ConfigError> {
        if let Ok(value) = &value {
            self.record(var, value.as_ref().map(|v| redact(&v.to_string())));
        }
        value
    }

    fn parse<T: std::str::FromStr>(&self, var: &str, default: &str, expected: &str) -> Result<T, ConfigError> {
        let raw = self.get(var).unwrap_or_else(|| default.to_owned());
        let value = raw.trim().parse().map_err(|_| invalid(var, format!("{expected}, got {raw:?}")))?;
        self.record(var, Some(raw.trim().to_owned()));
        Ok(value)
    }

    fn number<T>(&self, var: &str, default: T, range: std::ops::RangeInclusive<T>) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let Some(raw) = self.get(var) else {
            self.record(var, Some(default.to_string()));
            return Ok(default);
        };
        let expected = || format!("expected a whole number from {} to {}", range.start(), range.end());
        let value: T = raw.trim().parse().map_err(|_| invalid(var, format!("{}, got {raw:?}", expected())))?;
        if !range.contains(&value) {
            return Err(invalid(var, format!("{}, got {raw:?}", expected())));
        }
        self.record(var, Some(value.to_string()));
        Ok(value)
    }

    /// Milliseconds, at least 1 and at most an hour: a zero or day-long timeout is a typo.
    fn millis(&self, var: &str, default: u64) -> Result<Duration, ConfigError> {
        self.number(var, default, 1..=3_600_000).map(Duration::from_millis)
    }

    fn url(&self, var: &str, default: &str) -> Result<Url, ConfigError> {
        let raw = self.get(var).unwrap_or_else(|| default.to_owned());
        let shown = redact(&raw);
        let url = Url::parse(raw.trim())
            .map_err(|e| invalid(var, format!("expected an http(s) URL ({e}), got {shown:?}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(invalid(var, format!("expected an http(s) URL, got {shown:?}")));
        }
        self.record(var, Some(redact(url.as_str())));
        Ok(url)
    }
}

/// `scheme://user:***@host/…`, parsable or not: a password never reaches an error line or
/// `--print-config`. Cut at the last `@`, so a password holding `/` or `@` is hidden too.
fn redact(raw: &str) -> String {
    let start = raw.find("://").map_or(0, |i| i + 3);
    match raw[start..].rfind('@') {
        Some(at) => {
            let userinfo = &raw[start..start + at];
            let user = userinfo.split(':').next().unwrap_or_default();
            let hidden = if userinfo.contains(':') { format!("{user}:***") } else { user.to_owned() };
            format!("{}{hidden}{}", &raw[..start], &raw[start + at..])
        }
        None => raw.to_owned(),
    }
}

fn invalid(var: &str, reason: String) -> ConfigError {
    ConfigError { var: var.to_owned(), reason }
}

fn database_url(raw: Option<String>) -> Result<String, ConfigError> {
    let url = raw.unwrap_or_else(|| "sqlite://orders.db".to_owned());
    let known = ["postgres://", "postgresql://", "sqlite:"];
    if known.iter().any(|scheme| url.starts_with(scheme)) {
        Ok(url)
    } else {
        // The value may hold a password: name the scheme only.
        let scheme = url.split(':').next().unwrap_or_default();
        Err(invalid("DATABASE_URL", format!("expected postgres://… or sqlite://…, got scheme {scheme:?}")))
    }
}

fn amqp_url(raw: Option<String>) -> Result<Option<String>, ConfigError> {
    match raw {
        None => Ok(None),
        Some(url) if url.starts_with("amqp://") || url.starts_with("amqps://") => Ok(Some(url)),
        Some(url) => {
            let scheme = url.split(':').next().unwrap_or_default();
            Err(invalid("AMQP_URL", format!("expected amqp://… or amqps://…, got scheme {scheme:?}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_design() {
        let c = load(&[]).expect("defaults are valid");
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8000");
        assert_eq!(c.database_url, "sqlite://orders.db");
        assert_eq!(c.amqp_url, None);
        assert_eq!(c.user_service_url.as_str(), "http://127.0.0.1:8082/");
        assert_eq!(c.product_service_url.as_str(), "http://127.0.0.1:8081/");
        assert_eq!(c.order_deadline, Duration::from_millis(2000));
        assert_eq!(c.metrics_addr, None);
        assert_eq!(c.max_in_flight, 128, "twice an upstream's bulkhead");
        assert_eq!(c.max_reads_in_flight, 128);
        assert_eq!(c.first_byte_timeout, Duration::from_secs(10));
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.max_connections, 10_000, "below a typical file limit (20,000 on these machines)");
        assert_eq!(c.outbox_pending_interval, Duration::from_secs(5));
        assert_eq!(
            c.idempotency,
            KeySettings {
                lease: Duration::from_secs(30),
                retention: Duration::from_secs(86_400),
                longest_order: Duration::from_secs(3),
            }
        );
        for stack in [&c.user_stack, &c.product_stack] {
            assert_eq!(stack.attempt_timeout, Duration::from_millis(800));
            assert_eq!(stack.max_attempts, 3);
            assert_eq!(stack.backoff.base, Duration::from_millis(50));
            assert_eq!(stack.retry_budget_percent, 20);
            assert_eq!(stack.breaker.upstream.window, Duration::from_secs(10));
            assert_eq!((stack.not_found_ttl, stack.not_found_max_keys), (Duration::from_secs(5), 1024));
        }
        let off = load(&[("PRODUCT_NOT_FOUND_TTL_MS", "0")]).expect("0 turns it off");
        assert_eq!(off.product_stack.not_found_ttl, Duration::ZERO);
    }

    #[test]
    fn each_upstream_is_configured_on_its_own() {
        let c = load(&[("PRODUCT_ATTEMPT_TIMEOUT_MS", "150"), ("USER_BREAKER_KEY_MIN_CALLS", "2")]).expect("valid");
        assert_eq!(c.product_stack.attempt_timeout, Duration::from_millis(150));
        assert_eq!(c.user_stack.attempt_timeout, Duration::from_millis(800));
        assert_eq!(c.user_stack.breaker.per_key.min_calls, 2);
        assert_eq!(c.product_stack.breaker.per_key.min_calls, 5);
    }

    #[test]
    fn overrides_are_read() {
        let c = load(&[
            ("HTTP_ADDR", "0.0.0.0:9000"),
            ("DATABASE_URL", "postgres://u@h/db"),
            ("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            ("ORDER_DEADLINE_MS", "350"),
            ("METRICS_ADDR", "127.0.0.1:9100"),
            ("IDEMPOTENCY_LEASE_MS", "1500"),
        ])
        .expect("valid");
        assert_eq!(c.metrics_addr.map(|a| a.port()), Some(9100));
        assert_eq!(c.idempotency.lease, Duration::from_millis(1500));
        assert_eq!(c.http_addr.port(), 9000);
        assert!(c.database_url.starts_with("postgres://"));
        assert!(c.amqp_url.is_some());
        assert_eq!(c.order_deadline, Duration::from_millis(350));
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        let cases = [
            ("HTTP_ADDR", "localhost"),
            ("DATABASE_URL", "mysql://root:secret@h/db"),
            ("AMQP_URL", "http://x"),
            ("USER_SERVICE_URL", "not a url"),
            ("PRODUCT_SERVICE_URL", "ftp://x"),
            ("ORDER_DEADLINE_MS", "2s"),
            ("ORDER_DEADLINE_MS", "0"),
            ("DATABASE_MAX_CONNECTIONS", "-1"),
            ("USER_ATTEMPT_TIMEOUT_MS", "fast"),
            ("PRODUCT_BREAKER_FAILURE_RATE_PERCENT", "150"),
            ("PRODUCT_MAX_ATTEMPTS", "0"),
            ("METRICS_ADDR", "9100"),
            ("HTTP_HEADER_READ_TIMEOUT_MS", "0"),
            ("HTTP_FIRST_BYTE_TIMEOUT_MS", "0"),
            ("HTTP_IDLE_TIMEOUT_MS", "soon"),
            ("HTTP_MAX_CONNECTIONS", "0"),
            ("HTTP_MAX_READS_IN_FLIGHT", "0"),
            ("IDEMPOTENCY_LEASE_MS", "500"),
            ("IDEMPOTENCY_RETENTION_HOURS", "0"),
        ];
        for (var, value) in cases {
            let err = load(&[(var, value)]).expect_err(var);
            assert_eq!(err.var, var, "{value}");
            assert!(err.to_string().starts_with(&format!("invalid {var}: ")));
        }
    }

    #[test]
    fn relay_settings_have_defaults_and_are_validated() {
        let c = load(&[]).expect("defaults");
        assert_eq!(c.relay, RelaySettings::default());
        assert_eq!(c.relay.poll_interval, Duration::from_secs(1));
        assert_eq!(c.relay.batch_size, 100);
        let c =
            load(&[("OUTBOX_POLL_INTERVAL_MS", "50"), ("OUTBOX_BATCH_SIZE", "7"), ("OUTBOX_CLAIM_LEASE_MS", "900")])
                .expect("valid");
        assert_eq!(c.relay.poll_interval, Duration::from_millis(50));
        assert_eq!(c.relay.batch_size, 7);
        assert_eq!(c.relay.lease, Duration::from_millis(900));
        for (var, value) in
            [("OUTBOX_BATCH_SIZE", "0"), ("OUTBOX_POLL_INTERVAL_MS", "soon"), ("OUTBOX_RETRY_MAX_MS", "10")]
        {
            assert_eq!(load(&[(var, value)]).expect_err(var).var, var, "{value}");
        }
    }

    #[test]
    fn effective_config_lists_every_variable_with_its_default_and_hides_passwords() {
        let vars = Config::effective(|name| match name {
            "DATABASE_URL" => Some("postgres://app:s3cret@db:5432/orders".to_owned()),
            "USER_ATTEMPT_TIMEOUT_MS" => Some("150".to_owned()),
            _ => None,
        })
        .expect("valid");
        let get = |name: &str| vars.get(name).cloned().flatten();
        assert_eq!(get("DATABASE_URL").as_deref(), Some("postgres://app:***@db:5432/orders"));
        assert_eq!(get("USER_ATTEMPT_TIMEOUT_MS").as_deref(), Some("150"));
        assert_eq!(get("PRODUCT_ATTEMPT_TIMEOUT_MS").as_deref(), Some("800"));
        assert_eq!(get("ORDER_DEADLINE_MS").as_deref(), Some("2000"));
        assert_eq!(get("HTTP_ADDR").as_deref(), Some("127.0.0.1:8000"));
        assert!(vars.contains_key("AMQP_URL") && get("AMQP_URL").is_none(), "unset optional variables are listed");
        assert!(!format!("{vars:?}").contains("s3cret"));
    }

    #[test]
    fn redaction_keeps_the_user_and_hides_the_password() {
        assert_eq!(redact("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact("postgres://root@h/db"), "postgres://root@h/db");
        assert_eq!(redact("sqlite://orders.db"), "sqlite://orders.db");
    }

    #[test]
    fn a_bad_service_url_does_not_echo_its_password() {
        for var in ["USER_SERVICE_URL", "PRODUCT_SERVICE_URL"] {
            for value in [
                "ftp://u:secret@h/",
                "http://u:secret@h:99999/",
                "http://u:secret@[::1/",
                "u:secret@h",
                "mailto:u:secret@h",
                " http://:secret@h:x/p?q#f ",
            ] {
                let err = load(&[(var, value)]).expect_err(value);
                assert_eq!(err.var, var);
                assert!(!err.to_string().contains("secret"), "{err}");
            }
        }
        let err = load(&[("USER_SERVICE_URL", "ftp://u:secret@h/x")]).expect_err("ftp");
        assert!(err.to_string().ends_with(r#"got "ftp://u:***@h/x""#), "the rest is still shown: {err}");
    }

    #[test]
    fn a_bad_database_url_does_not_echo_its_password() {
        let err = load(&[("DATABASE_URL", "mysql://root:secret@h/db")]).expect_err("mysql");
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
