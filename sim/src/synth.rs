//! Running one synthesis: applying the armed fault, holding a GPU slot while the audio is
//! produced, pacing it, and shaping the answer: FastAPI's chunked raw PCM (headers at once,
//! as Starlette's `StreamingResponse` sends them, then one chunk per text segment, each sent
//! once the whole segment is synthesized), or a complete WAV for `/generate`.
//!
//! A streamed synthesis runs in its own task that owns the GPU slot, as CosyVoice's generator
//! does: a client that hangs up is noticed only when the current segment is done, so its slot
//! stays busy until then.
//!
//! A cut connection is a body stream that yields an error: hyper then aborts the response
//! without its terminating chunk (or short of its Content-Length).

use super::audio::{self, AudioKey};
use super::faults::{self, FaultKind};
use super::model::{InflightGuard, Pacer};
use super::state::SimState;
use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cosygate_wav::pcm16_to_wav;
use std::collections::VecDeque;
use std::sync::Arc;

/// Pause before a cut, so the bytes sent before it reach the client.
const CUT_FLUSH_GRACE: std::time::Duration = std::time::Duration::from_millis(20);

/// What to synthesize.
#[derive(Debug, Clone)]
pub struct Job {
    pub text: String,
    pub prompt_sha256: Option<[u8; 32]>,
    pub seed: u64,
    pub speed: f64,
}

/// How the model itself behaves for a request that passed validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Speaks (a text with no speakable character: 200 with an empty body).
    Speak,
    /// Fails inside the streaming generator: 200, then the connection is cut with no audio
    /// (unknown `spk_id`, missing `<|endofprompt|>`, prompt over 30 s, ...).
    FailInStream,
}

/// One step of a response body.
enum Step {
    Send(Bytes),
    /// Cut the connection.
    Cut,
}

/// The PCM of one segment of `job`.
pub(crate) fn segment_pcm(state: &SimState, job: &Job, segment: &str) -> Bytes {
    let key = AudioKey {
        text: segment,
        prompt_sha256: job.prompt_sha256,
        seed: job.seed,
        speed: job.speed,
    };
    Bytes::from(audio::synthesize(&key, state.sample_rate))
}

/// Seconds of audio in `pcm` at the sim's sample rate.
pub(crate) fn pcm_secs(state: &SimState, pcm: &[u8]) -> f64 {
    pcm.len() as f64 / (2.0 * f64::from(state.sample_rate.max(1)))
}

/// A body that runs `steps`, holding the GPU slot until it is dropped.
fn body(guard: InflightGuard, steps: VecDeque<Step>) -> Body {
    let stream = futures_util::stream::unfold((guard, steps), |(guard, mut steps)| async move {
        match steps.pop_front()? {
            Step::Send(chunk) => Some((Ok(chunk), (guard, steps))),
            Step::Cut => {
                // Let hyper flush what was sent (headers, a chunk) before the abort, which
                // otherwise discards its write buffer.
                tokio::time::sleep(CUT_FLUSH_GRACE).await;
                steps.clear();
                let err = std::io::Error::other("synthesis failed: connection cut");
                Some((Err(err), (guard, steps)))
            }
        }
    });
    Body::from_stream(stream)
}

/// Starlette's plain 500.
pub fn internal_error() -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response()
}

/// Applies the armed fault before any answer: `Some(response)` when it decides the answer.
/// `hang` and `crash` never return.
async fn pre_answer_fault(state: &SimState, fault: Option<FaultKind>) -> Option<Response> {
    match fault? {
        FaultKind::Error500 => Some(internal_error()),
        FaultKind::Crash => faults::crash(),
        FaultKind::Hang => {
            let _slot = state.capacity.enter();
            std::future::pending::<()>().await;
            None
        }
        FaultKind::Truncate | FaultKind::Endless => None,
    }
}

/// Bytes of each chunk of the `endless` fault.
const ENDLESS_CHUNK: usize = 64 * 1024;

/// The `endless` fault's body: `head` (a WAV header, or nothing), then the same chunk of
/// audio-like samples forever, as fast as the client reads, holding a GPU slot.
fn endless(guard: InflightGuard, head: Bytes) -> Response {
    let chunk: Bytes = (0..ENDLESS_CHUNK)
        .map(|i| if i % 2 == 0 { (i / 2 % 251) as u8 } else { 0 })
        .collect::<Vec<u8>>()
        .into();
    let first = (!head.is_empty()).then_some(head);
    let stream = futures_util::stream::unfold((guard, first), move |(guard, first)| {
        let next = first.unwrap_or_else(|| chunk.clone());
        async move { Some((Ok::<_, std::io::Error>(next), (guard, None))) }
    });
    Response::new(Body::from_stream(stream))
}

