//! The trace spans of a lookup: one `lookup` span per order and upstream, and one client span
//! per attempt actually sent (HTTP semantic conventions). Local refusals — an open breaker, a
//! full bulkhead — send nothing, so they are events on the lookup span, not attempts.

use reqwest::Url;
use tracing::Span;
use tracing::field::Empty;

use crate::domain::UpstreamError;

/// The span a whole lookup (attempts, backoff, hedges) runs in.
pub fn lookup(upstream: &'static str, key: &str) -> Span {
    tracing::info_span!("lookup", otel.name = upstream_name(upstream), upstream, key)
}

fn upstream_name(upstream: &'static str) -> &'static str {
    match upstream {
        "user" => "lookup user",
        "product" => "lookup product",
        _ => "lookup",
    }
}

/// A refusal without a request (open breaker, full bulkhead), as an event on the current span.
pub fn refused(upstream: &'static str, error: &UpstreamError) {
    tracing::info!(upstream, outcome = error.outcome(), "upstream call refused locally: {error}");
}

/// A client span for one attempt; [`Attempt::finish`] records how it ended. Dropped unfinished
/// (the attempt timeout or the deadline cut it), it says so.
pub struct Attempt {
    span: Span,
    finished: bool,
}

impl Attempt {
    /// `hedge`: this attempt was sent because an earlier one was slow (the hedge layer's), so
    /// a trace shows why one lookup has two attempts in flight at once.
    pub fn start(upstream: &'static str, url: &Url, attempt: u32, hedge: bool) -> Self {
        let span = tracing::info_span!(
            "attempt",
            otel.name = "GET",
            otel.kind = "client",
            otel.status_code = Empty,
            http.request.method = "GET",
            url.full = url.as_str(),
            server.address = url.host_str().unwrap_or_default(),
            server.port = url.port_or_known_default().unwrap_or_default(),
            http.request.resend_count = Empty,
            http.response.status_code = Empty,
            error.r#type = Empty,
            upstream,
            attempt,
            hedge,
            outcome = Empty,
        );
        if attempt > 1 {
            span.record("http.request.resend_count", attempt - 1);
        }
        Self { span, finished: false }
    }

    pub fn span(&self) -> &Span {
        &self.span
    }

    pub fn finish<T>(mut self, result: &Result<Option<T>, UpstreamError>, status: Option<u16>) {
        self.finished = true;
        let outcome = match result {
            Ok(Some(_)) => "success",
            Ok(None) => "not_found",
            Err(error) => error.outcome(),
        };
        self.span.record("outcome", outcome);
        if let Some(status) = status {
            self.span.record("http.response.status_code", status);
        }
        if let Err(error) = result {
            self.span.record("otel.status_code", "ERROR");
            self.span.record("error.type", outcome);
            self.span.in_scope(|| tracing::debug!(error = %error, "upstream attempt failed"));
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.finished {
            self.span.record("outcome", "cancelled");
            self.span.record("error.type", "cancelled");
        }
    }
}
