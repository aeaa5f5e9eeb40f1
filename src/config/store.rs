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
        Ok(Self { url: url.to_owned(), backend, max_connections, acquire_timeout })
    }

    pub(super) fn read(env: &Env<'_>) -> Result<Self, ConfigError> {
        let url = env.get("DATABASE_URL").unwrap_or_else(|| "sqlite://orders.db".to_owned());
        let config = Self::new(
            &url,
            env.number("DATABASE_MAX_CONNECTIONS", 16, 1..=1000)?,
            env.millis("DATABASE_ACQUIRE_TIMEOUT_MS", 1000)?,
        );
        env.record("DATABASE_URL", Some(redact(&url)));
        config
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
    /// `OUTBOX_BATCH_SIZE`: rows claimed (and confirms in flight) per pass.
    pub batch_size: u32,
    /// `OUTBOX_CLAIM_LEASE_MS`: after this, rows claimed by a relay that vanished are claimable again.
    pub lease: Duration,
    /// `OUTBOX_RETRY_BASE_MS` / `OUTBOX_RETRY_MAX_MS`: per-row backoff after a refused publish.
    pub row_backoff: Backoff,
    /// `OUTBOX_RECONNECT_MAX_MS`: cap of the jittered reconnect backoff.
    pub reconnect: Backoff,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(1000),
            batch_size: 100,
            lease: Duration::from_secs(30),
            row_backoff: Backoff { base: Duration::from_secs(1), max: Duration::from_secs(300) },
            reconnect: Backoff { base: Duration::from_millis(100), max: Duration::from_secs(30) },
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
        lease: env.millis("OUTBOX_CLAIM_LEASE_MS", ms(d.lease))?,
        row_backoff: Backoff { base: retry_base, max: retry_max },
        reconnect: Backoff { base: d.reconnect.base.min(reconnect_max), max: reconnect_max },
    })
}