/// FastAPI answer: `200`, no Content-Type, chunked raw int16 LE mono PCM, one chunk per
/// segment. The first goes out after `--first-chunk-ms` (the model's start: frontend, prompt
/// features) plus the synthesis of the whole first segment (`rtf` × its audio); each next one
/// after its own synthesis.
pub async fn stream_pcm(state: Arc<SimState>, job: Job, behaviour: Behaviour) -> Response {
    let fault = state.faults.take();
    if let Some(resp) = pre_answer_fault(&state, fault).await {
        return resp;
    }
    let guard = state.capacity.enter();
    if fault == Some(FaultKind::Endless) {
        return endless(guard, Bytes::new());
    }
    if behaviour == Behaviour::FailInStream {
        return Response::new(body(guard, VecDeque::from([Step::Cut])));
    }
    let truncate = fault == Some(FaultKind::Truncate);
    let segments: Vec<String> = audio::segments(&job.text)
        .into_iter()
        .map(str::to_string)
        .collect();
    // One segment in hand at most: the generator runs ahead of the client by one chunk.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(1);
    let task_state = Arc::clone(&state);
    tokio::spawn(async move {
        let state = task_state;
        let _slot = guard;
        if segments.is_empty() {
            return;
        }
        let mut pacer = Pacer::new(Arc::clone(&state.capacity));
        pacer.work(state.timing.first_chunk.as_secs_f64()).await;
        for segment in &segments {
            let pcm = segment_pcm(&state, &job, segment);
            pacer.work(state.timing.rtf * pcm_secs(&state, &pcm)).await;
            if tx.send(Ok(pcm)).await.is_err() {
                log::debug!("client gone: synthesis stopped after its current segment");
                return;
            }
            if truncate {
                tokio::time::sleep(CUT_FLUSH_GRACE).await;
                let _ = tx
                    .send(Err(std::io::Error::other("synthesis failed: connection cut")))
                    .await;
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item, rx))
    });
    Response::new(Body::from_stream(stream))
}

/// `/generate` answer: after the whole synthesis time, `200 audio/wav` with Content-Length.
pub async fn complete_wav(state: Arc<SimState>, job: Job) -> Response {
    let fault = state.faults.take();
    if let Some(resp) = pre_answer_fault(&state, fault).await {
        return resp;
    }
    let guard = state.capacity.enter();
    if fault == Some(FaultKind::Endless) {
        // A WAV header claiming the largest size, then samples forever (chunked, no length).
        let header = match pcm16_to_wav(&[], state.sample_rate) {
            Ok(mut h) if h.len() == cosygate_wav::WAV_HEADER_LEN => {
                h[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
                h[40..44].copy_from_slice(&(u32::MAX - 36).to_le_bytes());
                Bytes::from(h)
            }
            _ => return internal_error(),
        };
        let mut resp = endless(guard, header);
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
        return resp;
    }
    let chunks: Vec<Bytes> = audio::segments(&job.text)
        .into_iter()
        .map(|segment| segment_pcm(&state, &job, segment))
        .collect();
    let pcm = chunks.concat();
    let wav = match pcm16_to_wav(&pcm, state.sample_rate) {
        Ok(w) => Bytes::from(w),
        Err(e) => {
            log::error!("cannot wrap PCM as WAV: {e}");
            return internal_error();
        }
    };
    let mut pacer = Pacer::new(Arc::clone(&state.capacity));
    pacer.work(state.timing.first_chunk.as_secs_f64()).await;
    pacer.work(state.timing.rtf * pcm_secs(&state, &pcm)).await;
    let len = wav.len();
    let body = if fault == Some(FaultKind::Truncate) {
        let first = chunks.first().map_or(0, Bytes::len);
        let cut = (cosygate_wav::WAV_HEADER_LEN + first).min(len.saturating_sub(1));
        let steps = VecDeque::from([Step::Send(wav.slice(..cut)), Step::Cut]);
        body(guard, steps)
    } else {
        drop(guard);
        Body::from(wav)
    };
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}
