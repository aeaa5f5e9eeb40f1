//! `GET /docs`: interactive API documentation (Swagger UI) over `/openapi.json`.
//!
//! The UI's files are compiled into the binary (`utoipa-swagger-ui`, vendored): the page works
//! offline and loads nothing from a CDN. Served here rather than by the crate's own router so
//! that a missing file is a 404 problem like any other.

use std::sync::{Arc, LazyLock};

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Router, body::Body};
use utoipa_swagger_ui::Config;

use super::AppState;
use super::error::ApiError;

/// The UI reads the document the service already serves; no validator badge (it would call
/// validator.swagger.io).
static CONFIG: LazyLock<Arc<Config<'static>>> =
    LazyLock::new(|| Arc::new(Config::from("/openapi.json").validator_url("none").try_it_out_enabled(true)));

/// `/docs` (redirects to `/docs/`, so the page's relative links resolve), `/docs/` and its files.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/docs", get(|| async { Redirect::permanent("/docs/") }))
        .route("/docs/", get(|| file(String::new())))
        .route("/docs/{*file}", get(|Path(name): Path<String>| file(name)))
}

async fn file(name: String) -> Result<Response, ApiError> {
    let served = utoipa_swagger_ui::serve(&name, Arc::clone(&CONFIG))
        .map_err(|e| ApiError::Internal(format!("swagger ui: {e}")))?
        .ok_or(ApiError::NotFound("no such documentation file"))?;
    let content_type = HeaderValue::try_from(served.content_type).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = Response::new(Body::from(served.bytes.into_owned()));
    response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    if served.gzpipped {
        response.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(response.into_response())
}
