//! The admin API, served only on `ADMIN_ADDR` (never on the public port): every breaker read
//! and forced, the resilience settings reloaded, and `/metrics` (docs/contracts.md, "Admin API";
//! docs/tail-latency.md has a curl for each). Changes are logged and counted where they are made
//! (the breaker handle, the reloader).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, FieldError};
use super::extract::JsonBody;
use super::{AppState, render_metrics};
use crate::ops::{BreakerMode, BreakerPanel, Reload, ReloadReport};

#[derive(Clone)]
struct Admin {
    app: AppState,
    reload: Arc<dyn Reload>,
}

/// One upstream's breakers: `{"state", "mode", "open_keys"}`.
#[derive(Debug, Serialize)]
pub struct BreakerView {
    /// The upstream-wide breaker: `closed`, `open` or `half_open`.
    pub state: &'static str,
    /// `auto`, `forced_open` or `forced_closed`.
    pub mode: &'static str,
    /// Keys (user ids, product codes) whose own breaker is open or half-open.
    pub open_keys: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct SetMode {
    mode: String,
}

#[derive(Debug, Serialize)]
struct Reloaded {
    changed: Vec<Changed>,
    restart_required: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Changed {
    variable: String,
    from: Option<String>,
    to: Option<String>,
}

/// `/admin/*` and `/metrics`; anything else is a 404 problem.
pub fn admin_router(app: AppState, reload: Arc<dyn Reload>) -> Router {
    Router::new()
        .route("/admin/breakers", get(list_breakers))
        .route("/admin/breakers/{upstream}", put(set_breaker_mode))
        .route("/admin/reload", post(reload_settings))
        .route("/metrics", get(render_metrics).with_state(app.clone()))
        .fallback(|| async { ApiError::NotFound("no such resource") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(Admin { app, reload })
}

fn view(panel: &dyn BreakerPanel) -> BreakerView {
    let report = panel.report();
    BreakerView { state: report.state, mode: report.mode.as_str(), open_keys: panel.open_keys() }
}

/// Every upstream's breakers, by upstream name.
async fn list_breakers(State(admin): State<Admin>) -> Json<BTreeMap<&'static str, BreakerView>> {
    Json(admin.app.breakers.iter().map(|panel| (panel.report().upstream, view(panel.as_ref()))).collect())
}

/// Forces an upstream's breakers open or closed, or hands them back (`auto`).
async fn set_breaker_mode(
    State(admin): State<Admin>,
    Path(upstream): Path<String>,
    JsonBody(body): JsonBody<SetMode>,
) -> Result<Json<BreakerView>, ApiError> {
    let panel = admin
        .app
        .breakers
        .iter()
        .find(|panel| panel.report().upstream == upstream)
        .ok_or(ApiError::NotFound("no such upstream"))?;
    let mode = BreakerMode::parse(&body.mode).ok_or_else(|| {
        let reason = format!("must be one of {}", BreakerMode::LABELS.join(", "));
        ApiError::InvalidInput(vec![FieldError { field: "mode", reason }])
    })?;
    panel.set_mode(mode);
    Ok(Json(view(panel.as_ref())))
}

/// Re-reads the resilience settings (what `SIGHUP` does too).
async fn reload_settings(State(admin): State<Admin>) -> Result<Json<Reloaded>, ApiError> {
    // Reading a small file and swapping a few stacks: quick, but off the async workers anyway.
    let reload = Arc::clone(&admin.reload);
    let result = tokio::task::spawn_blocking(move || reload.reload("admin"))
        .await
        .map_err(|e| ApiError::Internal(format!("reload task: {e}")))?;
    let ReloadReport { changed, restart_required } = result.map_err(ApiError::InvalidSettings)?;
    let changed = changed.into_iter().map(|c| Changed { variable: c.variable, from: c.from, to: c.to }).collect();
    Ok(Json(Reloaded { changed, restart_required }))
}
