//! `DATABASE_*`, `AMQP_URL` and `OUTBOX_*`: where orders and their events go.

use std::time::Duration;

use super::env::{ConfigError, Env, invalid, redact};
use crate::backoff::Backoff;

/// Which store the `DATABASE_URL` scheme names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// sqlx's own default: every statement the service runs fits, so each is parsed once per connection.
const DEFAULT_STATEMENT_CACHE_CAPACITY: usize = 100;

/// Measured (docs/fleet.md, eighth session).
const DEFAULT_INSERT_WRITERS: usize = 2;
/// Well above the batches a full edge limit (128 orders) makes with two writers.
const DEFAULT_INSERT_BATCH_MAX: usize = 64;

/// `DATABASE_*`: the store and its pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// `DATABASE_URL`: `postgres://…` or `sqlite://…`.
    pub url: String,
    /// Parsed once from the scheme of `url`.
    pub backend: Backend,
    /// `DATABASE_MAX_CONNECTIONS`: pool size; bounds what a flood can take from the database.
    pub max_connections: u32,
    /// `DATABASE_ACQUIRE_TIMEOUT_MS`: how long a request waits for a pooled connection before
    /// the order fails with 503, so a slow or absent database never hangs a client.
    pub acquire_timeout: Duration,
    /// `DATABASE_STATEMENT_CACHE_CAPACITY`: prepared statements kept per connection. `0` sends
    /// every statement unnamed and caches nothing, which a pooler that hands each transaction
    /// to another server connection (PgBouncer ≤ 1.20 in transaction mode) requires.
    pub statement_cache_capacity: usize,
    /// `DATABASE_SESSION_URL` (default `DATABASE_URL`): a connection that keeps session state,
    /// for what transaction pooling breaks: migrations (a session advisory lock) and the
    /// relay's `LISTEN`. Behind PgBouncer in transaction mode, PostgreSQL itself or a
    /// session-mode pool.
    pub session_url: String,
    /// `DATABASE_INSERT_WRITERS` (PostgreSQL): how many order insert statements may run at once.
    /// Orders placed while all are under way wait and go together in the next one (group commit,
    /// `storage::group`): fewer writers, bigger batches, less database CPU per order.
    pub insert_writers: usize,
    /// `DATABASE_INSERT_BATCH_MAX` (PostgreSQL): most orders one insert statement carries; `1`
    /// writes every order in a statement of its own.
    pub insert_batch_max: usize,
}

impl DatabaseConfig {
    /// A store at `url` (its scheme picks the backend) with that pool; what tools and tests use.
    pub fn new(url: &str, max_connections: u32, acquire_timeout: Duration) -> Result<Self, ConfigError> {
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            // The value may hold a password: name the scheme only.
            let scheme = url.split(':').next().unwrap_or_default();
            let reason = format!("expected postgres://… or sqlite://…, got scheme {scheme:?}");
            return Err(invalid("DATABASE_URL", reason));
        };
        Ok(Self {
            url: url.to_owned(),
            backend,
            max_connections,
            acquire_timeout,
            statement_cache_capacity: DEFAULT_STATEMENT_CACHE_CAPACITY,
            session_url: url.to_owned(),
            insert_writers: DEFAULT_INSERT_WRITERS,
            insert_batch_max: DEFAULT_INSERT_BATCH_MAX,
        })
    }

    pub(super) fn read(env: &Env<'_>) -> Result<Self, ConfigError> {
        let url = env.get("DATABASE_URL").unwrap_or_else(|| "sqlite://orders.db".to_owned());
        env.record("DATABASE_URL", Some(redact(&url)));
        let mut config = Self::new(
            &url,
            env.number("DATABASE_MAX_CONNECTIONS", 16, 1..=1000)?,
            env.millis("DATABASE_ACQUIRE_TIMEOUT_MS", 1000)?,
        )?;
        config.statement_cache_capacity =
            env.number("DATABASE_STATEMENT_CACHE_CAPACITY", DEFAULT_STATEMENT_CACHE_CAPACITY, 0..=10_000)?;
        config.insert_writers = env.number("DATABASE_INSERT_WRITERS", DEFAULT_INSERT_WRITERS, 1..=1000)?;
        config.insert_batch_max = env.number("DATABASE_INSERT_BATCH_MAX", DEFAULT_INSERT_BATCH_MAX, 1..=1000)?;
        if let Some(session) = env.get("DATABASE_SESSION_URL") {
            let named = Self::new(&session, 1, config.acquire_timeout)
                .map_err(|e| invalid("DATABASE_SESSION_URL", e.reason))?;
            if named.backend != config.backend {
                let reason = "must name the same kind of database as DATABASE_URL".to_owned();
                return Err(invalid("DATABASE_SESSION_URL", reason));
            }
            config.session_url = session;
        }
        env.record("DATABASE_SESSION_URL", Some(redact(&config.session_url)));
        Ok(config)
    }
}

