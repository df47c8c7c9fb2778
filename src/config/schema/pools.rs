//! `pools`: the backends, their protocol and model, GPU slots, queue, retries, breakers, health
//! checks and restarts.

use super::NonEmpty;
use crate::config::units::ConfDuration;
use indexmap::IndexMap;
use serde::{de, Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How the gateway talks to a pool's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// CosyVoice's own FastAPI server: multipart forms in, raw int16 PCM out.
    CosyvoiceFastapi,
    /// A server that takes our JSON body and answers `audio/wav` (cosyvoice-sim's `/generate`).
    GenerateJson,
    /// CosyVoice's Gradio WebUI (`webui.py`): upload, call, event stream, audio fetch.
    Gradio,
    /// NVIDIA Triton over KServe v2 (CosyVoice's `runtime/triton_trtllm`): tensors in, an FP32
    /// waveform out (see `backend::triton`; `transport` and `model_name` apply).
    Triton,
}

/// How a `protocol: triton` pool reaches Triton.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TritonTransport {
    /// `POST /v2/models/{model}/infer` with binary tensors: one whole waveform (the model must
    /// not be decoupled; Triton answers 501 for a decoupled one).
    #[default]
    Http,
    /// gRPC `ModelStreamInfer`: waveform chunks, then an empty final response (decoupled or not).
    Grpc,
}

/// Which CosyVoice generation serves the pool; decides prompt conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelFamily {
    /// CosyVoice 3: `<|endofprompt|>` is required in the prompt text or instruction.
    Cosyvoice3,
    /// CosyVoice 2 (and 1): no prompt marker.
    Cosyvoice2,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConf {
    pub protocol: Protocol,
    #[serde(default = "default_model")]
    pub model: ModelFamily,
    /// Part of every cache key: change it when the model or its weights change, so that old
    /// voices are not served for the new model.
    #[serde(default)]
    pub model_version: String,
    /// Sample rate of the raw PCM the backends send (`cosyvoice_fastapi`); for the others, of
    /// the WAV they answer, which sizes the answer's byte cap (`max_answer_bytes`).
    #[serde(default = "default_sample_rate")]
    pub sample_rate: u32,
    #[serde(default)]
    pub health: HealthConf,
    /// Deadline for one backend attempt, from connect to the last audio byte.
    #[serde(default = "default_timeout")]
    pub timeout: ConfDuration,
    /// GPU slots per backend: never more requests in flight to one backend than this.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    #[serde(default)]
    pub queue: QueueConf,
    #[serde(default)]
    pub retry: RetryConf,
    #[serde(default)]
    pub circuit_breaker: BreakerConf,
    /// Longest audio one request may produce; a backend answer beyond it (plus header slack) is
    /// cut off as a failure without being read further. 120 s covers the default 200-character
    /// text limit at the slowest speech (Mandarin at about 4 characters a second is 50 s; at
    /// `speed` 0.5, 100 s) with a margin; raise it with `limits.max_text_chars`.
    #[serde(default = "default_max_audio_seconds")]
    pub max_audio_seconds: f64,
    /// The preset speakers (`spk_id`) the backends have. Absent: any `spk_id` is passed on,
    /// except on `model: cosyvoice3` pools, where `sft` is refused (CosyVoice3 ships none).
    #[serde(default)]
    pub speakers: Option<Vec<String>>,
    /// One deadline per request, across queueing and every attempt (504 when it passes).
    /// Default: `queue.max_wait` + `timeout`.
    #[serde(default)]
    pub deadline: Option<ConfDuration>,
    /// `protocol: triton`: HTTP (default) or gRPC (a decoupled, streaming model).
    #[serde(default)]
    pub transport: TritonTransport,
    /// `protocol: triton`: the model Triton serves (CosyVoice's runtime names it `cosyvoice3`).
    #[serde(default = "default_model_name")]
    pub model_name: String,
    /// When the pool cannot serve a request and its exact key misses: approximate cached
    /// answers, then the fallback voice (see `DegradeConf`).
    #[serde(default)]
    pub degrade: super::DegradeConf,
    pub backends: NonEmpty<BackendConf>,
}

