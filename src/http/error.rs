//! The one error type of the HTTP boundary, and the only place problem+json is built (RFC 9457).
//!
//! `type` is `/problems/{slug}`; clients switch on the slug. Internal causes never reach the
//! body: they ride in the response extensions as [`ProblemCause`] and are logged once by the
//! request middleware.

use std::sync::LazyLock;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::PlaceOrderError;
use crate::domain::StoreError;
use crate::domain::UpstreamError;

/// `Retry-After` for failures with no better estimate (database unavailable, load shed).
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    pub field: &'static str,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `malformed-request`: not JSON, wrong types, missing fields, bad query string.
    #[error("{0}")]
    MalformedRequest(String),
    /// 413 `payload-too-large`.
    #[error("the request body is too large")]
    PayloadTooLarge,
    /// 415 `unsupported-media-type`: the body must be sent as `application/json`.
    #[error("expected content-type: application/json")]
    UnsupportedMediaType,
    /// 422 `invalid-input`: well-formed, but a value is not acceptable.
    #[error("invalid input")]
    InvalidInput(Vec<FieldError>),
    /// 404 `not-found`.
    #[error("{0}")]
    NotFound(&'static str),
    /// 405 `method-not-allowed`.
    #[error("method not allowed on this resource")]
    MethodNotAllowed,
    /// Placing the order failed: 422, 502, 503 or 504 depending on why.
    #[error(transparent)]
    PlaceOrder(#[from] PlaceOrderError),
    /// Reading failed: 503 when the database is unavailable, else 500.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// 422 `idempotency-key-reused`: the key was first used for a different request.
    #[error("this Idempotency-Key was used for a different request")]
    KeyReused,
    /// 409 `idempotency-key-in-flight`: the first request with this key has not finished;
    /// `retry_after` is when it must have (or, after a crash, when its lease runs out).
    #[error("a request with this Idempotency-Key is still being processed; retry later")]
    KeyInFlight { retry_after: Duration },
    /// 408 `request-timeout`: the body did not arrive in time.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// 503 `load-shed`: too many requests in flight; retry shortly.
    #[error("the service is overloaded; retry shortly")]
    Overloaded,
    /// 422 `invalid-settings` (admin API): the settings to reload are invalid; the reason names
    /// the variable. The settings in force are kept.
    #[error("{0}")]
    InvalidSettings(String),
    /// 500 `internal-error`: a bug (e.g. a caught panic).
    #[error("internal error: {0}")]
    Internal(String),
}

/// The internal cause of a 5xx, for the log line only.
#[derive(Debug, Clone)]
pub struct ProblemCause(pub String);

/// The problem+json body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `/problems/{slug}`, e.g. `/problems/unknown-user`.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// Present on `invalid-input`: every field that failed and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// Everything about one problem before it is rendered.
struct Spec {
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: String,
    retry_after: Option<Duration>,
}

impl Spec {
    fn new(status: StatusCode, slug: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self { status, slug, title, detail: detail.into(), retry_after: None }
    }

    fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }
}

/// Every problem type's slug: the domain of `orders_failed_total{reason}`, registered at zero.
pub const SLUGS: [&str; 21] = [
    "malformed-request",
    "payload-too-large",
    "unsupported-media-type",
    "invalid-input",
    "not-found",
    "method-not-allowed",
    "idempotency-key-reused",
    "idempotency-key-in-flight",
    "request-timeout",
    "load-shed",
    "unknown-user",
    "unknown-product",
    "deadline-exceeded",
    "upstream-timeout",
    "circuit-open",
    "bulkhead-full",
    "retry-budget-exhausted",
    "upstream-error",
    "database-unavailable",
    "internal-error",
    "invalid-settings",
];

impl ApiError {
    /// The problem type's slug, also the `reason` label of `orders_failed_total`.
    pub fn slug(&self) -> &'static str {
        self.spec().slug
    }

    fn spec(&self) -> Spec {
        use StatusCode as S;
        match self {
            ApiError::MalformedRequest(why) => {
                Spec::new(S::BAD_REQUEST, "malformed-request", "Malformed request", why.clone())
            }
            ApiError::PayloadTooLarge => {
                Spec::new(S::PAYLOAD_TOO_LARGE, "payload-too-large", "Payload too large", self.to_string())
            }
            ApiError::UnsupportedMediaType => Spec::new(
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                self.to_string(),
            ),
            ApiError::InvalidInput(errors) => {
                let detail = errors.iter().map(|e| format!("{}: {}", e.field, e.reason)).collect::<Vec<_>>().join("; ");
                Spec::new(S::UNPROCESSABLE_ENTITY, "invalid-input", "Invalid input", detail)
            }
            ApiError::NotFound(what) => Spec::new(S::NOT_FOUND, "not-found", "Not found", *what),
            ApiError::MethodNotAllowed => {
                Spec::new(S::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed", self.to_string())
            }
            ApiError::KeyReused => {
                Spec::new(S::UNPROCESSABLE_ENTITY, "idempotency-key-reused", "Idempotency-Key reused", self.to_string())
            }
            ApiError::KeyInFlight { retry_after } => key_in_flight(self.to_string()).retry_after(*retry_after),
            ApiError::BodyTimeout => {
                Spec::new(S::REQUEST_TIMEOUT, "request-timeout", "Request timeout", self.to_string())
            }
            ApiError::Overloaded => Spec::new(S::SERVICE_UNAVAILABLE, "load-shed", "Overloaded", self.to_string())
                .retry_after(DEFAULT_RETRY_AFTER),
            ApiError::PlaceOrder(e) => place_order_spec(e),
            ApiError::Store(e) => store_spec(e),
            ApiError::InvalidSettings(why) => {
                Spec::new(S::UNPROCESSABLE_ENTITY, "invalid-settings", "Invalid settings", why.clone())
            }
            ApiError::Internal(_) => {
                Spec::new(S::INTERNAL_SERVER_ERROR, "internal-error", "Internal error", "an unexpected error occurred")
            }
        }
    }
}

