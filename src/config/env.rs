//! Reading variables: typed, each error naming its variable, passwords never echoed, and every
//! value used remembered for `--print-config`.

use std::time::Duration;

use reqwest::Url;

/// A variable that is set but unusable; `Display` is the one line start-up prints.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {var}: {reason}")]
pub struct ConfigError {
    pub var: String,
    pub reason: String,
}

/// Typed access to variables, each error naming its variable; remembers what it read (and the
/// value used) for [`Config::effective`].
pub(super) struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    pub(super) seen: std::cell::RefCell<std::collections::BTreeMap<String, Option<String>>>,
    /// Every name looked up, recorded or not (a reload must see the same variables again).
    pub(super) asked: std::cell::RefCell<std::collections::BTreeSet<String>>,
}

impl<'a> Env<'a> {
    pub(super) fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { lookup, seen: Default::default(), asked: Default::default() }
    }

    pub(super) fn get(&self, var: &str) -> Option<String> {
        self.asked.borrow_mut().insert(var.to_owned());
        (self.lookup)(var).filter(|v| !v.trim().is_empty())
    }

    pub(super) fn record(&self, var: &str, value: Option<String>) {
        self.seen.borrow_mut().insert(var.to_owned(), value);
    }

    pub(super) fn record_optional<T: ToString>(
        &self,
        var: &str,
        value: Result<Option<T>, ConfigError>,
    ) -> Result<Option<T>, ConfigError> {
        if let Ok(value) = &value {
            self.record(var, value.as_ref().map(|v| redact(&v.to_string())));
        }
        value
    }

    pub(super) fn parse<T: std::str::FromStr>(
        &self,
        var: &str,
        default: &str,
        expected: &str,
    ) -> Result<T, ConfigError> {
        let raw = self.get(var).unwrap_or_else(|| default.to_owned());
        let value = raw.trim().parse().map_err(|_| invalid(var, format!("{expected}, got {raw:?}")))?;
        self.record(var, Some(raw.trim().to_owned()));
        Ok(value)
    }

    pub(super) fn number<T>(&self, var: &str, default: T, range: std::ops::RangeInclusive<T>) -> Result<T, ConfigError>
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
    pub(super) fn millis(&self, var: &str, default: u64) -> Result<Duration, ConfigError> {
        self.number(var, default, 1..=3_600_000).map(Duration::from_millis)
    }

    pub(super) fn url(&self, var: &str, default: &str) -> Result<Url, ConfigError> {
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
pub(super) fn redact(raw: &str) -> String {
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

pub(super) fn invalid(var: &str, reason: String) -> ConfigError {
    ConfigError { var: var.to_owned(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_the_user_and_hides_the_password() {
        assert_eq!(redact("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact("postgres://root@h/db"), "postgres://root@h/db");
        assert_eq!(redact("sqlite://orders.db"), "sqlite://orders.db");
        assert_eq!(redact("http://u:pa/ss@h/x"), "http://u:***@h/x", "a password with a slash");
    }
}
