//! The `cosygate:` section of the YAML file, as plain structs. Every struct refuses unknown
//! keys; every default here is the one the README's config reference shows. Values that can be
//! checked on their own (units, addresses, non-empty lists, names) are checked while parsing, so
//! the error carries the line it stands on.

use super::units::{ByteSize, ConfDuration};
use serde::{de, Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod admission;
mod cache;
mod degrade;
mod pools;
mod services;
mod voices;

pub use admission::*;
pub use cache::*;
pub use degrade::*;
pub use pools::*;
pub use services::*;
pub use voices::*;

/// Everything under `cosygate:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConf {
    /// Public listeners (`POST /generate`, `GET /health`).
    pub listen: NonEmpty<ListenConf>,
    /// The operators' listener (metrics, backends, purge, status page); absent = none.
    #[serde(default)]
    pub admin: Option<AdminConf>,
    /// Request limits; always in force, with defaults.
    #[serde(default)]
    pub limits: LimitsConf,
    /// API tokens; absent = everyone is anonymous.
    #[serde(default)]
    pub auth: Option<AuthConf>,
    /// Per-client token buckets; absent = no rate limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConf>,
    /// The WAV cache; absent = no cache (every answer `X-Cache: BYPASS`).
    #[serde(default)]
    pub cache: Option<CacheConf>,
    /// A local voice engine for when no backend can serve; absent = 502/503/504 instead.
    #[serde(default)]
    pub fallback: Option<FallbackConf>,
    /// 202 Accepted jobs.
    #[serde(default)]
    pub jobs: JobsConf,
    /// Registered voices (`/v1/voices`, `voice_id`); absent = off.
    #[serde(default)]
    pub voices: Option<VoicesConf>,
    /// Backend pools by name, in file order.
    pub pools: Pools,
    /// Restarting unhealthy backends (`backends[].restart`).
    #[serde(default)]
    pub supervisor: SupervisorConf,
    /// The pool a request goes to when it does not name one with `X-Cosygate-Pool`.
    /// Required when there is more than one pool.
    #[serde(default)]
    pub default_pool: Option<String>,
}

impl GatewayConf {
    /// The longest any request may take: its pool's queue wait and deadline, then the fallback
    /// voice, plus a little for writing the answer and its cache entry. The default drain
    /// deadline (`grace_period_seconds`).
    pub fn slowest_request(&self) -> Duration {
        let pools = self
            .pools
            .0
            .values()
            .map(|p| p.queue.max_wait.0 + p.request_deadline())
            .max()
            .unwrap_or_default();
        let fallback = self.fallback.as_ref().map_or(Duration::ZERO, |f| f.timeout.0);
        pools + fallback + Duration::from_secs(5)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConf {
    pub addr: SocketAddr,
    /// Serve TLS (rustls) on this address with this certificate chain and key (PEM).
    #[serde(default)]
    pub tls: Option<TlsConf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConf {
    /// Largest request body accepted; larger ones get 413 without being read.
    pub max_body: ByteSize,
    /// Longest `text`, in Unicode characters after trimming.
    pub max_text_chars: usize,
    /// Longest prompt audio, in seconds.
    pub max_prompt_seconds: f64,
    /// Total time a client has to send its request headers, from the connection (or the
    /// previous request) on; slower clients are disconnected.
    pub header_timeout: ConfDuration,
    /// Total time a client has to send its request body once the headers are in (408).
    pub body_timeout: ConfDuration,
    /// Largest request header block (431).
    pub max_header_bytes: ByteSize,
    /// Most request header fields (431).
    pub max_headers: usize,
    /// Most open connections from one client (an IPv4 address or an IPv6 /64); more are
    /// answered 429 `too_many_connections` and closed.
    pub max_connections_per_ip: usize,
    /// Most open connections from one of `rate_limit.trusted_proxies` (it carries many clients).
    pub max_connections_per_proxy: usize,
    /// Most request-body bytes held at once, over all requests; beyond it new bodies are
    /// refused with 503 `server_busy` before they are read.
    pub max_bodies_in_flight: ByteSize,
}

impl Default for LimitsConf {
    fn default() -> Self {
        Self {
            max_body: ByteSize(10 * 1024 * 1024),
            max_text_chars: 200,
            max_prompt_seconds: 30.0,
            header_timeout: ConfDuration(Duration::from_secs(10)),
            body_timeout: ConfDuration(Duration::from_secs(30)),
            max_header_bytes: ByteSize(32 * 1024),
            max_headers: 64,
            // A school or an office behind one NAT address: hundreds of people, a few
            // connections each. An idle HTTP/1.1 connection costs about 4 KiB (README, "Benchmarks").
            max_connections_per_ip: 1024,
            max_connections_per_proxy: 16384,
            max_bodies_in_flight: ByteSize(256 * 1024 * 1024),
        }
    }
}

/// A list that must have at least one entry.
#[derive(Debug, Clone)]
pub struct NonEmpty<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for NonEmpty<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<T>::deserialize(d)?;
        if v.is_empty() {
            return Err(de::Error::custom(
                "an empty list where at least one entry is needed (listen, backends)",
            ));
        }
        Ok(Self(v))
    }
}
