//! The request's correlation headers, carried to the upstreams without threading them through
//! the domain: the HTTP middleware scopes them to the request's task, the transport reads them.
//! (Both lookups of an order run inside that task, so they see it.)

use reqwest::header::HeaderValue;

/// What an upstream call forwards: our request id and the W3C trace context to pass on (the
/// caller's; with tracing on and the trace not sampled, our server span's, flags `00`).
#[derive(Debug, Clone)]
pub struct Correlation {
    pub request_id: Option<HeaderValue>,
    pub traceparent: Option<HeaderValue>,
    /// Whether this request's trace is recorded. When it is not, the spans inside the request
    /// are not made at all (the tracer's filter reads [`sampled`]): an unsampled order costs no
    /// span but its server span, and the context passed on says "not sampled" so the upstreams
    /// agree.
    pub sampled: bool,
}

impl Default for Correlation {
    fn default() -> Self {
        Self { request_id: None, traceparent: None, sampled: true }
    }
}

tokio::task_local! {
    static CURRENT: Correlation;
}

/// Runs `future` with `correlation` visible to [`current`].
pub async fn scope<F: std::future::Future>(correlation: Correlation, future: F) -> F::Output {
    CURRENT.scope(correlation, future).await
}

/// The correlation of the request this task serves, if any.
pub fn current() -> Correlation {
    CURRENT.try_with(Correlation::clone).unwrap_or_default()
}

/// Whether the request this task serves is traced; true outside a request (the relay's spans
/// follow their stored context's decision).
pub fn sampled() -> bool {
    CURRENT.try_with(|c| c.sampled).unwrap_or(true)
}
