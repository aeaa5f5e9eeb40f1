//! `POST /v1/orders` (and the older `POST /v1/order`), `GET /v1/orders/{id}`, `GET /v1/orders`.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, FieldError, Problem};
use super::extract::{JsonBody, NO_SUCH_ORDER, OrderIdPath, QueryParams};
use super::idempotency::{self, IDEMPOTENT_REPLAYED, Placed};
use super::replays::Replay;
use crate::domain::order::rfc3339;
use crate::domain::{ListFilter, MAX_PAGE};
use crate::domain::{Order, ProductCode, Upstream, UserId, ids};
use crate::telemetry::metrics;

/// Page size when `limit` is not given.
const DEFAULT_PAGE: u32 = 20;

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateOrder {
    /// user-service id: 1–64 of `[A-Za-z0-9_-]`.
    #[schema(example = "7c11e1ce2741", pattern = "^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64)]
    pub user_id: String,
    /// product-service code: 1–64 of `[A-Za-z0-9_-]`.
    #[schema(example = "classic-box", pattern = "^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64)]
    pub product_code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderResponse {
    /// UUIDv7.
    pub id: String,
    pub user_id: String,
    pub product_code: String,
    pub customer_fullname: String,
    pub product_name: String,
    /// Exact to the cent.
    #[schema(value_type = f64, example = 9.99)]
    pub total_amount: crate::domain::Money,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// Whether the `order.created` event has been confirmed by the broker.
    pub published: bool,
    /// The upstreams that were failing when the order was placed, whose last good answer
    /// (at most `{PREFIX}_STALE_IF_ERROR_MS` old) was used instead (stale-if-error); `[]` when
    /// both answers were live.
    #[schema(example = json!([]))]
    pub degraded: Vec<DegradedUpstream>,
}

/// An upstream whose stale answer placed the order.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DegradedUpstream {
    User,
    Product,
}

impl From<Upstream> for DegradedUpstream {
    fn from(upstream: Upstream) -> Self {
        match upstream {
            Upstream::User => DegradedUpstream::User,
            Upstream::Product => DegradedUpstream::Product,
        }
    }
}