fn default_model_name() -> String {
    "cosyvoice3".into()
}

fn default_max_audio_seconds() -> f64 {
    120.0
}

fn default_max_concurrency() -> usize {
    8
}

/// The pool's bounded, fair wait for a free GPU slot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConf {
    /// Most requests waiting; more get 503 `queue_full`.
    pub max_len: usize,
    /// Longest wait for a slot: a synchronous caller then gets 503, a job expires.
    pub max_wait: ConfDuration,
    /// A request that has not started within this becomes a 202 job.
    pub async_after: ConfDuration,
}

impl Default for QueueConf {
    fn default() -> Self {
        Self {
            max_len: 64,
            max_wait: ConfDuration(Duration::from_secs(30)),
            async_after: ConfDuration(Duration::from_secs(2)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConf {
    /// Extra attempts on another backend after a retryable failure.
    pub attempts: usize,
    /// Whether an attempt that timed out is retried (the GPU keeps working on it, so a retry
    /// doubles the load exactly when the pool is overloaded).
    pub on_timeout: bool,
    /// Retry budget, in the manner of Envoy's: retries may be at most this fraction of the
    /// requests of the last `budget_window` ...
    pub budget_ratio: f64,
    /// ... plus this many.
    pub budget_min: u32,
    /// The window the budget looks back over.
    pub budget_window: ConfDuration,
}

impl Default for RetryConf {
    fn default() -> Self {
        Self {
            attempts: 2,
            on_timeout: false,
            budget_ratio: 0.2,
            budget_min: 3,
            budget_window: ConfDuration(Duration::from_secs(10)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConf {
    /// Consecutive failures that open a backend's breaker.
    pub failures: u32,
    /// How long it stays open before one probe request may try it.
    pub open_for: ConfDuration,
}

impl Default for BreakerConf {
    fn default() -> Self {
        Self {
            failures: 3,
            open_for: ConfDuration(Duration::from_secs(30)),
        }
    }
}

fn default_model() -> ModelFamily {
    ModelFamily::Cosyvoice3
}

fn default_sample_rate() -> u32 {
    24000
}

fn default_timeout() -> ConfDuration {
    ConfDuration(Duration::from_secs(120))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConf {
    /// Path probed with `GET`; a `200` is healthy. Default: `/docs` for `cosyvoice_fastapi`
    /// (the real server has no health route), `/health` for `generate_json`,
    /// `/gradio_api/info` for `gradio` (200 once the WebUI is up, listing its API).
    pub path: Option<String>,
    pub interval: ConfDuration,
    pub timeout: ConfDuration,
    /// Consecutive failed checks that mark a healthy backend down.
    pub unhealthy_after: usize,
    /// Consecutive good checks that bring a down backend back.
    pub healthy_after: usize,
    /// A deep probe: a tiny synthesis on every backend this often, its audio checked; a backend
    /// that fails it gets no traffic (and is restarted, with `restart`) until one passes (then
    /// probed every `interval`). Absent: liveness only.
    pub synthesize_every: Option<ConfDuration>,
}

impl Default for HealthConf {
    fn default() -> Self {
        Self {
            path: None,
            interval: ConfDuration(Duration::from_secs(2)),
            timeout: ConfDuration(Duration::from_secs(1)),
            unhealthy_after: 3,
            healthy_after: 1,
            synthesize_every: None,
        }
    }
}

impl PoolConf {
    /// The health-check path after defaults.
    pub fn health_path(&self) -> &str {
        match (&self.health.path, self.protocol) {
            (Some(p), _) => p,
            (None, Protocol::CosyvoiceFastapi) => "/docs",
            (None, Protocol::GenerateJson) => "/health",
            (None, Protocol::Triton) => "/v2/health/ready",
            (None, Protocol::Gradio) => "/gradio_api/info",
        }
    }

    /// The request deadline after defaults: `deadline`, or `queue.max_wait` + `timeout`.
    pub fn request_deadline(&self) -> Duration {
        self.deadline
            .map_or_else(|| self.queue.max_wait.0.saturating_add(self.timeout.0), |d| d.0)
    }

    /// Most bytes a successful backend answer may have: `max_audio_seconds` of 16-bit mono
    /// PCM at `sample_rate`, plus slack for a WAV header (`generate_json`).
    pub fn max_answer_bytes(&self) -> usize {
        /// Room for a WAV header with extra chunks (`LIST`, `fact`) in front of the samples.
        const HEADER_SLACK: usize = 4096;
        let pcm = self.max_audio_seconds * f64::from(self.sample_rate) * 2.0;
        // `as` saturates; the value is checked to be finite and positive at load time.
        (pcm.ceil() as usize).saturating_add(HEADER_SLACK)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConf {
    pub addr: SocketAddr,
    /// How the supervisor restarts this backend when it stays unhealthy; absent = never.
    #[serde(default)]
    pub restart: Option<RestartConf>,
}

/// `backends[].restart:` the command that restarts one backend, and the guards around it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartConf {
    /// argv (no shell). It must not wait for the server: start it in the background and exit.
    pub command: NonEmpty<String>,
    /// Consecutive failures (failed health checks, or failed requests) that trigger a restart.
    #[serde(default = "default_after_failures")]
    pub after_failures: u32,
    /// Least time between two restarts of this backend (doubled after each restart that did
    /// not help).
    #[serde(default = "default_restart_cooldown")]
    pub cooldown: ConfDuration,
    /// Longest the command may run; it is killed after that.
    #[serde(default = "default_restart_timeout")]
    pub timeout: ConfDuration,
    /// Longest wait, after the command exited, for the backend to pass `healthy_after` checks.
    #[serde(default = "default_ready_within")]
    pub ready_within: ConfDuration,
    /// Working directory of the command (default: the gateway's).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Extra environment variables for the command.
    #[serde(default)]
    pub env: IndexMap<String, String>,
    /// Most restarts of this backend in any hour; then the supervisor gives up (`failed`).
    #[serde(default = "default_max_per_hour")]
    pub max_per_hour: u32,
    /// Slow start: a restarted backend gets 1 slot, twice as many every `warmup`, up to
    /// `max_concurrency`.
    #[serde(default = "default_warmup")]
    pub warmup: ConfDuration,
}

fn default_after_failures() -> u32 {
    3
}

fn default_restart_cooldown() -> ConfDuration {
    ConfDuration(Duration::from_secs(60))
}

fn default_restart_timeout() -> ConfDuration {
    ConfDuration(Duration::from_secs(30))
}

fn default_ready_within() -> ConfDuration {
    ConfDuration(Duration::from_secs(300))
}

fn default_max_per_hour() -> u32 {
    6
}

fn default_warmup() -> ConfDuration {
    ConfDuration(Duration::from_secs(10))
}

/// Pools by name, in file order; at least one, names usable as metric labels.
#[derive(Debug, Clone)]
pub struct Pools(pub IndexMap<String, PoolConf>);

impl<'de> Deserialize<'de> for Pools {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pools = IndexMap::<String, PoolConf>::deserialize(d)?;
        if pools.is_empty() {
            return Err(de::Error::custom(
                "no pools: define at least one pool with its backends",
            ));
        }
        if let Some(bad) = pools.keys().find(|n| {
            n.is_empty()
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }) {
            return Err(de::Error::custom(format!(
                "pool name {bad:?} may only contain letters, digits, '_' and '-'"
            )));
        }
        Ok(Self(pools))
    }
}
