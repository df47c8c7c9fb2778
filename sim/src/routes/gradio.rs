//! `--serve gradio`: CosyVoice's WebUI (`webui.py` on Gradio 5.4) as its HTTP API looks,
//! with the simulator's audio, capacity model and faults.
//!
//! - `GET /config` (`api_prefix` `/gradio_api`, protocol `sse_v3`, the components and the one
//!   dependency `generate_audio`), `GET /gradio_api/info` (its ten parameters);
//! - `POST /gradio_api/upload` (multipart `files`) → `["/tmp/gradio/<sha256>/<name>"]`;
//! - `POST /gradio_api/call/generate_audio` `{"data":[10]}` → `{"event_id"}`, then
//!   `GET /gradio_api/call/generate_audio/<id>`: `event: heartbeat`, `event: generating` per
//!   yielded chunk (one when `stream` is false), `event: complete` or `event: error` with
//!   `data: null`;
//! - what `gradio_client` uses instead: `POST /gradio_api/queue/join` and the session's
//!   `GET /gradio_api/queue/data?session_hash=` (JSON messages), `GET /gradio_api/heartbeat/<s>`;
//! - the audio: a streaming `Audio` output (`is_stream`) named by its playlist,
//!   `<session>/<run>/<id>/playlist.m3u8` (as Gradio 5.4.0 names it), served joined as `/gradio_api/stream/<dir>/playlist-file` (a WAV here; the
//!   real one is AAC decoded back to WAV, lossy), `playlist.m3u8` with one segment, and
//!   `/gradio_api/file=<path>` for uploads (and a stream's playlist).
//!
//! The queue is Gradio's: `default_concurrency_limit=2` events run, at most `max_size=4` wait;
//! one more gets `503 {"detail":"Queue is full. Please try again later."}`. webui.py's own
//! checks (a prompt mode without prompt audio or transcript, instruct without an instruction,
//! a prompt under 16 kHz) end with `complete` and `data: [null]`; what raises in CosyVoice (an
//! unknown speaker, CosyVoice3 without `<|endofprompt|>`, an unknown mode) is `event: error`, as
//! is Gradio's own refusal of a speaker-dropdown value that is not one of its choices (the
//! speakers, or `[""]` without any), checked in every mode.
//! Faults (`/__sim/fault`) hit the next calls: `error500` is `event: error`, `truncate` cuts
//! the event stream after the first chunk, `hang` never finishes (holding its queue slot),
//! `endless` yields chunks forever, `crash` exits.

use super::{control, not_found, read_body};
use crate::audio::{self, speaker_voice, ENDOFPROMPT};
use crate::faults::{self, FaultKind};
use crate::model::Pacer;
use crate::state::{LastRequest, Prompt, SimState};
use crate::synth::{self, Job};
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use cosygate_wav::{parse_wav, pcm16_to_wav};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// Events that run at once (`queue(default_concurrency_limit=2)`).
pub const CONCURRENCY: usize = 2;
/// Events that may wait (`queue(max_size=4)`).
pub const MAX_WAITING: usize = 4;
/// Files (uploads, outputs) kept; the oldest are forgotten.
const MAX_FILES: usize = 256;
/// Events accepted but not yet listened to, at most.
const MAX_PENDING: usize = 1024;
/// Component id of the output `Audio`.
const OUTPUT_ID: u64 = 11;
/// Gradio's heartbeat period.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// The WebUI's ten inputs: component id, type, label, parameter name.
const INPUTS: [(u64, &str, &str, &str); 10] = [
    (1, "textbox", "输入合成文本", "tts_text"),
    (2, "radio", "选择推理模式", "mode_checkbox_group"),
    (3, "dropdown", "选择预训练音色", "sft_dropdown"),
    (4, "textbox", "输入prompt文本", "prompt_text"),
    (
        5,
        "audio",
        "选择prompt音频文件，注意采样率不低于16khz",
        "prompt_wav_upload",
    ),
    (6, "audio", "录制prompt音频文件", "prompt_wav_record"),
    (7, "textbox", "输入instruct文本", "instruct_text"),
    (8, "number", "随机推理种子", "seed"),
    (9, "radio", "是否流式推理", "stream"),
    (10, "number", "速度调节(仅支持非流式推理)", "speed"),
];
/// The mode labels, in the radio's order.
const MODES: [&str; 4] = ["预训练音色", "3s极速复刻", "跨语种复刻", "自然语言控制"];

