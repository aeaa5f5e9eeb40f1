//! Extractors whose rejections are problems too, so a bad request never gets a plain-text error.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::ApiError;

/// A JSON **object** body as `T`, with 400 / 408 / 413 / 415 problems instead of axum's text
/// rejections. Objects only: serde would otherwise accept `["a","b"]` for a struct.
pub struct JsonBody<T>(pub T);

/// How large a request body may be and how long it may take to arrive; set by the router for
/// every request, so a slow or huge body holds no task or memory for long.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub read_timeout: Duration,
}

impl BodyLimits {
    /// 413 at once when the declared `Content-Length` is over the limit: nothing is read.
    pub fn check_declared(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        match declared {
            Some(length) if length > self.max_bytes as u64 => Err(ApiError::PayloadTooLarge),
            _ => Ok(()),
        }
    }

    /// The whole body, within the size limit (413) and the read timeout (408).
    pub async fn read(&self, body: Body) -> Result<Bytes, ApiError> {
        let limited = http_body_util::Limited::new(body, self.max_bytes);
        match tokio::time::timeout(self.read_timeout, limited.collect()).await {
            Err(_) => Err(ApiError::BodyTimeout),
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(ApiError::PayloadTooLarge),
            Ok(Err(error)) => Err(ApiError::MalformedRequest(format!("failed to read the request body: {error}"))),
        }
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limits = req
            .extensions()
            .get::<BodyLimits>()
            .copied()
            .unwrap_or(BodyLimits { max_bytes: 16 * 1024, read_timeout: Duration::from_secs(10) });
        limits.check_declared(req.headers())?;
        let body = limits.read(req.into_body()).await?;
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
