//! What the running simulator shares between requests: its settings, the capacity model, the
//! armed fault, the counters of `/__sim/stats` and the record of the last synthesis request
//! (`/__sim/last`).

use super::cli::{Args, ModelKind, UpstreamBug};
use super::faults::Faults;
use super::model::{Capacity, Timing, SFT_SPEAKERS};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Shared state of one simulator process.
#[derive(Debug)]
pub struct SimState {
    pub sample_rate: u32,
    pub model: ModelKind,
    pub timing: Timing,
    pub capacity: Arc<Capacity>,
    pub faults: Faults,
    /// The preset speakers `sft` knows (`--speakers`); any other `spk_id` fails.
    pub speakers: Vec<String>,
    /// `--upstream-bug`.
    pub upstream_bug: Option<UpstreamBug>,
    requests: AtomicU64,
    missing_endofprompt: AtomicU64,
    gradio_queue_full: AtomicU64,
    last: Mutex<Option<LastRequest>>,
}

/// `GET /__sim/stats`.
#[derive(Debug, Serialize)]
pub struct Stats {
    pub requests: u64,
    pub inflight: u64,
    pub max_inflight: u64,
    pub missing_endofprompt: u64,
    /// Calls refused with 503 because the Gradio queue was full (`--serve gradio`).
    pub gradio_queue_full: u64,
}

/// `GET /__sim/last`: what the last synthesis request carried, to prove bodies arrive intact.
#[derive(Debug, Clone, Serialize)]
pub struct LastRequest {
    pub route: String,
    pub method: String,
    /// Text form fields (FastAPI routes), or the JSON's string and number fields except
    /// `prompt_audio` (`/generate`).
    pub fields: Map<String, Value>,
    pub prompt_wav_len: usize,
    /// Hex SHA-256 of the prompt WAV bytes; null without a prompt.
    pub prompt_wav_sha256: Option<String>,
    /// Bytes of the whole request body as received.
    pub body_len: usize,
    /// The `X-Request-Id` header the request carried, if any.
    pub request_id: Option<String>,
}

/// A prompt WAV as received, with its digest.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub bytes: bytes::Bytes,
    pub sha256: [u8; 32],
    /// Audio seconds, once the WAV was parsed.
    pub secs: f64,
}

impl Prompt {
    pub fn new(bytes: bytes::Bytes) -> Self {
        let sha256 = Sha256::digest(&bytes).into();
        Prompt {
            bytes,
            sha256,
            secs: 0.0,
        }
    }
}

impl LastRequest {
    pub fn new(route: &str, method: &str, body_len: usize) -> Self {
        LastRequest {
            route: route.to_string(),
            method: method.to_string(),
            fields: Map::new(),
            prompt_wav_len: 0,
            prompt_wav_sha256: None,
            body_len,
            request_id: None,
        }
    }

    /// Notes the request's `X-Request-Id`.
    pub fn with_request_id(mut self, headers: &axum::http::HeaderMap) -> Self {
        self.request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self
    }

    /// A Triton request's texts, and its reference wav's sample count, as `fields`.
    pub fn with_triton(mut self, inputs: &crate::triton::Inputs) -> Self {
        for (name, v) in [
            ("reference_text", &inputs.reference_text),
            ("target_text", &inputs.target_text),
        ] {
            if let Some(t) = v {
                self.fields.insert(name.into(), Value::String(t.clone()));
            }
        }
        self.fields.insert(
            "reference_wav_samples".into(),
            Value::from(inputs.reference_wav.len()),
        );
        self
    }

    pub fn with_prompt(mut self, prompt: Option<&Prompt>) -> Self {
        if let Some(p) = prompt {
            self.prompt_wav_len = p.bytes.len();
            self.prompt_wav_sha256 = Some(hex::encode(p.sha256));
        }
        self
    }
}

impl SimState {
    pub fn new(args: &Args) -> Arc<Self> {
        Arc::new(SimState {
            sample_rate: args.sample_rate,
            model: args.model,
            timing: Timing {
                first_chunk: Duration::from_millis(args.first_chunk_ms),
                rtf: args.rtf,
            },
            capacity: Capacity::new(args.slots, args.overload),
            faults: Faults::default(),
            speakers: match (&args.speakers, args.model) {
                (Some(list), _) => list
                    .iter()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
                (None, ModelKind::Cosyvoice3) => Vec::new(),
                (None, ModelKind::Cosyvoice2) => SFT_SPEAKERS.iter().map(|s| s.to_string()).collect(),
            },
            upstream_bug: args.upstream_bug,
            requests: AtomicU64::new(0),
            missing_endofprompt: AtomicU64::new(0),
            gradio_queue_full: AtomicU64::new(0),
            last: Mutex::new(None),
        })
    }

    /// A synthesis request arrived (whatever becomes of it) carrying this.
    pub fn received(&self, last: LastRequest) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(last);
    }

    /// Whether `sft` knows this speaker.
    pub fn has_speaker(&self, spk_id: &str) -> bool {
        self.speakers.iter().any(|s| s == spk_id)
    }

    pub fn count_missing_endofprompt(&self) {
        self.missing_endofprompt.fetch_add(1, Ordering::SeqCst);
    }

    pub fn count_gradio_queue_full(&self) {
        self.gradio_queue_full.fetch_add(1, Ordering::SeqCst);
    }

    pub fn last(&self) -> Option<LastRequest> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn stats(&self) -> Stats {
        Stats {
            requests: self.requests.load(Ordering::SeqCst),
            inflight: self.capacity.inflight(),
            max_inflight: self.capacity.max_inflight(),
            missing_endofprompt: self.missing_endofprompt.load(Ordering::SeqCst),
            gradio_queue_full: self.gradio_queue_full.load(Ordering::SeqCst),
        }
    }

    /// `POST /__sim/reset`: counters, last request and faults are forgotten (requests still in
    /// flight stay counted in `inflight`).
    pub fn reset(&self) {
        self.requests.store(0, Ordering::SeqCst);
        self.missing_endofprompt.store(0, Ordering::SeqCst);
        self.gradio_queue_full.store(0, Ordering::SeqCst);
        self.capacity.reset_max();
        self.faults.clear();
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}