/// What one event produces, in order.
#[derive(Debug)]
enum Ev {
    Heartbeat,
    Generating(Value),
    Complete(Value),
    Error,
    /// The connection is cut.
    Cut,
}

/// The gradio mode's own state beside the simulator's.
pub struct Gradio {
    sim: Arc<SimState>,
    running: Arc<Semaphore>,
    waiting: AtomicUsize,
    next: AtomicU64,
    pending: Mutex<HashMap<String, mpsc::Receiver<Ev>>>,
    /// `queue/data` streams by session hash, each fed by its session's events.
    sessions: Mutex<HashMap<String, Session>>,
    files: Mutex<Files>,
}

struct Session {
    tx: mpsc::Sender<Value>,
    rx: Option<mpsc::Receiver<Value>>,
}

#[derive(Default)]
struct Files {
    by_path: HashMap<String, Bytes>,
    order: VecDeque<String>,
}

impl Files {
    fn put(&mut self, path: String, bytes: Bytes) {
        if self.by_path.insert(path.clone(), bytes).is_none() {
            self.order.push_back(path);
        }
        while self.order.len() > MAX_FILES {
            if let Some(old) = self.order.pop_front() {
                self.by_path.remove(&old);
            }
        }
    }
}

impl Gradio {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh 32-hex-digit id.
    fn id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let digest = Sha256::digest(format!("{n}/{nanos}/{}", std::process::id()));
        hex::encode(&digest[..16])
    }

    fn file(&self, path: &str) -> Option<Bytes> {
        Self::lock(&self.files).by_path.get(path).cloned()
    }
}

/// The routes of `--serve gradio`, with the `/__sim/` hooks.
pub fn router(sim: Arc<SimState>) -> Router {
    let state = Arc::new(Gradio {
        sim: Arc::clone(&sim),
        running: Arc::new(Semaphore::new(CONCURRENCY)),
        waiting: AtomicUsize::new(0),
        next: AtomicU64::new(0),
        pending: Mutex::new(HashMap::new()),
        sessions: Mutex::new(HashMap::new()),
        files: Mutex::new(Files::default()),
    });
    let hooks = Router::new()
        .route("/__sim/stats", get(control::stats))
        .route("/__sim/last", get(control::last))
        .route("/__sim/fault", post(control::fault))
        .route("/__sim/reset", post(control::reset))
        .with_state(sim);
    Router::new()
        .route(
            "/",
            get(|| async { axum::response::Html("<!doctype html><title>Gradio</title>") }),
        )
        .route("/config", get(config))
        .route("/gradio_api/info", get(info))
        .route("/gradio_api/upload", post(upload))
        .route("/gradio_api/call/generate_audio", post(call))
        .route("/gradio_api/call/generate_audio/{event_id}", get(call_events))
        .route("/gradio_api/queue/join", post(join))
        .route("/gradio_api/queue/data", get(queue_data))
        .route("/gradio_api/heartbeat/{session}", get(heartbeat))
        .route("/gradio_api/stream/{*rest}", get(stream_file))
        .fallback(file)
        .with_state(state)
        .merge(hooks)
}

async fn config(headers: axum::http::HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1:7860");
    let mut components: Vec<Value> = INPUTS
        .iter()
        .map(|(id, ty, label, _)| json!({"id": id, "type": ty, "props": {"label": label, "name": ty}}))
        .collect();
    components.push(json!({"id": OUTPUT_ID, "type": "audio", "props": {"label": "合成音频", "streaming": true, "autoplay": true, "name": "audio"}}));
    Json(json!({
        "version": "5.4.0",
        "mode": "blocks",
        "app_id": 1,
        "dev_mode": false,
        "api_prefix": "/gradio_api",
        "protocol": "sse_v3",
        "root": format!("http://{host}"),
        "max_file_size": null,
        "components": components,
        "dependencies": [{
            "id": 0,
            "targets": [[12, "click"]],
            "inputs": INPUTS.iter().map(|i| i.0).collect::<Vec<_>>(),
            "outputs": [OUTPUT_ID],
            "backend_fn": true,
            "api_name": "generate_audio",
            "show_api": true,
            "queue": true,
            "types": {"generator": true, "cancel": false},
            "concurrency_limit": CONCURRENCY,
        }],
    }))
    .into_response()
}

