//! The admin API, on its own address: inject and lift faults, read and reset counters.
//!
//! - `GET /__admin/faults` — active faults; `POST /__admin/faults` — inject one
//!   (`{"upstream":"product","key":"classic-box","fault":{"type":"delay","ms":1500},"duration_ms":30000}`);
//!   `DELETE /__admin/faults` — restore everything; `DELETE /__admin/faults/{id}` — lift one.
//! - `GET /__admin/stats` — calls per key, requests in flight; `POST /__admin/reset` — zero them.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use tokio::time::Instant;

use crate::faults::{ActiveFault, NewFault};
use crate::serve::Supervisors;
use crate::server::{Sim, Stats};

#[derive(Clone)]
struct Admin {
    sim: Arc<Sim>,
    /// Asked to put outages in force (or lift them) before a change is acknowledged.
    supervisors: Supervisors,
}

pub(crate) fn router(sim: Arc<Sim>, supervisors: Supervisors) -> Router {
    Router::new()
        .route("/__admin/faults", get(list).post(add).delete(restore))
        .route("/__admin/faults/{id}", delete(remove))
        .route("/__admin/stats", get(stats))
        .route("/__admin/reset", post(reset))
        .with_state(Admin { sim, supervisors })
}

async fn list(State(admin): State<Admin>) -> Json<Vec<ActiveFault>> {
    Json(admin.sim.faults.list(Instant::now()))
}

/// Injects a fault; an outage is in force (port closed, connections cut) when this answers.
async fn add(State(admin): State<Admin>, body: Result<Json<NewFault>, JsonRejection>) -> Response {
    let new = match body {
        Ok(Json(new)) => new,
        Err(rejection) => return bad_request(rejection.body_text()),
    };
    if let Err(e) = new.validate() {
        return bad_request(e.to_string());
    }
    let added = admin.sim.faults.add(new, Instant::now());
    admin.supervisors.enforce().await;
    (StatusCode::CREATED, Json(added)).into_response()
}

/// Lifts every fault; a port that was down listens again when this answers.
async fn restore(State(admin): State<Admin>) -> StatusCode {
    admin.sim.faults.clear();
    admin.supervisors.enforce().await;
    StatusCode::NO_CONTENT
}

async fn remove(State(admin): State<Admin>, Path(id): Path<u64>) -> StatusCode {
    let removed = admin.sim.faults.remove(id);
    admin.supervisors.enforce().await;
    if removed { StatusCode::NO_CONTENT } else { StatusCode::NOT_FOUND }
}

async fn stats(State(admin): State<Admin>) -> Json<Stats> {
    Json(admin.sim.stats())
}

async fn reset(State(admin): State<Admin>) -> StatusCode {
    admin.sim.reset();
    StatusCode::NO_CONTENT
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": message }))).into_response()
}
