//! The HTTP layer: routes, extractors, problem+json errors, health and OpenAPI, and the admin
//! API on its own address.

pub mod admin;
pub mod admission;
mod docs;
pub mod error;
mod extract;
pub mod health;
pub mod idempotency;
mod observe;
pub mod openapi;
pub mod orders;
pub mod replays;
pub mod serve;

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Extension;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Response};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Router, middleware};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use axum::extract::State;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::{HttpConfig, IdempotencyConfig};
use crate::domain::{OrderService, OrderStore};
use crate::ops::{BreakerPanel, BrokerStatus};
use admission::Admission;
use error::ApiError;
use extract::BodyLimits;

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub orders: OrderService,
    pub store: Arc<dyn OrderStore>,
    /// The relay's broker connection; `None` when no `AMQP_URL` is set (relay off).
    pub relay: Option<BrokerStatus>,
    /// Each upstream's breakers, for readiness and `/metrics`.
    pub breakers: Vec<Arc<dyn BreakerPanel>>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Set when shutdown begins: readiness turns false at once so traffic moves elsewhere.
    pub draining: Arc<AtomicBool>,
    /// How long idempotency keys are leased and kept.
    pub keys: IdempotencyConfig,
    /// The keys this replica completed, so their replays are cheap ([`replays`]).
    pub replays: replays::CompletedKeys,
}

/// The whole API, with `/metrics` unless it has an address of its own ([`metrics_router`]).
/// Layers, outermost first: a `/v1` request whose limit is full is refused at once
/// ([`admission::shed`]) → request id (kept if the client sent a short plain one) → echo it on the
/// response → span + log line + metrics → panics become 500 problems; the `/v1` routes also
/// pass [`admission`] (separate read and write limits; a write's body is read before its permit).
pub fn router(state: AppState, limits: &HttpConfig, with_metrics: bool) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let body = BodyLimits { max_bytes: limits.body_limit_bytes, read_timeout: limits.body_read_timeout };
    let on_change = Box::new(crate::telemetry::metrics::concurrency_limit());
    let gate = Admission::new(limits.max_reads_in_flight, &limits.write_limit, body, on_change);
    let shed = admission::shed::ShedLayer::new(&gate, limits.shed_delay, state.replays.clone());
    let api = Router::new()
        .route("/v1/orders", post(orders::create_order).get(orders::list_orders))
        .route("/v1/order", post(orders::create_order_legacy))
        .route("/v1/orders/{id}", get(orders::get_order))
        .route_layer(middleware::from_fn_with_state(gate, admission::admit));
    let mut routes = Router::new()
        .merge(api)
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(docs::router());
    if with_metrics {
        routes = routes.route("/metrics", get(render_metrics));
    }
    routes
        .fallback(|| async { ApiError::NotFound("no such resource") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(limits.body_limit_bytes))
        .layer(Extension(body))
        .layer(
            ServiceBuilder::new()
                .map_request(observe::drop_unusable_request_id)
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(middleware::from_fn(observe::observe))
                .layer(CatchPanicLayer::custom(panic_to_problem)),
        )
        .layer(shed)
        .with_state(state)
}

fn panic_to_problem(panic: Box<dyn Any + Send + 'static>) -> Response<axum::body::Body> {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned());
    ApiError::Internal(message).into_response()
}

/// `/metrics` alone, for `METRICS_ADDR` (a private interface, say); anything else is a 404.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .fallback(|| async { ApiError::NotFound("no such resource") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}

/// Prometheus text exposition: on the API port, or on `METRICS_ADDR` when set. The breakers
/// are read first, so their gauges say what they are now, not what they were at the last call.
async fn render_metrics(State(app): State<AppState>) -> impl IntoResponse {
    for breakers in &app.breakers {
        breakers.report();
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], app.metrics.render())
}