async fn info() -> Response {
    let types = [
        "str",
        "Literal['预训练音色', '3s极速复刻', '跨语种复刻', '自然语言控制']",
        "str",
        "str",
        "filepath",
        "filepath",
        "str",
        "float",
        "bool",
        "float",
    ];
    let parameters: Vec<Value> = INPUTS
        .iter()
        .zip(types)
        .map(|((_, ty, label, name), py)| {
            json!({
                "label": label,
                "parameter_name": name,
                "parameter_has_default": true,
                "parameter_default": null,
                "type": {"type": "string"},
                "python_type": {"type": py, "description": ""},
                "component": capitalized(ty),
                "example_input": null,
            })
        })
        .collect();
    Json(json!({
        "named_endpoints": {"/generate_audio": {
            "parameters": parameters,
            "returns": [{
                "label": "合成音频",
                "type": {"type": "string", "description": "filepath"},
                "python_type": {"type": "filepath", "description": ""},
                "component": "Audio",
            }],
            "show_api": true,
        }},
        "unnamed_endpoints": {},
    }))
    .into_response()
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

async fn upload(State(g): State<Arc<Gradio>>, req: Request) -> Response {
    let mut multipart = match Multipart::from_request(req, &()).await {
        Ok(m) => m,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(json!({"detail": e.body_text()}))).into_response(),
    };
    let mut paths = Vec::new();
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) => {
                let name = field.file_name().unwrap_or("file").replace(['/', '\\'], "_");
                let data = match field.bytes().await {
                    Ok(d) => d,
                    Err(e) => {
                        return (StatusCode::BAD_REQUEST, Json(json!({"detail": e.body_text()})))
                            .into_response()
                    }
                };
                let path = format!("/tmp/gradio/{}/{name}", hex::encode(Sha256::digest(&data)));
                Gradio::lock(&g.files).put(path.clone(), data);
                paths.push(path);
            }
            Ok(None) => break,
            Err(e) => {
                return (StatusCode::BAD_REQUEST, Json(json!({"detail": e.body_text()}))).into_response()
            }
        }
    }
    Json(paths).into_response()
}

fn queue_full() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"detail": "Queue is full. Please try again later."})),
    )
        .into_response()
}

/// Checks the body, queues the event and starts its worker; the event id, or the answer.
async fn enqueue(
    g: &Arc<Gradio>,
    route: &str,
    req: Request,
) -> Result<(String, mpsc::Receiver<Ev>, Value), Response> {
    let (parts, body) = req.into_parts();
    let body = read_body(&parts.headers, body).await?;
    let mut last = LastRequest::new(route, "POST", body.len()).with_request_id(&parts.headers);
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let data = parsed
        .as_ref()
        .and_then(|v| v.get("data"))
        .and_then(Value::as_array)
        .filter(|d| d.len() == INPUTS.len())
        .cloned();
    let Some(data) = data else {
        g.sim.received(last);
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"detail": format!("expected {{\"data\": [...]}} with {} values", INPUTS.len())})),
        )
            .into_response());
    };
    let prompt = prompt_of(g, &data[4]).or_else(|| prompt_of(g, &data[5]));
    for (i, (_, _, _, name)) in INPUTS.iter().enumerate() {
        if matches!(i, 4 | 5) {
            continue;
        }
        last.fields.insert((*name).to_string(), data[i].clone());
    }
    g.sim.received(last.with_prompt(prompt.as_ref()));
    if g.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING {
        g.waiting.fetch_sub(1, Ordering::SeqCst);
        g.sim.count_gradio_queue_full();
        return Err(queue_full());
    }
    let event_id = g.id();
    let session = parsed
        .as_ref()
        .and_then(|v| v.get("session_hash"))
        .and_then(Value::as_str)
        .map_or_else(|| g.id(), str::to_string);
    let (tx, rx) = mpsc::channel(16);
    let dir = format!("{session}/{}/{OUTPUT_ID}", g.next.fetch_add(1, Ordering::SeqCst));
    tokio::spawn(run(Arc::clone(g), data, prompt, dir, tx));
    Ok((event_id, rx, parsed.unwrap_or(Value::Null)))
}

/// The uploaded prompt a FileData input names.
fn prompt_of(g: &Gradio, v: &Value) -> Option<Prompt> {
    let path = v.get("path")?.as_str()?;
    g.file(path).map(Prompt::new)
}

