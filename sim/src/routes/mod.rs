//! The HTTP surface: which path and method goes to which handler, the body limit, and
//! FastAPI's own answers for unknown paths and methods.

mod control;
mod fastapi;
mod generate;
mod gradio;
mod meta;
pub mod triton;

use super::state::SimState;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::json;
use std::sync::Arc;

pub use gradio::router as gradio_router;

/// Largest request body accepted (prompt audio in multipart or base64 JSON).
pub const MAX_BODY: usize = 128 * 1024 * 1024;

/// Every route of the simulator; `/health` only with `json_health` (`--json-health`): FastAPI
/// has no such route.
pub fn router(state: Arc<SimState>, json_health: bool) -> Router {
    let mut app = Router::new();
    for route in fastapi::ROUTES {
        let handler =
            move |axum::extract::State(s): axum::extract::State<Arc<SimState>>,
                  req: axum::extract::Request| fastapi::inference(s, route, req);
        app = app.route(route.path, get(handler).post(handler));
    }
    if json_health {
        app = app.route("/health", get(meta::health));
    }
    app.route("/generate", post(generate::generate))
        .route("/docs", get(meta::docs))
        .route("/openapi.json", get(meta::openapi))
        .route("/__sim/stats", get(control::stats))
        .route("/__sim/last", get(control::last))
        .route("/__sim/fault", post(control::fault))
        .route("/__sim/reset", post(control::reset))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"detail": "Not Found"}))).into_response()
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({"detail": "Method Not Allowed"})),
    )
        .into_response()
}

/// Reads a whole request body, refusing one over [`MAX_BODY`] with 413.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            Json(json!({"detail": format!("request body over {MAX_BODY} bytes")})),
        )
            .into_response()
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        log::debug!("request body not read: {e}");
        if e.to_string().contains("length limit") {
            return too_large();
        }
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"detail": "There was an error reading the body"})),
        )
            .into_response()
    })
}
