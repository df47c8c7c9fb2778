//! `--serve triton`: KServe v2 over HTTP as Triton serves it. `GET /v2/health/ready`,
//! `/v2/health/live`, `/v2/models/{model}` (metadata), `/v2/models/{model}/ready`, and
//! `POST /v2/models/{model}/infer`, with the binary tensor extension (JSON header, then raw
//! tensors; `Inference-Header-Content-Length`) or pure JSON `data` arrays (CosyVoice's
//! `client_http.py`). A decoupled model (`--decoupled`) answers `/infer` with 501, as Triton
//! does. Errors are `{"error": "..."}`. The `/__sim/*` hooks work as in the FastAPI mode.

use super::{control, read_body};
use crate::faults::{self, FaultKind};
use crate::model::Pacer;
use crate::state::{LastRequest, SimState};
use crate::triton::{self, Inputs, TritonConf, DECOUPLED_HTTP_ERROR};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRef, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;

/// KServe's header naming the JSON part's length in a binary-extension body.
const IHCL: &str = "inference-header-content-length";

/// The router's state: the simulator and the Triton settings.
#[derive(Clone)]
pub struct TritonState {
    pub sim: Arc<SimState>,
    pub conf: Arc<TritonConf>,
}

impl FromRef<TritonState> for Arc<SimState> {
    fn from_ref(s: &TritonState) -> Self {
        Arc::clone(&s.sim)
    }
}

/// Every route of the Triton mode.
pub fn router(sim: Arc<SimState>, conf: Arc<TritonConf>) -> Router {
    Router::new()
        .route("/v2/health/ready", get(ok))
        .route("/v2/health/live", get(ok))
        .route("/v2/models/{model}", get(metadata))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route("/v2/models/{model}/infer", post(infer))
        .route("/__sim/stats", get(control::stats))
        .route("/__sim/last", get(control::last))
        .route("/__sim/fault", post(control::fault))
        .route("/__sim/reset", post(control::reset))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "Not Found") })
        .layer(DefaultBodyLimit::max(super::MAX_BODY))
        .with_state(TritonState { sim, conf })
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

fn unknown_model(model: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("Request for unknown model: '{model}' is not found"),
    )
}

async fn ok() -> StatusCode {
    StatusCode::OK
}

async fn model_ready(State(s): State<TritonState>, Path(model): Path<String>) -> Response {
    if model == s.conf.model {
        StatusCode::OK.into_response()
    } else {
        unknown_model(&model)
    }
}

/// The model's metadata, shaped as CosyVoice's `config.pbtxt` declares it.
pub fn metadata_json(model: &str) -> Value {
    json!({
        "name": model,
        "versions": ["1"],
        "platform": "python",
        "inputs": [
            {"name": "reference_wav", "datatype": "FP32", "shape": [-1, -1]},
            {"name": "reference_wav_len", "datatype": "INT32", "shape": [-1, 1]},
            {"name": "reference_text", "datatype": "BYTES", "shape": [-1, 1]},
            {"name": "target_text", "datatype": "BYTES", "shape": [-1, 1]},
        ],
        "outputs": [{"name": "waveform", "datatype": "FP32", "shape": [-1, -1]}],
    })
}

async fn metadata(State(s): State<TritonState>, Path(model): Path<String>) -> Response {
    if model != s.conf.model {
        return unknown_model(&model);
    }
    Json(metadata_json(&model)).into_response()
}

/// Decodes an `/infer` body: binary extension when `json_len` is given, else pure JSON.
/// Returns the inputs and whether the waveform is wanted as binary.
fn parse(body: &[u8], json_len: Option<usize>) -> Result<(Inputs, bool), String> {
    let json_len = json_len.unwrap_or(body.len());
    let head = body
        .get(..json_len)
        .ok_or("Inference-Header-Content-Length exceeds the body")?;
    let header: Value =
        serde_json::from_slice(head).map_err(|e| format!("failed to parse the request JSON: {e}"))?;
    let mut inputs = Inputs::default();
    let mut cursor = json_len;
    for input in header
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or("missing 'inputs'")?
    {
        let name = input
            .get("name")
            .and_then(Value::as_str)
            .ok_or("input without a name")?;
        let dtype = input
            .get("datatype")
            .and_then(Value::as_str)
            .ok_or("input without a datatype")?;
        let size = input
            .pointer("/parameters/binary_data_size")
            .and_then(Value::as_u64);
        if let Some(size) = size {
            let size = usize::try_from(size).map_err(|_| "binary_data_size too large")?;
            let end = cursor
                .checked_add(size)
                .filter(|e| *e <= body.len())
                .ok_or_else(|| format!("unexpected size for input '{name}': the body is too short"))?;
            inputs.set_raw(name, dtype, &body[cursor..end])?;
            cursor = end;
            continue;
        }
        let data = input.get("data").ok_or(format!("input '{name}' has no data"))?;
        let flat: Vec<&Value> = flatten(data);
        match (name, dtype) {
            ("reference_wav", "FP32") => {
                inputs.reference_wav = flat
                    .iter()
                    .map(|v| v.as_f64().map(|f| f as f32).ok_or("reference_wav: not a number"))
                    .collect::<Result<_, _>>()?;
            }
            ("reference_wav_len", "INT32") => {
                let n = flat
                    .first()
                    .and_then(|v| v.as_i64())
                    .ok_or("reference_wav_len: not a number")?;
                inputs.reference_wav_len =
                    Some(i32::try_from(n).map_err(|_| "reference_wav_len out of range")?);
            }
            ("reference_text" | "target_text", "BYTES") => {
                let text = flat
                    .first()
                    .and_then(|v| v.as_str())
                    .ok_or(format!("{name}: not a string"))?;
                inputs.set_text(name, text.to_string());
            }
            _ => return Err(format!("unexpected input '{name}' of type {dtype}")),
        }
    }
    if cursor != body.len() {
        return Err("the body has bytes no input claims".into());
    }
    let wanted_binary = header
        .get("outputs")
        .and_then(Value::as_array)
        .and_then(|outs| {
            outs.iter()
                .find(|o| o.get("name").and_then(Value::as_str) == Some("waveform"))
        })
        .and_then(|o| o.pointer("/parameters/binary_data"))
        .and_then(Value::as_bool)
        .or_else(|| {
            header
                .pointer("/parameters/binary_data_output")
                .and_then(Value::as_bool)
        })
        .unwrap_or(false);
    Ok((inputs, wanted_binary))
}