fn place_order_spec(error: &PlaceOrderError) -> Spec {
    use StatusCode as S;
    match error {
        PlaceOrderError::UnknownUser => {
            Spec::new(S::UNPROCESSABLE_ENTITY, "unknown-user", "Unknown user", error.to_string())
        }
        PlaceOrderError::UnknownProduct => {
            Spec::new(S::UNPROCESSABLE_ENTITY, "unknown-product", "Unknown product", error.to_string())
        }
        PlaceOrderError::DeadlineExceeded => {
            Spec::new(S::GATEWAY_TIMEOUT, "deadline-exceeded", "Deadline exceeded", error.to_string())
        }
        PlaceOrderError::Upstream { upstream, source } => upstream_spec(&format!("{upstream}-service"), source),
        PlaceOrderError::Store(e) => store_spec(e),
    }
}

/// An upstream failure for the client: which upstream and what kind of failure, never the
/// transport's own text (addresses, parser messages), which goes to the log only.
fn upstream_spec(upstream: &str, source: &UpstreamError) -> Spec {
    use StatusCode as S;
    let detail = |what: &str| format!("{upstream}: {what}");
    match source {
        UpstreamError::Timeout | UpstreamError::DeadlineExceeded => {
            Spec::new(S::GATEWAY_TIMEOUT, "upstream-timeout", "Upstream timed out", detail("timed out"))
        }
        UpstreamError::CircuitOpen { retry_after } => {
            Spec::new(S::SERVICE_UNAVAILABLE, "circuit-open", "Circuit open", detail("circuit open"))
                .retry_after(*retry_after)
        }
        UpstreamError::BulkheadFull => {
            Spec::new(S::SERVICE_UNAVAILABLE, "bulkhead-full", "Bulkhead full", detail("too many calls in flight"))
                .retry_after(DEFAULT_RETRY_AFTER)
        }
        UpstreamError::RetryBudgetExhausted(_) => Spec::new(
            S::SERVICE_UNAVAILABLE,
            "retry-budget-exhausted",
            "Retry budget exhausted",
            detail("failing, and the retry budget is spent"),
        )
        .retry_after(DEFAULT_RETRY_AFTER),
        UpstreamError::ServerError(status) | UpstreamError::UnexpectedStatus(status) => {
            Spec::new(S::BAD_GATEWAY, "upstream-error", "Upstream error", detail(&format!("answered HTTP {status}")))
        }
        UpstreamError::Connect(_) => {
            Spec::new(S::BAD_GATEWAY, "upstream-error", "Upstream error", detail("connection failed"))
        }
        UpstreamError::InvalidResponse(_) => {
            Spec::new(S::BAD_GATEWAY, "upstream-error", "Upstream error", detail("answered with an unusable response"))
        }
    }
}

fn key_in_flight(detail: String) -> Spec {
    Spec::new(StatusCode::CONFLICT, "idempotency-key-in-flight", "Idempotency-Key in flight", detail)
        .retry_after(DEFAULT_RETRY_AFTER)
}

fn store_spec(error: &StoreError) -> Spec {
    match error {
        StoreError::KeyLeaseLost => key_in_flight(error.to_string()),
        StoreError::Unavailable(_) => Spec::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database-unavailable",
            "Database unavailable",
            "the database is unavailable; retry later",
        )
        .retry_after(DEFAULT_RETRY_AFTER),
        StoreError::Query(_) => Spec::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal-error",
            "Internal error",
            "an unexpected error occurred",
        ),
    }
}

/// The 503 `load-shed` answer as [`ApiError::Overloaded`] renders it, built once: what the
/// shedding path sends (a copy of these bytes, nothing serialised per request).
static SHED_BODY: LazyLock<Bytes> = LazyLock::new(|| {
    let spec = ApiError::Overloaded.spec();
    Bytes::from(problem_body(&ApiError::Overloaded, spec))
});

/// A fresh 503 `load-shed` response from the precomputed body and static headers, equal to
/// `ApiError::Overloaded.into_response()` but for the internal cause (nothing to log: shed
/// requests are counted, not logged one by one).
pub fn shed_response() -> Response {
    let mut response = Response::new(Body::from(Bytes::clone(&SHED_BODY)));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

const PROBLEM_JSON: &str = "application/problem+json";

fn problem_body(error: &ApiError, spec: Spec) -> Vec<u8> {
    let errors = match error {
        ApiError::InvalidInput(errors) => Some(errors.clone()),
        _ => None,
    };
    let problem = Problem {
        type_: format!("/problems/{}", spec.slug),
        title: spec.title,
        status: spec.status.as_u16(),
        detail: spec.detail,
        errors,
    };
    serde_json::to_vec(&problem).unwrap_or_default()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let spec = self.spec();
        let (status, retry_after) = (spec.status, spec.retry_after);
        let body = problem_body(&self, spec);
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(after) = retry_after {
            // Whole seconds, rounded up: `Retry-After: 0` would invite an immediate retry.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if status.is_server_error() {
            response.extensions_mut().insert(ProblemCause(self.to_string()));
        }
        response
    }
}

#[cfg(test)]
#[path = "error_tests.rs"]
mod tests;
