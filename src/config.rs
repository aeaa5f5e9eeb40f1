//! One typed configuration, read from the environment once at start-up.
//!
//! Every variable is optional and has the default documented in the README table; a variable
//! that is set but invalid stops start-up with one line naming it.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::Url;

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
    /// `USER_SERVICE_URL`.
    pub user_service_url: Url,
    /// `PRODUCT_SERVICE_URL`.
    pub product_service_url: Url,
    /// `ORDER_DEADLINE_MS`: the whole order's budget for upstream work.
    pub order_deadline: Duration,
    /// `HTTP_BODY_LIMIT_BYTES`: larger request bodies get 413 before they are read.
    pub body_limit_bytes: usize,
}

/// A variable that is set but unusable; `Display` is the one line start-up prints.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let config = Self {
            http_addr: env.parse("HTTP_ADDR", "127.0.0.1:8000", "expected host:port")?,
            database_url: database_url(env.get("DATABASE_URL"))?,
            database_max_connections: env.number("DATABASE_MAX_CONNECTIONS", 16, 1..=1000)?,
            database_acquire_timeout: env.millis("DATABASE_ACQUIRE_TIMEOUT_MS", 1000)?,
            amqp_url: amqp_url(env.get("AMQP_URL"))?,
            user_service_url: env.url("USER_SERVICE_URL", "http://127.0.0.1:8082")?,
            product_service_url: env.url("PRODUCT_SERVICE_URL", "http://127.0.0.1:8081")?,
            order_deadline: env.millis("ORDER_DEADLINE_MS", 2000)?,
            body_limit_bytes: env.number("HTTP_BODY_LIMIT_BYTES", 16 * 1024, 256..=1 << 24)?,
        };
        Ok(config)
    }
}

/// Typed access to variables, each error naming its variable.
struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn get(&self, var: &str) -> Option<String> {
        (self.0)(var).filter(|v| !v.trim().is_empty())
    }

    fn parse<T: std::str::FromStr>(
        &self,
        var: &'static str,
        default: &str,
        expected: &str,
    ) -> Result<T, ConfigError> {
        let raw = self.get(var).unwrap_or_else(|| default.to_owned());
        raw.trim()
            .parse()
            .map_err(|_| invalid(var, format!("{expected}, got {raw:?}")))
    }

    fn number<T>(
        &self,
        var: &'static str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let Some(raw) = self.get(var) else {
            return Ok(default);
        };
        let expected = || {
            format!(
                "expected a whole number from {} to {}",
                range.start(),
                range.end()
            )
        };
        let value: T = raw
            .trim()
            .parse()
            .map_err(|_| invalid(var, format!("{}, got {raw:?}", expected())))?;
        if !range.contains(&value) {
            return Err(invalid(var, format!("{}, got {raw:?}", expected())));
        }
        Ok(value)
    }

    /// Milliseconds, at least 1 and at most an hour: a zero or day-long timeout is a typo.
    fn millis(&self, var: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.number(var, default, 1..=3_600_000)
            .map(Duration::from_millis)
    }

    fn url(&self, var: &'static str, default: &str) -> Result<Url, ConfigError> {
        let raw = self.get(var).unwrap_or_else(|| default.to_owned());
        let url = Url::parse(raw.trim())
            .map_err(|e| invalid(var, format!("expected an http(s) URL ({e}), got {raw:?}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(invalid(
                var,
                format!("expected an http(s) URL, got {raw:?}"),
            ));
        }
        Ok(url)
    }
}

fn invalid(var: &'static str, reason: String) -> ConfigError {
    ConfigError { var, reason }
}

fn database_url(raw: Option<String>) -> Result<String, ConfigError> {
    let url = raw.unwrap_or_else(|| "sqlite://orders.db".to_owned());
    let known = ["postgres://", "postgresql://", "sqlite:"];
    if known.iter().any(|scheme| url.starts_with(scheme)) {
        Ok(url)
    } else {
        // The value may hold a password: name the scheme only.
        let scheme = url.split(':').next().unwrap_or_default();
        Err(invalid(
            "DATABASE_URL",
            format!("expected postgres://… or sqlite://…, got scheme {scheme:?}"),
        ))
    }
}

fn amqp_url(raw: Option<String>) -> Result<Option<String>, ConfigError> {
    match raw {
        None => Ok(None),
        Some(url) if url.starts_with("amqp://") || url.starts_with("amqps://") => Ok(Some(url)),
        Some(url) => {
            let scheme = url.split(':').next().unwrap_or_default();
            Err(invalid(
                "AMQP_URL",
                format!("expected amqp://… or amqps://…, got scheme {scheme:?}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
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
    }

    #[test]
    fn overrides_are_read() {
        let c = load(&[
            ("HTTP_ADDR", "0.0.0.0:9000"),
            ("DATABASE_URL", "postgres://u@h/db"),
            ("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            ("ORDER_DEADLINE_MS", "350"),
        ])
        .expect("valid");
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
        ];
        for (var, value) in cases {
            let err = load(&[(var, value)]).expect_err(var);
            assert_eq!(err.var, var, "{value}");
            assert!(err.to_string().starts_with(&format!("invalid {var}: ")));
        }
    }

    #[test]
    fn a_bad_database_url_does_not_echo_its_password() {
        let err = load(&[("DATABASE_URL", "mysql://root:secret@h/db")]).expect_err("mysql");
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
