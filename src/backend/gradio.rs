//! The `gradio` protocol: CosyVoice's WebUI (`webui.py`, Gradio 5.4) as a backend. One
//! synthesis is several HTTP exchanges with one backend, all under the attempt's deadline:
//!
//! 1. `POST /gradio_api/upload` (multipart field `files`, the prompt WAV; only for modes with a
//!    prompt) → a JSON list holding the file's path on the server;
//! 2. `POST /gradio_api/call/generate_audio` with `{"data":[10 values]}` → `{"event_id":...}`
//!    (`503 {"detail":"Queue is full..."}` when the app's queue is full);
//! 3. `GET /gradio_api/call/generate_audio/<event_id>`: server-sent events, `generating` per
//!    yielded chunk, `heartbeat`s, then `complete` (its data names the audio, or is `[null]`
//!    when CosyVoice's own input checks refused the request) or `error` with `data: null`;
//! 4. `GET` the audio the `complete` event names, built from its `path` (the `url` field is
//!    wrong in Gradio 5.4.0): a streaming `Audio` output (`is_stream`, as webui.py's is) is
//!    fetched joined as `/gradio_api/stream/<dir>/playlist-file`, a plain file as
//!    `/gradio_api/file=<path>`. The answer must be a WAV; it is passed on as is.
//!
//! [`build`] packs what the attempts need (the call's JSON and the prompt WAV) into one
//! [`UpstreamRequest`] with an internal framing that never leaves the gateway; [`send`] runs the
//! exchanges through [`attempt::exchange_into`]. Every answer is bounded: small JSON answers
//! by [`JSON_ANSWER_MAX`], the event stream by [`SSE_LINE_MAX`] per line and
//! [`SSE_STREAM_MAX`] in total, the audio by the pool's `max_answer_bytes`.

use super::attempt::{self, AttemptError, BodySink, Collect, Exchange, UpstreamRequest};
use super::multipart::Form;
use crate::api::{wav, GenerateRequest, Mode};
use bytes::{BufMut, Bytes, BytesMut};
use pingora::connectors::http::Connector;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Where the prompt WAV is uploaded.
pub const UPLOAD_PATH: &str = "/gradio_api/upload";
/// The WebUI's one endpoint (`api_name="/generate_audio"`).
pub const CALL_PATH: &str = "/gradio_api/call/generate_audio";
/// Default health-check path: 200 once the app is up, listing its API.
pub const HEALTH_PATH: &str = "/gradio_api/info";
/// Most bytes of the upload's and the call's JSON answers.
pub const JSON_ANSWER_MAX: usize = 64 * 1024;
/// Longest line of the event stream (one `data:` line carries one event's JSON).
pub const SSE_LINE_MAX: usize = 64 * 1024;
/// Most bytes of one event stream: a FileData (about 250 bytes) per generated chunk and a
/// heartbeat every 15 s; 120 s of audio in 0.5 s chunks is about 60 KB.
pub const SSE_STREAM_MAX: usize = 1024 * 1024;
/// The `Content-Type` of a built request: a marker for the framing below, never sent.
const FRAMED: &str = "application/x-cosygate-gradio";
/// Longest `event_id` accepted (Gradio's are 32 hex digits).
const EVENT_ID_MAX: usize = 128;

/// The WebUI's label of a mode (its radio button's value, in Chinese).
pub fn mode_label(mode: Mode) -> &'static str {
    match mode {
        Mode::Sft => "预训练音色",
        Mode::ZeroShot => "3s极速复刻",
        Mode::CrossLingual => "跨语种复刻",
        Mode::Instruct => "自然语言控制",
    }
}

/// The texts as the model must see them (CosyVoice3's `<|endofprompt|>` already placed by
/// `protocol`).
pub struct Texts {
    pub tts_text: String,
    /// The speaker dropdown's value (a valid choice even outside `sft`).
    pub sft_speaker: String,
    pub prompt_text: String,
    pub instruct_text: String,
}

