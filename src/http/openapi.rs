//! `GET /openapi.json`: OpenAPI 3.1 of the public API, generated from the handlers themselves.

use axum::Json;
use utoipa::OpenApi;

use super::{health, orders};

#[derive(OpenApi)]
#[openapi(
    info(title = "order-service", description = "Resilient order API: orders, health and metrics."),
    paths(
        orders::create_order,
        orders::create_order_legacy,
        orders::get_order,
        orders::list_orders,
        health::live,
        health::ready,
        metrics_doc,
    ),
    tags((name = "orders"), (name = "health"), (name = "telemetry"))
)]
pub struct ApiDoc;

/// Prometheus text exposition of every metric of the service (names fixed in the contracts). On
/// this port only when neither `METRICS_ADDR` nor `ADMIN_ADDR` is set.
#[utoipa::path(get, path = "/metrics", tag = "telemetry",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
#[expect(dead_code, reason = "documents the /metrics route, which telemetry serves")]
fn metrics_doc() {}

pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
