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
use crate::server::{Sim, Stats};

pub(crate) fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/__admin/faults", get(list).post(add).delete(restore))
        .route("/__admin/faults/{id}", delete(remove))
        .route("/__admin/stats", get(stats))
        .route("/__admin/reset", post(reset))
        .with_state(sim)
}

async fn list(State(sim): State<Arc<Sim>>) -> Json<Vec<ActiveFault>> {
    Json(sim.faults.list(Instant::now()))
}

async fn add(State(sim): State<Arc<Sim>>, body: Result<Json<NewFault>, JsonRejection>) -> Response {
    let new = match body {
        Ok(Json(new)) => new,
        Err(rejection) => return bad_request(rejection.body_text()),
    };
    if let Err(e) = new.validate() {
        return bad_request(e.to_string());
    }
    (StatusCode::CREATED, Json(sim.faults.add(new, Instant::now()))).into_response()
}

async fn restore(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.faults.clear();
    StatusCode::NO_CONTENT
}

async fn remove(State(sim): State<Arc<Sim>>, Path(id): Path<u64>) -> StatusCode {
    if sim.faults.remove(id) { StatusCode::NO_CONTENT } else { StatusCode::NOT_FOUND }
}

async fn stats(State(sim): State<Arc<Sim>>) -> Json<Stats> {
    Json(sim.stats())
}

async fn reset(State(sim): State<Arc<Sim>>) -> StatusCode {
    sim.reset();
    StatusCode::NO_CONTENT
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": message }))).into_response()
}