async fn call(State(g): State<Arc<Gradio>>, req: Request) -> Response {
    match enqueue(&g, "/gradio_api/call/generate_audio", req).await {
        Ok((event_id, rx, _)) => {
            let mut pending = Gradio::lock(&g.pending);
            if pending.len() >= MAX_PENDING {
                return queue_full();
            }
            pending.insert(event_id.clone(), rx);
            Json(json!({"event_id": event_id})).into_response()
        }
        Err(resp) => resp,
    }
}

/// The `/call` event stream: `event: NAME` / `data: JSON` blocks.
async fn call_events(State(g): State<Arc<Gradio>>, Path(event_id): Path<String>) -> Response {
    let Some(rx) = Gradio::lock(&g.pending).remove(&event_id) else {
        return not_found().await;
    };
    let stream = futures_util::stream::unfold((rx, false), |(mut rx, done)| async move {
        if done {
            return None;
        }
        let ev = rx.recv().await?;
        let (text, done) = match ev {
            Ev::Heartbeat => ("event: heartbeat\ndata: null\n\n".to_string(), false),
            Ev::Generating(v) => (format!("event: generating\ndata: {v}\n\n"), false),
            Ev::Complete(v) => (format!("event: complete\ndata: {v}\n\n"), true),
            Ev::Error => ("event: error\ndata: null\n\n".to_string(), true),
            Ev::Cut => {
                let err = std::io::Error::other("event stream cut (fault injected)");
                return Some((Err(err), (rx, true)));
            }
        };
        Some((Ok::<_, std::io::Error>(Bytes::from(text)), (rx, done)))
    });
    sse(Body::from_stream(stream))
}

fn sse(body: Body) -> Response {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `gradio_client`'s way in: the event's messages go to its session's `queue/data` stream.
async fn join(State(g): State<Arc<Gradio>>, req: Request) -> Response {
    let (event_id, mut rx, body) = match enqueue(&g, "/gradio_api/queue/join", req).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let Some(session) = body
        .get("session_hash")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"detail": "session_hash missing"})),
        )
            .into_response();
    };
    let tx = {
        let mut sessions = Gradio::lock(&g.sessions);
        let entry = sessions.entry(session).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(64);
            Session { tx, rx: Some(rx) }
        });
        entry.tx.clone()
    };
    let id = event_id.clone();
    tokio::spawn(async move {
        let _ = tx
            .send(json!({"msg": "estimation", "event_id": id, "rank": 0, "queue_size": 1, "rank_eta": null}))
            .await;
        let _ = tx
            .send(json!({"msg": "process_starts", "event_id": id, "eta": null}))
            .await;
        let mut first = true;
        while let Some(ev) = rx.recv().await {
            let msg = match ev {
                Ev::Heartbeat => continue,
                // sse_v3 sends the first output whole, later ones as diffs (none: same file).
                Ev::Generating(v) => {
                    let data = if first { v } else { json!([[]]) };
                    first = false;
                    json!({"msg": "process_generating", "event_id": id, "output": {"data": data, "is_generating": true}, "success": true})
                }
                Ev::Complete(v) => {
                    json!({"msg": "process_completed", "event_id": id, "output": {"data": v, "is_generating": false, "duration": 0.1, "average_duration": 0.1}, "success": true, "title": null})
                }
                Ev::Error => {
                    json!({"msg": "process_completed", "event_id": id, "output": {"error": null}, "success": false, "title": "Error"})
                }
                Ev::Cut => json!({"msg": "cut"}),
            };
            let end = msg.get("msg") != Some(&json!("process_generating"));
            let _ = tx.send(msg).await;
            if end {
                let _ = tx.send(json!({"msg": "close_stream", "event_id": null})).await;
                break;
            }
        }
    });
    Json(json!({"event_id": event_id})).into_response()
}

#[derive(serde::Deserialize)]
struct SessionQuery {
    session_hash: String,
}

