//! The mapping of every failure to its problem, and that no internal text reaches a client.

use proptest::prelude::*;
use proptest::strategy::LazyJust;

use super::*;
use crate::domain::Upstream;

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
        (upstream(UpstreamError::CircuitOpen { retry_after: Duration::from_millis(2500) }), 503, "circuit-open", true),
        (upstream(UpstreamError::BulkheadFull), 503, "bulkhead-full", true),
        (
            upstream(UpstreamError::RetryBudgetExhausted(Box::new(UpstreamError::ServerError(500)))),
            503,
            "retry-budget-exhausted",
            true,
        ),
        (upstream(UpstreamError::UnexpectedStatus(400)), 502, "upstream-error", false),
        (StoreError::Unavailable("pool timed out".into()).into(), 503, "database-unavailable", true),
        (StoreError::Query("no rows".into()).into(), 500, "internal-error", false),
        (ApiError::InvalidSettings("invalid X: y".into()), 422, "invalid-settings", false),
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
    let error = ApiError::Store(StoreError::Query("column secret table xyz not found".into()));
    let (status, _, body, has_cause) = render(error).await;
    assert_eq!(status, 500);
    assert!(has_cause);
    assert!(!body.to_string().contains("secret"), "{body}");
}

#[tokio::test]
async fn retry_after_is_whole_seconds_rounded_up() {
    let (_, retry, _, _) = render(StoreError::Unavailable("pool timed out".into()).into()).await;
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
        ".*".prop_map(ApiError::InvalidSettings),
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
        let client_text = matches!(error, ApiError::MalformedRequest(_) | ApiError::InvalidSettings(_));
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