/// `AMQP_URL` and `OUTBOX_*`: the broker and how the outbox relay paces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// `AMQP_URL`: the broker; `None` leaves the relay off and events wait in the outbox.
    pub amqp_url: Option<String>,
    /// `OUTBOX_*`: used only with `AMQP_URL`.
    pub relay: RelaySettings,
    /// `OUTBOX_PENDING_INTERVAL_MS`: how often `outbox_pending` is counted while the relay is
    /// off (with it on, the relay counts after its passes). A count scans the backlog, which
    /// grows without bound with the relay off: not every second.
    pub pending_interval: Duration,
}

/// How the relay paces itself; see the README for each `OUTBOX_*` variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaySettings {
    /// `OUTBOX_POLL_INTERVAL_MS`: the longest an event waits when no wake-up arrives.
    pub poll_interval: Duration,
    /// `OUTBOX_BATCH_SIZE`: rows per claim, one commit each; while the broker confirms one
    /// batch the next is claimed and sent.
    pub batch_size: u32,
    /// `OUTBOX_RETRY_BASE_MS` / `OUTBOX_RETRY_MAX_MS`: per-row backoff after a refused publish.
    pub row_backoff: Backoff,
    /// `OUTBOX_RECONNECT_MAX_MS`: cap of the jittered reconnect backoff.
    pub reconnect: Backoff,
    /// `OUTBOX_PASS_SPACING_MS`: the least time between the starts of two passes. Under a steady
    /// stream of commits each pass then takes the rows of a whole interval, so a claim, its
    /// commit and the broker's confirms are shared by more events; an event waits at most this
    /// much longer. A relay woken after a quiet spell starts at once.
    pub pass_spacing: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(1000),
            batch_size: 100,
            row_backoff: Backoff { base: Duration::from_secs(1), max: Duration::from_secs(300) },
            reconnect: Backoff { base: Duration::from_millis(100), max: Duration::from_secs(30) },
            pass_spacing: Duration::from_millis(10),
        }
    }
}

impl BrokerConfig {
    pub(super) fn read(env: &Env<'_>) -> Result<Self, ConfigError> {
        let amqp_url = match env.get("AMQP_URL") {
            None => None,
            Some(url) if url.starts_with("amqp://") || url.starts_with("amqps://") => Some(url),
            Some(url) => {
                let scheme = url.split(':').next().unwrap_or_default();
                let reason = format!("expected amqp://… or amqps://…, got scheme {scheme:?}");
                return Err(invalid("AMQP_URL", reason));
            }
        };
        env.record("AMQP_URL", amqp_url.as_deref().map(redact));
        Ok(Self {
            amqp_url,
            relay: relay_settings(env)?,
            pending_interval: env.millis("OUTBOX_PENDING_INTERVAL_MS", 5000)?,
        })
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
        row_backoff: Backoff { base: retry_base, max: retry_max },
        reconnect: Backoff { base: d.reconnect.base.min(reconnect_max), max: reconnect_max },
        pass_spacing: env.millis("OUTBOX_PASS_SPACING_MS", ms(d.pass_spacing))?,
    })
}