/// Packs one request for [`send`]: `generate_audio`'s ten inputs (`tts_text`, mode label,
/// `sft_speaker`, `prompt_text`, `prompt_wav_upload` (filled in per attempt after the upload),
/// `prompt_wav_record` (null), `instruct_text`, `seed`, `stream` (false: one whole utterance),
/// `speed`) and the prompt WAV. Framing: a u32 LE length, the call's JSON, the WAV bytes.
pub fn build(req: &GenerateRequest, texts: Texts) -> UpstreamRequest {
    let call = json!({"data": [
        texts.tts_text,
        mode_label(req.mode),
        texts.sft_speaker,
        texts.prompt_text,
        Value::Null,
        Value::Null,
        texts.instruct_text,
        req.seed,
        false,
        req.speed,
    ]});
    let call = call.to_string();
    let prompt = req.prompt_audio.as_deref().unwrap_or_default();
    let mut body = BytesMut::with_capacity(4 + call.len() + prompt.len());
    // The call's JSON is a few KB at most (validated texts): it fits in a u32.
    body.put_u32_le(u32::try_from(call.len()).unwrap_or(u32::MAX));
    body.put_slice(call.as_bytes());
    body.put_slice(prompt);
    UpstreamRequest {
        path: CALL_PATH,
        content_type: FRAMED.into(),
        body: body.freeze(),
    }
}

/// The call's JSON and the prompt WAV (empty: none) of a request [`build`] made.
fn unframe(req: &UpstreamRequest) -> Result<(Value, Bytes), AttemptError> {
    let bad = |why: &str| AttemptError::Connect(format!("cannot build the request: {why}"));
    if req.content_type != FRAMED || req.body.len() < 4 {
        return Err(bad("not a gradio request"));
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&req.body[..4]);
    let end = 4usize.saturating_add(u32::from_le_bytes(len) as usize);
    if end > req.body.len() {
        return Err(bad("framing"));
    }
    let call = serde_json::from_slice(&req.body[4..end]).map_err(|e| bad(&e.to_string()))?;
    Ok((call, req.body.slice(end..)))
}

/// Runs one synthesis on `addr` (upload, call, events, audio), all within `deadline`; the audio
/// may have at most `max_bytes`. Failures are classified as for one-exchange protocols: a
/// non-200 (queue full included) is the backend's [`AttemptError::Status`]; `event: error` is
/// a stream that failed before any audio ([`AttemptError::Truncated`] after 0 bytes), and
/// `complete` with no audio is [`AttemptError::Empty`]: both may be the request's fault, so
/// the caller compares them across backends.
pub async fn send(
    connector: &Connector,
    addr: SocketAddr,
    req: &UpstreamRequest,
    request_id: &str,
    deadline: Duration,
    max_bytes: usize,
) -> Result<Bytes, AttemptError> {
    let started = Instant::now();
    let run = run(connector, addr, req, request_id, max_bytes);
    match tokio::time::timeout(deadline, run).await {
        Ok(result) => result,
        Err(_) => Err(AttemptError::Timeout(started.elapsed())),
    }
}

async fn run(
    connector: &Connector,
    addr: SocketAddr,
    req: &UpstreamRequest,
    request_id: &str,
    max_bytes: usize,
) -> Result<Bytes, AttemptError> {
    let (mut call, prompt) = unframe(req)?;
    if !prompt.is_empty() {
        let path = upload(connector, addr, prompt, request_id).await?;
        if let Some(slot) = call.get_mut("data").and_then(|d| d.get_mut(4)) {
            *slot = json!({"path": path, "meta": {"_type": "gradio.FileData"}});
        }
    }
    let event_id = start(connector, addr, &call, request_id).await?;
    let file = listen(connector, addr, &event_id, request_id).await?;
    let path = audio_path(&file)?;
    let ex = Exchange {
        method: "GET",
        path: &path,
        content_type: None,
        body: Bytes::new(),
        headers: &[],
    };
    let mut sink = Collect::new(max_bytes);
    let (status, detail) =
        attempt::exchange_into(connector, addr, &ex, request_id, max_bytes, &mut sink).await?;
    if status != 200 {
        return Err(status_error(status, &detail));
    }
    let audio = sink.body.freeze();
    if audio.is_empty() {
        return Err(AttemptError::Empty);
    }
    match wav::parse_wav(&audio) {
        Ok(_) => Ok(audio),
        Err(e) => Err(AttemptError::BadAudio(e.to_string())),
    }
}

