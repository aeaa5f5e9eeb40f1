//! The one error type of the HTTP boundary, and the only place problem+json is built (RFC 9457).
//!
//! `type` is `/problems/{slug}`; clients switch on the slug. Internal causes never reach the
//! body: they ride in the response extensions as [`ProblemCause`] and are logged once by the
//! request middleware.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::PlaceOrderError;
use crate::storage::StoreError;
use crate::upstream::UpstreamError;

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
pub const SLUGS: [&str; 20] = [
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let spec = self.spec();
        let errors = match &self {
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
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (spec.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(after) = spec.retry_after {
            // Whole seconds, rounded up: `Retry-After: 0` would invite an immediate retry.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if spec.status.is_server_error() {
            response.extensions_mut().insert(ProblemCause(self.to_string()));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::strategy::LazyJust;

    use super::*;
    use crate::upstream::Upstream;

    async fn render(error: ApiError) -> (u16, Option<String>, serde_json::Value, bool) {
        let response = error.into_response();
        let status = response.status().as_u16();
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
        let retry = response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let has_cause = response.extensions().get::<ProblemCause>().is_some();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.expect("body");
        (status, retry, serde_json::from_slice(&body).expect("problem json"), has_cause)
    }

    #[tokio::test]
    async fn each_failure_maps_to_the_design_table() {
        let upstream = |source| ApiError::PlaceOrder(PlaceOrderError::Upstream { upstream: Upstream::Product, source });
        let cases: Vec<(ApiError, u16, &str, bool)> = vec![
            (ApiError::MalformedRequest("x".into()), 400, "malformed-request", false),
            (ApiError::PayloadTooLarge, 413, "payload-too-large", false),
            (ApiError::UnsupportedMediaType, 415, "unsupported-media-type", false),
            (ApiError::Overloaded, 503, "load-shed", true),
            (ApiError::KeyReused, 422, "idempotency-key-reused", false),
            (ApiError::KeyInFlight { retry_after: Duration::from_secs(20) }, 409, "idempotency-key-in-flight", true),
            (StoreError::KeyLeaseLost.into(), 409, "idempotency-key-in-flight", true),
            (ApiError::BodyTimeout, 408, "request-timeout", false),
            (ApiError::InvalidInput(vec![]), 422, "invalid-input", false),
            (PlaceOrderError::UnknownUser.into(), 422, "unknown-user", false),
            (PlaceOrderError::UnknownProduct.into(), 422, "unknown-product", false),
            (upstream(UpstreamError::ServerError(500)), 502, "upstream-error", false),
            (upstream(UpstreamError::InvalidResponse("x".into())), 502, "upstream-error", false),
            (upstream(UpstreamError::Connect("refused".into())), 502, "upstream-error", false),
            (upstream(UpstreamError::Timeout), 504, "upstream-timeout", false),
            (PlaceOrderError::DeadlineExceeded.into(), 504, "deadline-exceeded", false),
            (
                upstream(UpstreamError::CircuitOpen { retry_after: Duration::from_millis(2500) }),
                503,
                "circuit-open",
                true,
            ),
            (upstream(UpstreamError::BulkheadFull), 503, "bulkhead-full", true),
            (
                upstream(UpstreamError::RetryBudgetExhausted(Box::new(UpstreamError::ServerError(500)))),
                503,
                "retry-budget-exhausted",
                true,
            ),
            (upstream(UpstreamError::UnexpectedStatus(400)), 502, "upstream-error", false),
            (StoreError::Unavailable(sqlx::Error::PoolTimedOut).into(), 503, "database-unavailable", true),
            (StoreError::Query(sqlx::Error::RowNotFound).into(), 500, "internal-error", false),
        ];
        for (error, status, slug, has_retry_after) in cases {
            let name = format!("{error:?}");
            let (got, retry, body, has_cause) = render(error).await;
            assert_eq!(got, status, "{name}");
            assert_eq!(body["status"], status, "{name}");
            assert_eq!(body["type"], format!("/problems/{slug}"), "{name}");
            assert!(SLUGS.contains(&slug), "{slug} is registered at zero");
            assert!(body["title"].is_string() && body["detail"].is_string(), "{name}");
            assert_eq!(retry.is_some(), has_retry_after, "{name}");
            assert_eq!(has_cause, status >= 500, "causes are kept for 5xx only: {name}");
        }
    }

    #[tokio::test]
    async fn internal_causes_stay_out_of_the_body() {
        let error = ApiError::Store(StoreError::Query(sqlx::Error::ColumnNotFound("secret table xyz".into())));
        let (status, _, body, has_cause) = render(error).await;
        assert_eq!(status, 500);
        assert!(has_cause);
        assert!(!body.to_string().contains("secret"), "{body}");
    }

    #[tokio::test]
    async fn retry_after_is_whole_seconds_rounded_up() {
        let (_, retry, _, _) = render(StoreError::Unavailable(sqlx::Error::PoolTimedOut).into()).await;
        assert_eq!(retry.as_deref(), Some("1"));
        let open = |ms| {
            ApiError::PlaceOrder(PlaceOrderError::Upstream {
                upstream: Upstream::Product,
                source: UpstreamError::CircuitOpen { retry_after: Duration::from_millis(ms) },
            })
        };
        assert_eq!(render(open(2500)).await.1.as_deref(), Some("3"));
        assert_eq!(render(open(3000)).await.1.as_deref(), Some("3"));
        assert_eq!(render(open(10)).await.1.as_deref(), Some("1"));
    }

    /// Internal text a failure may carry (addresses, SQL, parser messages); never for clients.
    const SECRET: &str = "SECRET-internal-10.1.2.3";

    fn upstream_error() -> impl Strategy<Value = UpstreamError> {
        let leaf = prop_oneof![
            (100u16..600).prop_map(UpstreamError::ServerError),
            Just(UpstreamError::Timeout),
            ".*".prop_map(|s| UpstreamError::Connect(format!("{SECRET}{s}"))),
            ".*".prop_map(|s| UpstreamError::InvalidResponse(format!("{s}{SECRET}"))),
            (400u16..500).prop_map(UpstreamError::UnexpectedStatus),
            Just(UpstreamError::DeadlineExceeded),
            (0u64..120_000).prop_map(|ms| UpstreamError::CircuitOpen { retry_after: Duration::from_millis(ms) }),
            Just(UpstreamError::BulkheadFull),
        ];
        leaf.prop_recursive(2, 4, 1, |inner| inner.prop_map(|e| UpstreamError::RetryBudgetExhausted(Box::new(e))))
    }

    fn api_error() -> impl Strategy<Value = ApiError> {
        let sqlx_error = prop_oneof![
            LazyJust::new(|| sqlx::Error::PoolTimedOut),
            ".*".prop_map(|s| sqlx::Error::Protocol(format!("{SECRET}{s}"))),
            ".*".prop_map(|s| sqlx::Error::ColumnNotFound(format!("{SECRET}{s}"))),
        ];
        let store = sqlx_error.prop_map(StoreError::from);
        let upstream = prop_oneof![Just(Upstream::User), Just(Upstream::Product)];
        prop_oneof![
            ".*".prop_map(ApiError::MalformedRequest),
            LazyJust::new(|| ApiError::PayloadTooLarge),
            LazyJust::new(|| ApiError::UnsupportedMediaType),
            LazyJust::new(|| {
                ApiError::InvalidInput(vec![FieldError { field: "user_id", reason: "must not be empty".into() }])
            }),
            LazyJust::new(|| ApiError::NotFound("no such resource")),
            LazyJust::new(|| ApiError::MethodNotAllowed),
            LazyJust::new(|| ApiError::KeyReused),
            (0..100_000u64).prop_map(|ms| ApiError::KeyInFlight { retry_after: Duration::from_millis(ms) }),
            LazyJust::new(|| ApiError::BodyTimeout),
            LazyJust::new(|| ApiError::Overloaded),
            ".*".prop_map(|s| ApiError::Internal(format!("{SECRET}{s}"))),
            LazyJust::new(|| ApiError::PlaceOrder(PlaceOrderError::UnknownUser)),
            LazyJust::new(|| ApiError::PlaceOrder(PlaceOrderError::UnknownProduct)),
            LazyJust::new(|| ApiError::PlaceOrder(PlaceOrderError::DeadlineExceeded)),
            (upstream, upstream_error())
                .prop_map(|(upstream, source)| ApiError::PlaceOrder(PlaceOrderError::Upstream { upstream, source })),
            store.clone().prop_map(|e| ApiError::PlaceOrder(PlaceOrderError::Store(e))),
            store.prop_map(ApiError::Store),
            LazyJust::new(|| ApiError::Store(StoreError::KeyLeaseLost)),
        ]
    }

    proptest! {
        /// Whatever fails, the client gets a well-formed problem with a status from the
        /// design's table, `Retry-After` exactly on the statuses that invite a retry, and no
        /// internal text; the internal cause is kept (for the log) on every 5xx.
        #[test]
        fn every_failure_renders_a_well_formed_problem_without_internal_text(error in api_error()) {
            let client_text = matches!(error, ApiError::MalformedRequest(_));
            let name = format!("{error:?}");
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let (status, retry, body, has_cause) = runtime.block_on(render(error));
            prop_assert!([400, 404, 405, 408, 409, 413, 415, 422, 500, 502, 503, 504].contains(&status), "{name}");
            prop_assert_eq!(&body["status"], &serde_json::json!(status));
            let slug = body["type"].as_str().and_then(|t| t.strip_prefix("/problems/")).unwrap_or_default();
            prop_assert!(!slug.is_empty() && slug.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'), "{body}");
            prop_assert!(SLUGS.contains(&slug), "{slug} is missing from SLUGS (its series would start late)");
            prop_assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()), "{body}");
            prop_assert!(body["detail"].is_string(), "{body}");
            prop_assert_eq!(retry.is_some(), status == 503 || status == 409, "{}", name);
            if let Some(retry) = retry {
                prop_assert!(retry.parse::<u64>().is_ok_and(|s| s >= 1), "Retry-After {retry}");
            }
            prop_assert_eq!(has_cause, status >= 500);
            if !client_text {
                prop_assert!(!body.to_string().contains(SECRET), "{name} leaked: {body}");
            }
        }
    }
}