async fn queue_data(State(g): State<Arc<Gradio>>, Query(q): Query<SessionQuery>) -> Response {
    let rx = {
        let mut sessions = Gradio::lock(&g.sessions);
        sessions.get_mut(&q.session_hash).and_then(|s| s.rx.take())
    };
    let Some(rx) = rx else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"detail": "Session not found."})),
        )
            .into_response();
    };
    let stream = futures_util::stream::unfold((rx, false), |(mut rx, done)| async move {
        if done {
            return None;
        }
        let msg = rx.recv().await?;
        if msg.get("msg") == Some(&json!("cut")) {
            return Some((Err(std::io::Error::other("cut (fault injected)")), (rx, true)));
        }
        let done = msg.get("msg") == Some(&json!("close_stream"));
        Some((
            Ok::<_, std::io::Error>(Bytes::from(format!("data: {msg}\n\n"))),
            (rx, done),
        ))
    });
    // The session's stream is used once.
    Gradio::lock(&g.sessions).remove(&q.session_hash);
    sse(Body::from_stream(stream))
}

async fn heartbeat(Path(_session): Path<String>) -> Response {
    let stream = futures_util::stream::unfold(true, |first| async move {
        if !first {
            tokio::time::sleep(HEARTBEAT).await;
        }
        Some((
            Ok::<_, std::io::Error>(Bytes::from_static(b"data: {\"msg\": \"heartbeat\"}\n\n")),
            false,
        ))
    });
    sse(Body::from_stream(stream))
}

/// `/gradio_api/stream/<dir>/playlist-file` (the joined WAV), `playlist.m3u8`, the segment.
async fn stream_file(State(g): State<Arc<Gradio>>, Path(rest): Path<String>) -> Response {
    let Some((dir, name)) = rest.rsplit_once('/') else {
        return not_found().await;
    };
    let Some(wav) = g.file(dir) else {
        return not_found().await;
    };
    match name {
        "playlist-file" | "segment-0.wav" => audio_wav(wav),
        "playlist.m3u8" => playlist(&wav),
        _ => not_found().await,
    }
}

/// `/gradio_api/file=<path>`: an upload, or a stream directory's playlist.
async fn file(State(g): State<Arc<Gradio>>, uri: axum::http::Uri) -> Response {
    let Some(path) = uri.path().strip_prefix("/gradio_api/file=") else {
        return not_found().await;
    };
    if let Some(dir) = path.strip_suffix("/playlist.m3u8") {
        return match g.file(dir) {
            Some(wav) => playlist(&wav),
            None => not_found().await,
        };
    }
    match g.file(path) {
        Some(bytes) if path.starts_with("/tmp/gradio/") => audio_wav(bytes),
        _ => not_found().await,
    }
}

fn audio_wav(wav: Bytes) -> Response {
    let mut resp = Response::new(Body::from(wav));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    resp
}

fn playlist(wav: &[u8]) -> Response {
    let secs = parse_wav(wav).map_or(0.0, |i| i.duration_secs());
    let text = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:{secs:.3},\nsegment-0.wav\n#EXT-X-ENDLIST\n",
        secs.ceil()
    );
    let mut resp = Response::new(Body::from(text));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.apple.mpegurl"),
    );
    resp
}

/// The streaming output's FileData as Gradio 5.4.0 sends it: `path` is the playlist,
/// `<session>/<run>/<id>/playlist.m3u8`; `url` is wrong (a doubled, truncated prefix), so
/// clients must build URLs from `path`.
fn file_data(dir: &str) -> Value {
    json!({
        "path": format!("{dir}/playlist.m3u8"),
        "url": format!("http://localhost:7860/gradio_a/gradio_api/stream/{dir}/playlist.m3u8"),
        "size": null,
        "orig_name": "audio.wav",
        "mime_type": null,
        "is_stream": true,
        "meta": {"_type": "gradio.FileData"},
    })
}