/// `POST /gradio_api/upload`: the server's path of the uploaded prompt.
async fn upload(
    connector: &Connector,
    addr: SocketAddr,
    prompt: Bytes,
    request_id: &str,
) -> Result<String, AttemptError> {
    let mut form = Form::new();
    form.file("files", "prompt.wav", "audio/wav", &prompt);
    let (content_type, body) = form.finish();
    let ex = Exchange {
        method: "POST",
        path: UPLOAD_PATH,
        content_type: Some(&content_type),
        body,
        headers: &[],
    };
    let answer = json_exchange(connector, addr, &ex, request_id).await?;
    answer
        .get(0)
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            AttemptError::Protocol(format!(
                "upload answered {:.200}, not a list of paths",
                answer.to_string()
            ))
        })
}

/// `POST /gradio_api/call/generate_audio`: the event id.
async fn start(
    connector: &Connector,
    addr: SocketAddr,
    call: &Value,
    request_id: &str,
) -> Result<String, AttemptError> {
    let ex = Exchange {
        method: "POST",
        path: CALL_PATH,
        content_type: Some("application/json"),
        body: Bytes::from(call.to_string()),
        headers: &[],
    };
    let answer = json_exchange(connector, addr, &ex, request_id).await?;
    answer
        .get("event_id")
        .and_then(Value::as_str)
        .filter(|id| {
            !id.is_empty()
                && id.len() <= EVENT_ID_MAX
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string)
        .ok_or_else(|| {
            AttemptError::Protocol(format!(
                "call answered {:.200}, no usable event_id",
                answer.to_string()
            ))
        })
}

/// One exchange whose 200 answer is a small JSON document.
async fn json_exchange(
    connector: &Connector,
    addr: SocketAddr,
    ex: &Exchange<'_>,
    request_id: &str,
) -> Result<Value, AttemptError> {
    let mut sink = Collect::new(JSON_ANSWER_MAX);
    let (status, detail) =
        attempt::exchange_into(connector, addr, ex, request_id, JSON_ANSWER_MAX, &mut sink).await?;
    if status != 200 {
        return Err(status_error(status, &detail));
    }
    serde_json::from_slice(&sink.body)
        .map_err(|e| AttemptError::Protocol(format!("{} answered 200 with no JSON: {e}", ex.path)))
}

/// A non-200 answer to any exchange: the backend's failure, retryable elsewhere. Even a 4xx is
/// not the client's fault here (the gateway wrote every byte of it); a full queue is a 503.
fn status_error(status: u16, body: &[u8]) -> AttemptError {
    let s = String::from_utf8_lossy(&body[..body.len().min(300)]);
    AttemptError::Status {
        status,
        detail: s.chars().filter(|c| !c.is_control()).collect(),
    }
}

/// How an event stream ended.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// `complete`, with its data.
    Complete(Value),
    /// `error` (Gradio sends `data: null`, no message).
    Error(String),
}

/// Reads `event:`/`data:` lines until `complete` or `error`, bounded per line and in total.
#[derive(Debug, Default)]
struct Events {
    line: Vec<u8>,
    event: String,
    data: String,
    total: usize,
    /// The last FileData a `generating` event carried.
    last_file: Option<Value>,
    outcome: Option<Outcome>,
}

impl Events {
    fn line(&mut self, raw: &[u8]) -> Result<bool, AttemptError> {
        let line = String::from_utf8_lossy(raw);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                if self.data.len() + value.len() > SSE_LINE_MAX {
                    return Err(AttemptError::Protocol(format!(
                        "an event's data passed {SSE_LINE_MAX} bytes"
                    )));
                }
                self.data.push_str(value);
            }
            _ => {}
        }
        Ok(false)
    }

    /// An event is complete (blank line): true when it ends the stream.
    fn dispatch(&mut self) -> bool {
        let event = std::mem::take(&mut self.event);
        let data = std::mem::take(&mut self.data);
        match event.as_str() {
            "complete" => {
                self.outcome = Some(Outcome::Complete(
                    serde_json::from_str(&data).unwrap_or(Value::Null),
                ));
                true
            }
            "error" => {
                self.outcome = Some(Outcome::Error(data.chars().take(300).collect()));
                true
            }
            "generating" => {
                if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(&data) {
                    if let Some(file) = items.into_iter().next().filter(Value::is_object) {
                        self.last_file = Some(file);
                    }
                }
                false
            }
            _ => false,
        }
    }
}

