//! Why a synthesis failed (`SynthError`) and why a request was refused before any work
//! (`Refusal`), typed below the edge. `cache`, `backend` and `jobs` return
//! these; only `gateway/` turns them into statuses, codes, messages and `Retry-After`
//! (`gateway/errors.rs`). Each variant carries what that answer needs, nothing of HTTP.

use std::time::Duration;

/// Why a validated request got no audio.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum SynthError {
    /// The pool's queue is full; it drains in about `retry_after`.
    #[error("pool {pool}: queue full (drains in {:.1} s)", retry_after.as_secs_f64())]
    QueueFull { pool: String, retry_after: Duration },
    /// No GPU slot within the pool's `queue.max_wait`.
    #[error("pool {pool}: no slot within {:.1} s", waited.as_secs_f64())]
    QueueTimeout { pool: String, waited: Duration },
    /// No backend of the pool is usable (all unhealthy or their breakers open).
    #[error("pool {pool}: no usable backend")]
    NoBackend { pool: String },
    /// The pool's request deadline (queueing and every attempt together) passed.
    #[error("pool {pool}: the deadline of {:.1} s passed", deadline.as_secs_f64())]
    Deadline { pool: String, deadline: Duration },
    /// A backend answered 4xx (`status`); its body stays in the log.
    #[error("a backend refused the request ({status})")]
    Rejected { status: u16 },
    /// Two backends produced no audio for the request: the request's fault.
    #[error("no audio produced on two backends")]
    NoAudio,
    /// The request failed the same way on two backends (`summary`): the request's fault.
    #[error("the request failed the same way on two backends ({summary})")]
    RequestFault { summary: String },
    /// The last attempt timed out (`summary` says how, in words a client may read).
    #[error("backend timeout ({summary})")]
    BackendTimeout { summary: String },
    /// The last attempt failed (`summary` says how, in words a client may read).
    #[error("backend failed ({summary})")]
    BackendFailed { summary: String },
    /// No backend could serve and the fallback voice failed too (`0` says why).
    #[error("the fallback voice failed: {0}")]
    FallbackFailed(String),
    /// A bug or a shutdown inside the gateway.
    #[error("internal: {0}")]
    Internal(String),
}

/// A request the pool's backends cannot do, refused before any cache or backend work (422).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Refusal {
    /// The stable error code (`sft_unavailable`, `zero_shot_needs_prompt_text`, ...).
    pub code: &'static str,
    /// What the caller should do instead.
    pub message: String,
}

impl Refusal {
    /// A refusal with its code and what to do instead; built by `backend::precheck` and
    /// `backend::protocol` while a request is prepared.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}
