//! The request's correlation headers, carried to the upstreams without threading them through
//! the domain: the HTTP middleware scopes them to the request's task, the transport reads them.
//! (Both lookups of an order run inside that task, so they see it.)

use reqwest::header::HeaderValue;

/// What an upstream call forwards: our request id and the caller's W3C trace context.
#[derive(Debug, Clone, Default)]
pub struct Correlation {
    pub request_id: Option<HeaderValue>,
    pub traceparent: Option<HeaderValue>,
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
