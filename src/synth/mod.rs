//! The seam between HTTP and synthesis. Below the edge, one validated request becomes either a
//! [`Synthesized`] answer (the audio, where it came from, whether it is degraded, when it was
//! made) or a [`SynthError`]; nothing here knows statuses or headers (`gateway/` maps both).
//!
//! - `error.rs`: the typed errors (`SynthError`, `Refusal`).
//! - `stack.rs`: the [`Synthesizer`], layers around the backends: the cache with single flight
//!   (or its bypass) around the pool's deadline, retries and fallback (`backend/`), all
//!   reporting progress through [`Report`] so a 202 job can tell where it is.
//! - `degrade.rs`: the degradation ladder, when the pool cannot serve: approximate cached
//!   answers (`cache::approx`), then the fallback voice, then the error.
//! - `live.rs`: [`LiveAudio`], a synthesis's audio as it is produced, for streaming callers.
//! - `trace.rs`: a [`Report`] that also keeps attempts, backend and queue wait for the access
//!   log.

mod degrade;
mod error;
pub mod live;
mod stack;
mod trace;

pub use error::{Refusal, SynthError};
pub use live::{LiveAudio, LiveReader, Next, PcmFormat};
pub use stack::{PrecomputedKey, SynthRequest, Synthesizer};
pub use trace::{Trace, Traced};

use crate::cache::CacheKey;
use crate::config::Rung;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Where an answer's audio came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Synthesized for this request by this backend.
    Backend(SocketAddr),
    /// Spoken by the fallback voice because no backend could serve (`degraded`).
    Fallback,
    /// Served from a cache tier (`memory`, `disk`, `redis`).
    Tier(&'static str),
    /// Joined an identical request's synthesis that was already running.
    InFlight,
}

/// A request's audio and what the answer says about it.
#[derive(Debug, Clone)]
pub struct Synthesized {
    pub wav: Bytes,
    pub source: Source,
    /// From the fallback voice (`X-Degraded: fallback`), also when joined or cached.
    pub degraded: bool,
    /// When the audio was synthesized (`Age`).
    pub created: SystemTime,
    /// The cache key, when the cache was used (None: bypassed); for an approximate answer, the
    /// key of the entry that stood in.
    pub key: Option<CacheKey>,
    /// A cached entry of this rung of the degradation ladder stood in for the exact answer
    /// (`X-Degraded: approximate`); never stored under the request's own key.
    pub approximate: Option<Rung>,
}

/// Why an answer is not the audio asked for (`X-Degraded`, `X-Degraded-Reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Degraded {
    /// The fallback voice spoke it (`X-Degraded: fallback`).
    Fallback,
    /// A cached entry close to it stood in (`X-Degraded: approximate`), filed under `key`.
    Approximate { rung: Rung, key: CacheKey },
}

impl Degraded {
    /// `X-Degraded`'s value.
    pub fn kind(self) -> &'static str {
        match self {
            Degraded::Fallback => "fallback",
            Degraded::Approximate { .. } => "approximate",
        }
    }

    /// `X-Degraded-Reason`'s value, the metrics' and the access log's: the rung that answered.
    pub fn reason(self) -> &'static str {
        match self {
            Degraded::Fallback => "fallback",
            Degraded::Approximate { rung, .. } => rung.as_str(),
        }
    }
}

impl Synthesized {
    /// How the answer is degraded, if it is.
    pub fn degradation(&self) -> Option<Degraded> {
        match (self.approximate, self.key) {
            (Some(rung), Some(key)) => Some(Degraded::Approximate { rung, key }),
            _ if self.degraded => Some(Degraded::Fallback),
            _ => None,
        }
    }

    /// Seconds since the audio was synthesized (the `Age` header).
    pub fn age_secs(&self) -> u64 {
        SystemTime::now()
            .duration_since(self.created)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// The live audio a streaming request's answer is read from: the synthesis it started, or
/// the identical one already running that it `joined`.
#[derive(Debug, Clone)]
pub struct Tap {
    pub live: Arc<LiveAudio>,
    pub joined: bool,
}

/// Where a streaming request is handed its [`Tap`] once its synthesis starts or is joined
/// (dropped unsent when the answer came from a cache tier).
pub type Listen = tokio::sync::oneshot::Sender<Tap>;

/// Reads a queued request's live position and expected wait (None once it has a slot).
pub type Position = Arc<dyn Fn() -> Option<(usize, Duration)> + Send + Sync>;

/// Where a request is, told by the layers as it moves (a 202 job's poller reads it).
pub trait Report: Send + Sync {
    /// Waiting in a pool's queue for a GPU slot.
    fn queued(&self, position: Position);
    /// Holding a slot: the backend is synthesizing.
    fn running(&self);
    /// An attempt is being sent to `backend`.
    fn attempt(&self, _backend: SocketAddr) {}
    /// An attempt waited `wait` for its slot (zero when one was free).
    fn waited(&self, _wait: Duration) {}
}
