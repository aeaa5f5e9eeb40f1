//! Extractors whose rejections are problems too, so a bad request never gets a plain-text error.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::ApiError;

/// A JSON **object** body as `T`, with 400 / 408 / 413 / 415 problems instead of axum's text
/// rejections. Objects only: serde would otherwise accept `["a","b"]` for a struct.
pub struct JsonBody<T>(pub T);

/// How long a whole body may take to arrive, set by the router for every request.
#[derive(Debug, Clone, Copy)]
pub struct BodyReadTimeout(pub Duration);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = req.extensions().get::<BodyReadTimeout>().map_or(Duration::from_secs(10), |t| t.0);
        let body = tokio::time::timeout(limit, Bytes::from_request(req, state))
            .await
            .map_err(|_| ApiError::BodyTimeout)?
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::MalformedRequest(rejection.body_text())
                }
            })?;
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::MalformedRequest("the body must be a JSON object".into()));
        }
        serde_json::from_slice(&body)
            .map(JsonBody)
            .map_err(|e| ApiError::MalformedRequest(format!("invalid JSON body: {e}")))
    }
}

/// `application/json` or any `+json` type, parameters (charset) allowed.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// `Query<T>` with a 400 problem when the query string does not parse.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| QueryParams(value))
            .map_err(|rejection: QueryRejection| ApiError::MalformedRequest(rejection.body_text()))
    }
}

/// The `{id}` of `/v1/orders/{id}` as an order id. An id that cannot be one (not a UUID, or not
/// even UTF-8 once percent-decoded) is a 404 like an unknown order, never axum's plain-text 400.
pub struct OrderIdPath(pub Uuid);

/// The 404 detail for an order id that names no order.
pub const NO_SUCH_ORDER: &str = "no order with this id";

impl<S: Send + Sync> FromRequestParts<S> for OrderIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state).await.map_err(
            |rejection| match rejection {
                // The route has no `{id}`: a bug here, not the client's fault.
                PathRejection::MissingPathParams(e) => ApiError::Internal(e.body_text()),
                _ => ApiError::NotFound(NO_SUCH_ORDER),
            },
        )?;
        Uuid::parse_str(&raw).map(OrderIdPath).map_err(|_| ApiError::NotFound(NO_SUCH_ORDER))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types_are_recognised() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().expect("header"));
            is_json(&headers)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/jsonx"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
