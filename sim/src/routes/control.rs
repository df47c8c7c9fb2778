//! The test hooks under `/__sim/`: counters, the last synthesis request as received, armed
//! faults and a reset.

use crate::faults::FaultRequest;
use crate::state::SimState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

pub async fn stats(State(state): State<Arc<SimState>>) -> Response {
    Json(state.stats()).into_response()
}

/// The last synthesis request, or `null` before the first.
pub async fn last(State(state): State<Arc<SimState>>) -> Response {
    Json(state.last()).into_response()
}

pub async fn fault(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    match serde_json::from_slice::<FaultRequest>(&body) {
        Ok(f) => {
            log::info!(
                "fault armed: {:?} for the next {} synthesis requests",
                f.kind,
                f.count
            );
            state.faults.arm(f.kind, f.count);
            Json(json!({"ok": true})).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"ok": false, "error": format!("bad fault: {e}")})),
        )
            .into_response(),
    }
}

pub async fn reset(State(state): State<Arc<SimState>>) -> Response {
    state.reset();
    Json(json!({"ok": true})).into_response()
}