fn flatten(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(items) => items.iter().flat_map(flatten).collect(),
        other => vec![other],
    }
}

async fn infer(State(s): State<TritonState>, Path(model): Path<String>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match read_body(&parts.headers, body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let state = &s.sim;
    let json_len = parts
        .headers
        .get(IHCL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let parsed = parse(&body, json_len);
    let mut last = LastRequest::new(&format!("/v2/models/{model}/infer"), "POST", body.len())
        .with_request_id(&parts.headers);
    if let Ok((inputs, _)) = &parsed {
        last = last.with_triton(inputs);
    }
    state.received(last);
    if model != s.conf.model {
        return unknown_model(&model);
    }
    if s.conf.decoupled {
        return error(StatusCode::NOT_IMPLEMENTED, DECOUPLED_HTTP_ERROR);
    }
    let (inputs, binary) = match parsed {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    if let Err(e) = inputs.validate() {
        return error(StatusCode::BAD_REQUEST, &e);
    }
    let fault = state.faults.take();
    match fault {
        Some(FaultKind::Error500) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "simulated model failure (fault injected)",
            )
        }
        Some(FaultKind::Crash) => faults::crash(),
        Some(FaultKind::Hang) => {
            let _slot = state.capacity.enter();
            std::future::pending::<()>().await;
        }
        Some(FaultKind::Endless) => return endless(state),
        Some(FaultKind::Truncate) | None => {}
    }
    let guard = state.capacity.enter();
    let chunks = triton::chunks(state, &inputs.job());
    let mut pacer = Pacer::new(Arc::clone(&state.capacity));
    for (_, work) in &chunks {
        pacer.work(*work).await;
    }
    drop(guard);
    let samples: Vec<f32> = chunks.into_iter().flat_map(|(c, _)| c).collect();
    let n = samples.len();
    if !binary {
        return Json(json!({
            "model_name": model, "model_version": "1",
            "outputs": [{"name": "waveform", "datatype": "FP32", "shape": [1, n], "data": samples}],
        }))
        .into_response();
    }
    let head = json!({
        "model_name": model, "model_version": "1",
        "outputs": [{"name": "waveform", "datatype": "FP32", "shape": [1, n],
                     "parameters": {"binary_data_size": n * 4}}],
    })
    .to_string();
    let mut out = Vec::with_capacity(head.len() + n * 4);
    out.extend_from_slice(head.as_bytes());
    for s in &samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    let total = out.len();
    let body = if fault == Some(FaultKind::Truncate) {
        // The header and half the samples, then the connection is cut.
        let cut = head.len() + n * 2;
        let first = Bytes::from(out).slice(..cut);
        let stream = futures_util::stream::iter([
            Ok(first),
            Err(std::io::Error::other("synthesis failed: connection cut")),
        ]);
        Body::from_stream(stream)
    } else {
        Body::from(out)
    };
    binary_response(body, head.len(), Some(total))
}

fn binary_response(body: Body, json_len: usize, len: Option<usize>) -> Response {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(IHCL, HeaderValue::from(json_len));
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    resp
}

/// The `endless` fault: a header claiming a huge waveform, then samples forever.
fn endless(state: &Arc<SimState>) -> Response {
    let guard = state.capacity.enter();
    let head = json!({
        "outputs": [{"name": "waveform", "datatype": "FP32", "shape": [1, u32::MAX],
                     "parameters": {"binary_data_size": u64::from(u32::MAX) * 4}}],
    })
    .to_string();
    let chunk = Bytes::from(vec![0u8; 64 * 1024]);
    let first = Some(Bytes::from(head.clone()));
    let stream = futures_util::stream::unfold((guard, first), move |(guard, first)| {
        let next = first.unwrap_or_else(|| chunk.clone());
        async move { Some((Ok::<_, std::io::Error>(next), (guard, None))) }
    });
    binary_response(Body::from_stream(stream), head.len(), None)
}
