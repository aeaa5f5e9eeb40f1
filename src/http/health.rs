//! Liveness (the process answers) and readiness (it can take orders now).

use axum::Json;
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
    /// `ready` or `not_ready`.
    pub status: &'static str,
    pub database: Component,
    /// `disabled` when no `AMQP_URL` is set: events then wait in the outbox.
    pub broker: Component,
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
        Ok(()) => Component {
            status: "up",
            detail: Some(app.store.backend().to_owned()),
        },
        Err(_) => Component {
            status: "down",
            detail: Some(app.store.backend().to_owned()),
        },
    };
    let broker = match app.amqp_configured {
        false => Component {
            status: "disabled",
            detail: Some("AMQP_URL is not set; events wait in the outbox".into()),
        },
        true => Component {
            status: "up",
            detail: None,
        },
    };
    let ok = database.status == "up";
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Ready {
            status: if ok { "ready" } else { "not_ready" },
            database,
            broker,
        }),
    )
}
