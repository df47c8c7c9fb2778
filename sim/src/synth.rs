//! Running one synthesis: applying the armed fault, holding a GPU slot while the audio is
//! produced, pacing it, and shaping the answer: FastAPI's chunked raw PCM (headers at once,
//! as Starlette's `StreamingResponse` sends them, then one chunk per half second of audio),
//! or a complete WAV for `/generate`.
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
    /// Speaks.
    Speak,
    /// Fails inside the streaming generator: 200, then the connection is cut with no audio
    /// (the real server's unknown `spk_id`).
    FailInStream,
    /// Never produces audio (CosyVoice3 without `<|endofprompt|>`): 200, then silence forever.
    HangInStream,
}

/// One step of a response body.
enum Step {
    /// Compute for this many nominal seconds.
    Work(f64),
    Send(Bytes),
    /// Cut the connection.
    Cut,
    /// Never go on.
    Hang,
}

/// The PCM of `job` and the schedule to produce it in chunks.
pub(crate) fn produce(state: &SimState, job: &Job) -> (Bytes, Vec<(Bytes, f64)>) {
    let key = AudioKey {
        text: &job.text,
        prompt_sha256: job.prompt_sha256,
        seed: job.seed,
        speed: job.speed,
    };
    let pcm = Bytes::from(audio::synthesize(&key, state.sample_rate));
    let step = audio::chunk_bytes(state.sample_rate);
    let chunks: Vec<Bytes> = (0..pcm.len())
        .step_by(step)
        .map(|start| pcm.slice(start..(start + step).min(pcm.len())))
        .collect();
    let bytes_per_sec = 2.0 * f64::from(state.sample_rate.max(1));
    let secs: Vec<f64> = chunks.iter().map(|c| c.len() as f64 / bytes_per_sec).collect();
    let work = state.timing.schedule(&secs);
    (pcm, chunks.into_iter().zip(work).collect())
}

/// The body of a response: runs `steps`, holding the GPU slot until the body is dropped.
fn body(state: &SimState, guard: InflightGuard, steps: VecDeque<Step>) -> Body {
    let pacer = Pacer::new(Arc::clone(&state.capacity));
    let stream = futures_util::stream::unfold(
        (guard, pacer, steps),
        |(guard, mut pacer, mut steps)| async move {
            loop {
                match steps.pop_front()? {
                    Step::Work(secs) => pacer.work(secs).await,
                    Step::Send(chunk) => return Some((Ok(chunk), (guard, pacer, steps))),
                    Step::Cut => {
                        // Let hyper flush what was sent (headers, a chunk) before the abort,
                        // which otherwise discards its write buffer.
                        tokio::time::sleep(CUT_FLUSH_GRACE).await;
                        steps.clear();
                        let err = std::io::Error::other("synthesis failed: connection cut");
                        return Some((Err(err), (guard, pacer, steps)));
                    }
                    Step::Hang => std::future::pending::<()>().await,
                }
            }
        },
    );
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

/// FastAPI answer: `200`, no Content-Type, chunked raw int16 LE mono PCM.
pub async fn stream_pcm(state: Arc<SimState>, job: Job, behaviour: Behaviour) -> Response {
    let fault = state.faults.take();
    if let Some(resp) = pre_answer_fault(&state, fault).await {
        return resp;
    }
    let guard = state.capacity.enter();
    if fault == Some(FaultKind::Endless) {
        return endless(guard, Bytes::new());
    }
    let truncate = fault == Some(FaultKind::Truncate);
    let mut steps = VecDeque::new();
    match behaviour {
        Behaviour::HangInStream => steps.push_back(Step::Hang),
        Behaviour::FailInStream => steps.push_back(Step::Cut),
        Behaviour::Speak => {
            let (_, chunks) = produce(&state, &job);
            for (chunk, work) in chunks {
                steps.push_back(Step::Work(work));
                steps.push_back(Step::Send(chunk));
                if truncate {
                    break;
                }
            }
            if truncate {
                steps.push_back(Step::Cut);
            }
        }
    }
    Response::new(body(&state, guard, steps))
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
    let (pcm, chunks) = produce(&state, &job);
    let wav = match pcm16_to_wav(&pcm, state.sample_rate) {
        Ok(w) => Bytes::from(w),
        Err(e) => {
            log::error!("cannot wrap PCM as WAV: {e}");
            return internal_error();
        }
    };
    let mut pacer = Pacer::new(Arc::clone(&state.capacity));
    for (_, work) in &chunks {
        pacer.work(*work).await;
    }
    let len = wav.len();
    let body = if fault == Some(FaultKind::Truncate) {
        let first = chunks.first().map_or(0, |(c, _)| c.len());
        let cut = (cosygate_wav::WAV_HEADER_LEN + first).min(len.saturating_sub(1));
        let steps = VecDeque::from([Step::Send(wav.slice(..cut)), Step::Cut]);
        body(&state, guard, steps)
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