impl From<Order> for OrderResponse {
    fn from(order: Order) -> Self {
        Self {
            id: order.id.to_string(),
            user_id: order.user_id,
            product_code: order.product_code,
            customer_fullname: order.customer_fullname,
            product_name: order.product_name,
            total_amount: order.total_amount,
            created_at: rfc3339(order.created_at),
            published: order.published,
            degraded: order.degraded.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    /// Oldest first.
    pub items: Vec<OrderResponse>,
    /// Pass as `after` for the next page; `null` on the last page.
    pub next_after: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this user's orders.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64)]
    pub user_id: Option<String>,
    /// 1 or more (values over 100 are capped at 100); default 20.
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    /// The `next_after` of the previous page.
    #[param(format = Uuid)]
    pub after: Option<String>,
}

/// Parses both ids, reporting every bad field at once.
fn parse_order_ids(body: &CreateOrder) -> Result<(UserId, ProductCode), ApiError> {
    match (UserId::parse(&body.user_id), ProductCode::parse(&body.product_code)) {
        (Ok(user), Ok(product)) => Ok((user, product)),
        (user, product) => {
            let mut errors = Vec::new();
            if let Err(e) = user {
                errors.push(FieldError { field: "user_id", reason: e.to_string() });
            }
            if let Err(e) = product {
                errors.push(FieldError { field: "product_code", reason: e.to_string() });
            }
            Err(ApiError::InvalidInput(errors))
        }
    }
}

/// Place an order: looks up the user and the product, stores the order and its event.
#[utoipa::path(
    post, path = "/v1/orders", tag = "orders",
    request_body = CreateOrder,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[A-Za-z0-9_.:+/=-]{1,255}$",
            description = "Retry-safe key (IETF draft): a repeat with the same body replays the first 201 \
                           (with `Idempotent-Replayed: true`) instead of placing a second order")),
    responses(
        (status = 201, description = "Order created, or replayed for a repeated Idempotency-Key", body = OrderResponse,
         headers(("Location" = String, description = "/v1/orders/{id}"),
                 ("Idempotent-Replayed" = String, description = "`true` when this is an earlier request's response"))),
        (status = 400, description = "Not JSON, wrong types, missing fields or a malformed Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive in time", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A request with this Idempotency-Key is still in flight", body = Problem, content_type = "application/problem+json",
         headers(("Retry-After" = u64, description = "seconds"))),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid id, unknown user or product, or an Idempotency-Key used for a different order", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "An upstream failed", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Circuit open, bulkhead full, overloaded or database unavailable", body = Problem, content_type = "application/problem+json",
         headers(("Retry-After" = u64, description = "seconds"))),
        (status = 504, description = "The order's deadline ran out", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_order(
    State(app): State<AppState>,
    headers: HeaderMap,
    replay: Option<Extension<Replay>>,
    JsonBody(body): JsonBody<CreateOrder>,
) -> Result<Response, ApiError> {
    let placed = place(&app, &headers, replay.map(|Extension(replay)| replay), &body).await;
    match &placed {
        Ok(Placed::New(_)) => metrics::order_created(),
        Ok(Placed::Replayed(_)) => metrics::order_replayed(),
        Err(error) => metrics::order_failed(error.slug()),
    }
    Ok(match placed? {
        Placed::New(order) => {
            let body = order_body(&order);
            (StatusCode::CREATED, [(header::LOCATION, location(order.id)), json()], body).into_response()
        }
        Placed::Replayed(stored) => {
            let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::CREATED);
            let replayed = (IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            (status, [(header::LOCATION, location(stored.order_id)), json(), replayed], stored.body).into_response()
        }
    })
}

async fn place(
    app: &AppState,
    headers: &HeaderMap,
    replay: Option<Replay>,
    body: &CreateOrder,
) -> Result<Placed, ApiError> {
    let key = idempotency::key_from(headers)?;
    let (user_id, product_code) = parse_order_ids(body)?;
    match (key, replay) {
        (Some(_), Some(Replay(completed))) => idempotency::replay_from_memory(&completed, &user_id, &product_code),
        (Some(key), None) => idempotency::place_once(app, key, &user_id, &product_code, order_body).await,
        (None, _) => Ok(Placed::New(app.orders.place_order(&user_id, &product_code, None).await?)),
    }
}

/// The 201 body; also what a completed idempotency key replays, byte for byte.
fn order_body(order: &Order) -> String {
    serde_json::to_string(&OrderResponse::from(order.clone())).unwrap_or_default()
}

fn location(id: Uuid) -> HeaderValue {
    HeaderValue::try_from(format!("/v1/orders/{id}")).unwrap_or(HeaderValue::from_static("/v1/orders"))
}

fn json() -> (HeaderName, HeaderValue) {
    (header::CONTENT_TYPE, HeaderValue::from_static("application/json"))
}

/// The older path of `POST /v1/orders`, same contract.
#[utoipa::path(
    post, path = "/v1/order", tag = "orders",
    request_body = CreateOrder,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[A-Za-z0-9_.:+/=-]{1,255}$",
            description = "As POST /v1/orders (keys are shared by both paths)")),
    responses((status = 201, description = "Order created (same as POST /v1/orders)", body = OrderResponse,
               headers(("Location" = String, description = "/v1/orders/{id}"))),
              (status = "4XX", description = "As POST /v1/orders", body = Problem, content_type = "application/problem+json"),
              (status = "5XX", description = "As POST /v1/orders", body = Problem, content_type = "application/problem+json"))
)]
pub async fn create_order_legacy(
    state: State<AppState>,
    headers: HeaderMap,
    replay: Option<Extension<Replay>>,
    body: JsonBody<CreateOrder>,
) -> Result<Response, ApiError> {
    create_order(state, headers, replay, body).await
}

