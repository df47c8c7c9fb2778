//! The `cosygate:` section of the YAML file, as plain structs. Every struct refuses unknown
//! keys; every default here is the one the README's config reference shows. Values that can be
//! checked on their own (units, addresses, non-empty lists, names) are checked while parsing, so
//! the error carries the line it stands on.

use super::units::{ByteSize, ConfDuration};
use indexmap::IndexMap;
use serde::{de, Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything under `cosygate:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConf {
    /// Public listeners (`POST /generate`, `GET /health`).
    pub listen: NonEmpty<ListenConf>,
    /// Request limits; always in force, with defaults.
    #[serde(default)]
    pub limits: LimitsConf,
    /// Backend pools by name, in file order.
    pub pools: Pools,
    /// The pool a request goes to when it does not name one with `X-Cosygate-Pool`.
    /// Required when there is more than one pool.
    #[serde(default)]
    pub default_pool: Option<String>,
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
}

impl Default for LimitsConf {
    fn default() -> Self {
        Self {
            max_body: ByteSize(10 * 1024 * 1024),
            max_text_chars: 200,
            max_prompt_seconds: 30.0,
        }
    }
}

/// How the gateway talks to a pool's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// CosyVoice's own FastAPI server: multipart forms in, raw int16 PCM out.
    CosyvoiceFastapi,
    /// A server that takes our JSON body and answers `audio/wav` (cosyvoice-sim's `/generate`).
    GenerateJson,
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
    /// Sample rate of the raw PCM the backends send (`cosyvoice_fastapi`).
    #[serde(default = "default_sample_rate")]
    pub sample_rate: u32,
    #[serde(default)]
    pub health: HealthConf,
    /// Deadline for one backend attempt, from connect to the last audio byte.
    #[serde(default = "default_timeout")]
    pub timeout: ConfDuration,
    pub backends: NonEmpty<BackendConf>,
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
    /// (the real server has no health route), `/health` for `generate_json`.
    pub path: Option<String>,
    pub interval: ConfDuration,
    pub timeout: ConfDuration,
    /// Consecutive failed checks that mark a healthy backend down.
    pub unhealthy_after: usize,
    /// Consecutive good checks that bring a down backend back.
    pub healthy_after: usize,
}

impl Default for HealthConf {
    fn default() -> Self {
        Self {
            path: None,
            interval: ConfDuration(Duration::from_secs(2)),
            timeout: ConfDuration(Duration::from_secs(1)),
            unhealthy_after: 3,
            healthy_after: 1,
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
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConf {
    pub addr: SocketAddr,
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
