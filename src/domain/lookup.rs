//! The lookup port: what placing an order needs from user-service and product-service, and how
//! a lookup can fail. The `upstream` adapter implements it over its resilience stack.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

/// Which upstream; its `as_str` is the `upstream` metric label and names it in problems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Upstream {
    User,
    Product,
}

impl Upstream {
    pub const ALL: [Upstream; 2] = [Upstream::User, Upstream::Product];

    pub fn as_str(self) -> &'static str {
        match self {
            Upstream::User => "user",
            Upstream::Product => "product",
        }
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Looks `T` up by key. `Ok(None)` is the upstream's 404 ("unknown"), a healthy answer.
#[async_trait]
pub trait Lookup<T>: Send + Sync {
    /// Whether the upstream answered "unknown" for `key` moments ago: the order can fail at
    /// once, before either lookup starts.
    fn known_unknown(&self, key: &str) -> bool;
    /// The refusal a lookup of `key` would get at once (an open breaker), without making it: an
    /// order asks both upstreams first so that a refused one never starts the other lookup only
    /// to cancel it.
    fn refusal(&self, key: &str) -> Option<UpstreamError>;
    /// The answer, within `deadline`.
    async fn fetch(&self, key: &str, deadline: Instant) -> Result<Option<T>, UpstreamError>;
    /// The last good answer for `key`, if the adapter kept one younger than the upstream's
    /// maximum staleness (`{PREFIX}_STALE_IF_ERROR_MS`); never after a 404 for it. Whether a
    /// failed lookup may use it is the use case's decision ([`UpstreamError::allows_stale`]).
    fn stale(&self, key: &str) -> Option<Stale<T>>;
}

/// An earlier good answer, kept for when the upstream fails (stale-if-error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale<T> {
    pub value: T,
    /// How long ago the upstream gave it.
    pub age: Duration,
}

/// One failed upstream call, after the stack has done what it can.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// A 5xx or 429: the upstream is unwell; worth another attempt.
    #[error("answered HTTP {0}")]
    ServerError(u16),
    /// No answer within the attempt timeout.
    #[error("timed out")]
    Timeout,
    /// Connection refused, reset or lost before an answer.
    #[error("connection failed: {0}")]
    Connect(String),
    /// A 200 we cannot use: bad JSON, missing fields, too large. Worth another attempt.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// A 4xx other than 404 and 429, or a 3xx (redirects are never followed): retrying the
    /// same request would get the same answer, and the upstream is answering, so it is healthy.
    #[error("unexpected HTTP {0}")]
    UnexpectedStatus(u16),
    /// The order's deadline ran out inside the stack.
    #[error("the order's deadline ran out")]
    DeadlineExceeded,
    /// Refused locally by an open circuit breaker: no request was sent.
    #[error("circuit open; retry in {}ms", retry_after.as_millis())]
    CircuitOpen { retry_after: Duration },
    /// Refused locally: the upstream's bulkhead (concurrent calls) is full.
    #[error("bulkhead full")]
    BulkheadFull,
    /// A retry was due but the retry budget is spent: the last attempt's error is kept.
    #[error("retry budget exhausted after: {0}")]
    RetryBudgetExhausted(Box<UpstreamError>),
}

impl UpstreamError {
    /// Every `outcome` label of `upstream_requests_total` (docs/contracts.md), registered at zero.
    pub const OUTCOMES: [&'static str; 8] = [
        "success",
        "not_found",
        "server_error",
        "timeout",
        "connect_error",
        "invalid_response",
        "rejected_open",
        "rejected_bulkhead",
    ];

    /// The `outcome` label of `upstream_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            UpstreamError::ServerError(_) => "server_error",
            UpstreamError::Timeout | UpstreamError::DeadlineExceeded => "timeout",
            UpstreamError::Connect(_) => "connect_error",
            UpstreamError::InvalidResponse(_) | UpstreamError::UnexpectedStatus(_) => "invalid_response",
            UpstreamError::CircuitOpen { .. } => "rejected_open",
            UpstreamError::BulkheadFull => "rejected_bulkhead",
            UpstreamError::RetryBudgetExhausted(last) => last.outcome(),
        }
    }

    /// Whether a last good answer may stand in for this failure (stale-if-error): the
    /// upstream is unwell or unreachable — a 5xx, an unusable body, a timeout, a refused
    /// connection, its open breaker, the retry budget spent on those. Never an answer the
    /// upstream gave on purpose (a 404 is not an error at all; another 4xx or a 3xx says the
    /// request is wrong), and never our own overload (bulkhead): that says nothing of the
    /// upstream.
    pub fn allows_stale(&self) -> bool {
        match self {
            UpstreamError::ServerError(_)
            | UpstreamError::Timeout
            | UpstreamError::DeadlineExceeded
            | UpstreamError::Connect(_)
            | UpstreamError::InvalidResponse(_)
            | UpstreamError::CircuitOpen { .. } => true,
            UpstreamError::RetryBudgetExhausted(last) => last.allows_stale(),
            UpstreamError::UnexpectedStatus(_) | UpstreamError::BulkheadFull => false,
        }
    }

    /// Whether another attempt may help: connect errors, timeouts, 5xx and unusable bodies.
    /// Never a 4xx, never a local refusal (breaker, bulkhead, budget, deadline).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            UpstreamError::ServerError(_)
                | UpstreamError::Timeout
                | UpstreamError::Connect(_)
                | UpstreamError::InvalidResponse(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        use UpstreamError as E;
        let open = E::CircuitOpen { retry_after: Duration::from_secs(1) };
        // (error, retryable, outcome, stale answer allowed)
        let table = [
            (E::ServerError(500), true, "server_error", true),
            (E::ServerError(429), true, "server_error", true),
            (E::Timeout, true, "timeout", true),
            (E::Connect("refused".into()), true, "connect_error", true),
            (E::InvalidResponse("json".into()), true, "invalid_response", true),
            (E::UnexpectedStatus(400), false, "invalid_response", false),
            (E::DeadlineExceeded, false, "timeout", true),
            (open, false, "rejected_open", true),
            (E::BulkheadFull, false, "rejected_bulkhead", false),
            (E::RetryBudgetExhausted(Box::new(E::ServerError(503))), false, "server_error", true),
            (E::RetryBudgetExhausted(Box::new(E::UnexpectedStatus(403))), false, "invalid_response", false),
        ];
        for (error, retryable, outcome, stale) in table {
            assert_eq!(error.is_retryable(), retryable, "{error:?}");
            assert_eq!(error.allows_stale(), stale, "{error:?}");
            assert_eq!(error.outcome(), outcome, "{error:?}");
            assert!(UpstreamError::OUTCOMES.contains(&outcome), "{outcome} is registered at zero");
        }
    }
}