/// One event: waits for its turn in the queue, then behaves as webui.py's `generate_audio`.
async fn run(g: Arc<Gradio>, data: Vec<Value>, prompt: Option<Prompt>, dir: String, tx: mpsc::Sender<Ev>) {
    let _ = tx.send(Ev::Heartbeat).await;
    let permit = Arc::clone(&g.running).acquire_owned().await;
    g.waiting.fetch_sub(1, Ordering::SeqCst);
    let Ok(_permit) = permit else { return };
    let sim = &g.sim;
    let text = |i: usize| data[i].as_str().unwrap_or("").to_string();
    let (tts_text, mode, speaker, prompt_text, instruct_text) = (text(0), text(1), text(2), text(3), text(6));
    let seed = data[7].as_f64().map_or(0, |s| s.max(0.0) as u64);
    let speed = data[9]
        .as_f64()
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0);

    // Gradio's own preprocessing: the dropdown's value must be one of its choices (the
    // speakers, or `[""]` when there are none), in every mode.
    let choice_ok = if sim.speakers.is_empty() {
        speaker.is_empty()
    } else {
        sim.has_speaker(&speaker)
    };
    if !choice_ok {
        log::warn!("gradio.exceptions.Error: Value: {speaker} is not in the list of choices");
        let _ = tx.send(Ev::Error).await;
        return;
    }
    let fault = sim.faults.take();
    match fault {
        Some(FaultKind::Error500) => {
            let _ = tx.send(Ev::Error).await;
            return;
        }
        Some(FaultKind::Crash) => faults::crash(),
        Some(FaultKind::Hang) => {
            let _slot = sim.capacity.enter();
            std::future::pending::<()>().await;
        }
        _ => {}
    }
    // webui.py's own checks: a warning, and no audio.
    let Some(mode_index) = MODES.iter().position(|m| *m == mode) else {
        log::warn!("generate_audio: unknown mode {mode:?}");
        let _ = tx.send(Ev::Error).await;
        return;
    };
    let no_audio = match mode_index {
        1 => prompt.is_none() || prompt_text.is_empty(),
        2 => prompt.is_none(),
        3 => prompt.is_none() || instruct_text.is_empty(),
        _ => false,
    } || prompt
        .as_ref()
        .is_some_and(|p| parse_wav(&p.bytes).map_or(true, |i| i.sample_rate < 16000));
    if no_audio {
        log::warn!("generate_audio: webui refused the inputs (gr.Warning); no audio");
        let _ = tx.send(Ev::Complete(json!([null]))).await;
        return;
    }
    // What raises inside CosyVoice.
    if mode_index == 0 && !sim.has_speaker(&speaker) {
        log::warn!("generate_audio: KeyError: {speaker:?} (unknown speaker)");
        let _ = tx.send(Ev::Error).await;
        return;
    }
    let marked = match mode_index {
        1 => format!("{prompt_text}{tts_text}"),
        3 => instruct_text,
        _ => tts_text.clone(),
    };
    if sim.model.requires_endofprompt() && !marked.contains(ENDOFPROMPT) {
        log::warn!("generate_audio: AssertionError: no {ENDOFPROMPT}");
        sim.count_missing_endofprompt();
        let _ = tx.send(Ev::Error).await;
        return;
    }
    let job = Job {
        text: tts_text,
        prompt_sha256: Some(
            prompt
                .as_ref()
                .map_or_else(|| speaker_voice(&speaker), |p| p.sha256),
        ),
        seed,
        speed,
    };
    let _slot = sim.capacity.enter();
    let mut pacer = Pacer::new(Arc::clone(&sim.capacity));
    let fd = file_data(&dir);
    if fault == Some(FaultKind::Endless) {
        loop {
            if tx.send(Ev::Generating(json!([fd.clone()]))).await.is_err() {
                return;
            }
        }
    }
    // CosyVoice yields once per text segment (sentence group), whether or not `stream` is
    // set (streaming only splits a segment further); each yield is one `generating` event.
    pacer.work(sim.timing.first_chunk.as_secs_f64()).await;
    let mut pcm = Vec::new();
    for segment in audio::segments(&job.text) {
        let part = synth::segment_pcm(sim, &job, segment);
        pacer.work(sim.timing.rtf * synth::pcm_secs(sim, &part)).await;
        pcm.extend_from_slice(&part);
        if tx.send(Ev::Generating(json!([fd.clone()]))).await.is_err() {
            return;
        }
        if fault == Some(FaultKind::Truncate) {
            let _ = tx.send(Ev::Cut).await;
            return;
        }
    }
    if pcm.is_empty() {
        // Nothing speakable: CosyVoice yields nothing, the call completes without audio.
        let _ = tx.send(Ev::Complete(json!([null]))).await;
        return;
    }
    match pcm16_to_wav(&pcm, sim.sample_rate) {
        Ok(wav) => {
            Gradio::lock(&g.files).put(dir.clone(), Bytes::from(wav));
            let _ = tx.send(Ev::Complete(json!([fd]))).await;
        }
        Err(e) => {
            log::error!("cannot wrap PCM as WAV: {e}");
            let _ = tx.send(Ev::Error).await;
        }
    }
}
