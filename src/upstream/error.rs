//! How an upstream call can fail, and what each failure means for retries and metrics.

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
    /// An answer we cannot use: unexpected status, bad JSON, missing fields, too large.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// The order's deadline ran out inside the stack.
    #[error("the order's deadline ran out")]
    DeadlineExceeded,
}

impl UpstreamError {
    /// The `outcome` label of `upstream_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            UpstreamError::ServerError(_) => "server_error",
            UpstreamError::Timeout | UpstreamError::DeadlineExceeded => "timeout",
            UpstreamError::Connect(_) => "connect_error",
            UpstreamError::InvalidResponse(_) => "invalid_response",
        }
    }
}