/// One order by id.
#[utoipa::path(
    get, path = "/v1/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "Order id")),
    responses(
        (status = 200, description = "The order", body = OrderResponse),
        (status = 404, description = "No such order (also for an id that cannot be one: not a UUID, not UTF-8)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, or too many reads in flight (load-shed)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_order(
    State(app): State<AppState>,
    OrderIdPath(id): OrderIdPath,
) -> Result<Json<OrderResponse>, ApiError> {
    let order = app.store.get_order(id).await?.ok_or(ApiError::NotFound(NO_SUCH_ORDER))?;
    Ok(Json(order.into()))
}

/// Orders in creation order, keyset-paginated.
#[utoipa::path(
    get, path = "/v1/orders", tag = "orders",
    params(ListParams),
    responses(
        (status = 200, description = "A page of orders", body = OrderPage),
        (status = 400, description = "Query string does not parse", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid user_id, limit or after", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, or too many reads in flight (load-shed)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_orders(
    State(app): State<AppState>,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Json<OrderPage>, ApiError> {
    let filter = list_filter(params)?;
    let limit = filter.limit as usize;
    // One extra row tells whether another page exists, so `next_after` is exact.
    let mut orders = app.store.list_orders(&ListFilter { limit: filter.limit + 1, ..filter }).await?;
    let next_after = (orders.len() > limit).then(|| {
        orders.truncate(limit);
        orders.last().map(|o| o.id.to_string())
    });
    Ok(Json(OrderPage { items: orders.into_iter().map(Into::into).collect(), next_after: next_after.flatten() }))
}

fn list_filter(params: ListParams) -> Result<ListFilter, ApiError> {
    let mut errors = Vec::new();
    if let Some(Err(e)) = params.user_id.as_deref().map(ids::check_id) {
        errors.push(FieldError { field: "user_id", reason: e.to_string() });
    }
    let after = match params.after.as_deref().map(Uuid::parse_str) {
        Some(Err(_)) => {
            errors.push(FieldError { field: "after", reason: "must be an order id from next_after".into() });
            None
        }
        after => after.and_then(Result::ok),
    };
    let limit = params.limit.unwrap_or(i64::from(DEFAULT_PAGE));
    if limit < 1 {
        errors.push(FieldError { field: "limit", reason: "must be at least 1".into() });
    }
    if !errors.is_empty() {
        return Err(ApiError::InvalidInput(errors));
    }
    let limit = u32::try_from(limit.min(i64::from(MAX_PAGE))).unwrap_or(MAX_PAGE);
    Ok(ListFilter { user_id: params.user_id, after, limit })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(user_id: Option<&str>, limit: Option<i64>, after: Option<&str>) -> ListParams {
        ListParams { user_id: user_id.map(Into::into), limit, after: after.map(Into::into) }
    }

    #[test]
    fn limit_defaults_and_is_capped() {
        assert_eq!(list_filter(params(None, None, None)).map(|f| f.limit).ok(), Some(DEFAULT_PAGE));
        assert_eq!(list_filter(params(None, Some(5000), None)).map(|f| f.limit).ok(), Some(MAX_PAGE));
    }

    #[test]
    fn every_bad_list_parameter_is_reported() {
        let Err(ApiError::InvalidInput(errors)) = list_filter(params(Some("../x"), Some(0), Some("nope"))) else {
            panic!("expected invalid input");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["user_id", "after", "limit"]);
    }

    #[test]
    fn both_bad_ids_are_reported_together() {
        let body = CreateOrder { user_id: "".into(), product_code: "a/b".into() };
        let Err(ApiError::InvalidInput(errors)) = parse_order_ids(&body) else {
            panic!("expected invalid input");
        };
        assert_eq!(errors.len(), 2);
    }
}
