//! The sections beside the pools: `admin`, `fallback`, `jobs`, `supervisor`.

use super::admission::default_true;
use super::{ListenConf, NonEmpty, RedisConf, Sha256Hex};
use crate::config::units::{ByteSize, ConfDuration};
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// `admin:` the operators' listener: `/metrics`, `/admin/backends`, `/admin/cache/purge`, the
/// status page. Never one of the public addresses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConf {
    pub addr: SocketAddr,
    /// Lowercase hex sha256 of the admin token; every admin request then needs
    /// `Authorization: Bearer <token>`. Required unless `addr` is a loopback address.
    #[serde(default)]
    pub token_sha256: Option<Sha256Hex>,
}

impl AdminConf {
    /// Refuses an admin address that a public listener also binds (the same port on the same or
    /// a wildcard address), and one reachable from other hosts without a token.
    pub fn check(&self, listen: &[ListenConf]) -> Result<(), String> {
        let admin = self.addr;
        for l in listen {
            let public = l.addr;
            let overlaps = public.port() == admin.port()
                && (public.ip() == admin.ip() || public.ip().is_unspecified() || admin.ip().is_unspecified());
            if overlaps {
                return Err(format!(
                    "admin.addr {admin} would share the public address {public}; give the admin \
                     listener its own port, e.g. 127.0.0.1:9090"
                ));
            }
        }
        if !admin.ip().is_loopback() && self.token_sha256.is_none() {
            return Err(format!(
                "admin.addr {admin} is reachable from other hosts and has no token_sha256: set \
                 one (scripts/new-token.sh prints a token and its sha256) or bind to 127.0.0.1"
            ));
        }
        Ok(())
    }
}

/// `fallback:` a local voice engine for when no backend can serve.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConf {
    /// argv (no shell); `{out}` is replaced by the output WAV path. The text arrives on stdin;
    /// `{text}` may stand only after `--` or as `--name={text}` (see `backend::fallback`).
    pub command: NonEmpty<String>,
    /// Most fallback processes at once.
    #[serde(default = "default_fallback_concurrency")]
    pub concurrency: usize,
    /// Longest a fallback process may run.
    #[serde(default = "default_fallback_timeout")]
    pub timeout: ConfDuration,
    /// Whether fallback audio may be cached (normally not: it is not the requested voice).
    #[serde(default)]
    pub cache: bool,
}

fn default_fallback_concurrency() -> usize {
    2
}

fn default_fallback_timeout() -> ConfDuration {
    ConfDuration(Duration::from_secs(10))
}

/// `jobs:` 202 Accepted jobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConf {
    /// How long a finished job's result can be fetched.
    pub keep: ConfDuration,
    /// Most jobs kept at once (queued, running and finished); the oldest finished go first.
    pub max: usize,
    /// Most bytes of finished results held; past it the oldest results are dropped (their
    /// owners get 404 `job_expired`).
    pub max_bytes: ByteSize,
    /// Most unfinished jobs one caller (token, or IP when anonymous) may hold (429 beyond).
    pub max_unfinished_per_caller: usize,
}

impl Default for JobsConf {
    fn default() -> Self {
        Self {
            keep: ConfDuration(Duration::from_secs(600)),
            max: 10_000,
            max_bytes: ByteSize(256 << 20),
            max_unfinished_per_caller: 32,
        }
    }
}

/// `supervisor:` this instance's part in restarting backends (`backends[].restart`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorConf {
    /// Whether this instance runs restart commands at all. With several instances and no
    /// `redis`, turn it on in exactly one.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A lock per backend in Redis (`SET NX PX`), so that of several instances only one
    /// restarts a given backend at a time.
    #[serde(default)]
    pub redis: Option<RedisConf>,
}

impl Default for SupervisorConf {
    fn default() -> Self {
        Self {
            enabled: true,
            redis: None,
        }
    }
}