impl BodySink for Events {
    fn take(&mut self, chunk: &[u8]) -> Result<bool, AttemptError> {
        self.total = self.total.saturating_add(chunk.len());
        if self.total > SSE_STREAM_MAX {
            return Err(AttemptError::TooLarge {
                limit: SSE_STREAM_MAX,
            });
        }
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&rest[..i]);
            rest = &rest[i + 1..];
            let line = std::mem::take(&mut self.line);
            if self.line(&line)? {
                return Ok(true);
            }
        }
        if self.line.len() + rest.len() > SSE_LINE_MAX {
            return Err(AttemptError::Protocol(format!(
                "an event-stream line passed {SSE_LINE_MAX} bytes"
            )));
        }
        self.line.extend_from_slice(rest);
        Ok(false)
    }
}

/// `GET /gradio_api/call/generate_audio/<event_id>`: the FileData of the audio.
async fn listen(
    connector: &Connector,
    addr: SocketAddr,
    event_id: &str,
    request_id: &str,
) -> Result<Value, AttemptError> {
    let path = format!("{CALL_PATH}/{event_id}");
    let ex = Exchange {
        method: "GET",
        path: &path,
        content_type: None,
        body: Bytes::new(),
        headers: &[],
    };
    let mut events = Events::default();
    let (status, detail) =
        attempt::exchange_into(connector, addr, &ex, request_id, SSE_STREAM_MAX, &mut events).await?;
    if status != 200 {
        return Err(status_error(status, &detail));
    }
    outcome_file(events.outcome, events.last_file, events.total)
}

/// The audio's FileData from how the stream ended.
fn outcome_file(
    outcome: Option<Outcome>,
    last_file: Option<Value>,
    read: usize,
) -> Result<Value, AttemptError> {
    match outcome {
        None => Err(AttemptError::Truncated {
            after: read,
            detail: "the event stream ended without `complete` or `error`".into(),
        }),
        Some(Outcome::Error(data)) => Err(AttemptError::Truncated {
            after: 0,
            detail: format!("event: error (data: {data}): the app raised before any audio"),
        }),
        Some(Outcome::Complete(data)) => match data.get(0) {
            Some(file @ Value::Object(_)) => Ok(file.clone()),
            // CosyVoice's own input checks end the call without audio.
            Some(Value::Null) | None if last_file.is_none() => Err(AttemptError::Empty),
            Some(Value::Null) | None => last_file.ok_or(AttemptError::Empty),
            Some(other) => Err(AttemptError::Protocol(format!(
                "complete carried {:.200}",
                other.to_string()
            ))),
        },
    }
}

/// The backend path of the audio a FileData names (from `path`, never `url`).
fn audio_path(file: &Value) -> Result<String, AttemptError> {
    let path = file
        .get("path")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| AttemptError::Protocol(format!("no path in {:.200}", file.to_string())))?;
    let is_stream =
        file.get("is_stream").and_then(Value::as_bool).unwrap_or(false) || path.ends_with("playlist.m3u8");
    if !is_stream {
        return Ok(format!("/gradio_api/file={}", escape_path(path)));
    }
    // A stream is named by its directory, `<session>/<run>/<component>`, possibly written as
    // the playlist's path, with or without the route in front.
    let dir = path
        .strip_suffix("playlist.m3u8")
        .unwrap_or(path)
        .trim_matches('/');
    let dir = dir
        .strip_prefix("gradio_api/")
        .unwrap_or(dir)
        .strip_prefix("stream/")
        .unwrap_or(dir);
    if dir.is_empty() || dir.split('/').any(|seg| seg == "..") {
        return Err(AttemptError::Protocol(format!(
            "unusable stream path {path:.200}"
        )));
    }
    Ok(format!("/gradio_api/stream/{}/playlist-file", escape_path(dir)))
}

/// Percent-encodes all but RFC 3986's unreserved characters and `/`, so a server path can
/// never break the request line.
fn escape_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[path = "gradio_tests.rs"]
mod tests;
