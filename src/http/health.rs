//! Liveness (the process answers) and readiness (it can take orders now).

use axum::Json;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Live {
    /// Always `live`.
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// `ready`, `not_ready` (database down) or `draining` (shutting down).
    pub status: &'static str,
    pub database: Component,
    /// The outbox relay's broker connection: `up`, `down` (reconnecting; orders still succeed)
    /// or `disabled` when no `AMQP_URL` is set (events wait in the outbox). `detail` carries the
    /// pending-event count as of the relay's last pass.
    pub broker: Component,
    /// Each upstream's breakers. An open breaker never makes the service unready: failing
    /// fast is the service working as designed, and restarting it would not help.
    pub breakers: Vec<BreakerReport>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BreakerReport {
    /// `user` or `product`.
    pub upstream: &'static str,
    /// The upstream-wide breaker: `closed`, `open` or `half_open` (a forced breaker reads as
    /// what it does).
    pub state: &'static str,
    /// `auto`, or `forced_open` / `forced_closed` while an operator holds it (admin API).
    #[schema(example = "auto")]
    pub mode: &'static str,
    /// Per-key breakers currently open or half-open.
    pub keys_open: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Component {
    /// `up`, `down` or `disabled`.
    pub status: &'static str,
    /// The backend or a short reason; never a URL or credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The process is running and serving HTTP.
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, body = Live)))]
pub async fn live() -> Json<Live> {
    Json(Live { status: "live" })
}

/// Ready to take orders: the database answers. The broker does not gate readiness, because a
/// broker outage never fails an order (events wait in the outbox).
#[utoipa::path(
    get, path = "/health/ready", tag = "health",
    responses((status = 200, description = "Ready", body = Ready), (status = 503, description = "Not ready", body = Ready))
)]
pub async fn ready(State(app): State<AppState>) -> (StatusCode, Json<Ready>) {
    let database = match app.store.ping().await {
        Ok(()) => Component { status: "up", detail: Some(app.store.backend().to_owned()) },
        Err(_) => Component { status: "down", detail: Some(app.store.backend().to_owned()) },
    };
    let broker = match &app.relay {
        None => Component { status: "disabled", detail: Some("AMQP_URL is not set; events wait in the outbox".into()) },
        Some(relay) => Component {
            // `starting` (not connected yet) is reported as `down`: nothing is being published.
            status: if relay.broker() == "up" { "up" } else { "down" },
            detail: relay.pending().map(|pending| format!("{pending} events pending")),
        },
    };
    let breakers = app
        .breakers
        .iter()
        .map(|panel| {
            let report = panel.report();
            BreakerReport {
                upstream: report.upstream,
                state: report.state,
                mode: report.mode.as_str(),
                keys_open: report.keys_open,
            }
        })
        .collect();
    let draining = app.draining.load(Ordering::Relaxed);
    let ok = database.status == "up" && !draining;
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let word = match (ok, draining) {
        (true, _) => "ready",
        (false, true) => "draining",
        (false, false) => "not_ready",
    };
    (status, Json(Ready { status: word, database, broker, breakers }))
}
