//! The upstream side: pools of CosyVoice backends, their health, the protocols they speak, and
//! the synthesis call that turns a validated request into a checked WAV or a clear error.

pub mod attempt;
pub mod deep_probe;
pub mod fallback;
pub mod gradio;
pub mod multipart;
pub mod pool;
pub mod precheck;
pub mod protocol;
mod synthesize;
pub mod triton;

use crate::api::GenerateRequest;
use crate::config::GatewayConf;
use crate::synth::Refusal;
pub use attempt::UpstreamRequest;
use bytes::Bytes;
use fallback::Fallback;
use indexmap::IndexMap;
use pingora::connectors::http::Connector;
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use pingora::services::background::GenBackgroundService;
pub use pool::BackendPool;
use std::net::SocketAddr;
use std::sync::Arc;
pub use synthesize::PoolFailure;

/// Audio produced by a backend, or by the fallback voice.
#[derive(Debug, Clone)]
pub struct Synthesis {
    pub wav: Bytes,
    /// None for fallback audio.
    pub backend: Option<SocketAddr>,
    /// From the fallback voice (`X-Degraded: fallback`).
    pub degraded: bool,
    /// Whether the cache may keep it.
    pub cacheable: bool,
}

/// A pool name no pool has; `message` says which names the caller may use instead (or none).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct UnknownPool {
    pub message: String,
}

/// A request accepted for a pool: checked against what the pool's backends can do, with its
/// text for the fallback voice. The backend's form of it (an HTTP request, or Triton's
/// tensors) is built on the first attempt, so a cache hit never builds it (for a prompt, a
/// copy into a multipart form, a second base64 encoding, or a resampling).
#[derive(Clone)]
pub struct Prepared {
    pub pool: Arc<BackendPool>,
    pub text: String,
    request: Arc<GenerateRequest>,
    built: Arc<tokio::sync::OnceCell<Result<Built, Refusal>>>,
}

/// A request in its backends' terms.
#[derive(Debug)]
pub enum Built {
    Http(UpstreamRequest),
    /// `protocol: triton` pools.
    Triton(triton::TritonCall),
}

impl Prepared {
    /// The request in its backends' terms, built once (off the worker threads when its prompt
    /// is large); shared by every attempt.
    pub async fn built(&self) -> &Result<Built, Refusal> {
        self.built
            .get_or_init(|| async {
                let (pool, req) = (self.pool.clone(), self.request.clone());
                let build = move || build(&pool.conf, &req);
                if self
                    .request
                    .prompt_audio
                    .as_ref()
                    .is_some_and(|a| a.len() > HEAVY_PROMPT)
                {
                    tokio::task::spawn_blocking(build).await.unwrap_or_else(|e| {
                        Err(Refusal::new(
                            "internal",
                            format!("building the request failed: {e}"),
                        ))
                    })
                } else {
                    build()
                }
            })
            .await
    }
}

/// Prompts larger than this are put in their backends' terms on the blocking pool.
const HEAVY_PROMPT: usize = 1024 * 1024;

fn build(conf: &crate::config::PoolConf, req: &GenerateRequest) -> Result<Built, Refusal> {
    match conf.protocol {
        crate::config::Protocol::Triton => Ok(Built::Triton(triton::build(conf, req)?)),
        _ => Ok(Built::Http(protocol::build(conf, req)?)),
    }
}

/// Every pool, the default one, and the shared connection pool to the backends.
pub struct PoolSet {
    pools: IndexMap<String, Arc<BackendPool>>,
    default_pool: String,
    connector: Connector,
    fallback: Option<Fallback>,
}

/// The background services (one health checker per pool) that must run beside the gateway.
pub type HealthServices = Vec<GenBackgroundService<LoadBalancer<RoundRobin>>>;

impl PoolSet {
    pub fn new(conf: &GatewayConf) -> Result<(Self, HealthServices), String> {
        let mut pools = IndexMap::new();
        let mut services = Vec::new();
        for (name, pool_conf) in &conf.pools.0 {
            let (pool, service) = BackendPool::new(name, pool_conf.clone())?;
            pools.insert(name.clone(), pool);
            services.push(service);
        }
        let default_pool = match &conf.default_pool {
            Some(name) => name.clone(),
            None => pools.keys().next().cloned().ok_or("no pools configured")?,
        };
        Ok((
            Self {
                pools,
                default_pool,
                connector: Connector::new(None),
                fallback: conf.fallback.as_ref().map(Fallback::new),
            },
            services,
        ))
    }

    /// The pool named by the client, or the default pool. An unknown name is `UnknownPool`; its message lists the pools only for a caller with a token, and only those
    /// `may_use` allows (`None`: an anonymous caller, who is told no names).
    pub fn pool(
        &self,
        name: Option<&str>,
        may_use: Option<&dyn Fn(&str) -> bool>,
    ) -> Result<&Arc<BackendPool>, UnknownPool> {
        let name = name.unwrap_or(&self.default_pool);
        self.pools.get(name).ok_or_else(|| {
            let known = match may_use {
                Some(may_use) => {
                    let names: Vec<&str> = self
                        .pools
                        .keys()
                        .map(String::as_str)
                        .filter(|p| may_use(p))
                        .collect();
                    format!("; pools you may use: {}", names.join(", "))
                }
                None => String::new(),
            };
            let shown: String = name.chars().take(64).filter(|c| !c.is_control()).collect();
            UnknownPool {
                message: format!(
                    "there is no pool named {shown:?}{known}; leave X-Cosygate-Pool out for the default pool"
                ),
            }
        })
    }

    pub fn pools(&self) -> impl Iterator<Item = &Arc<BackendPool>> {
        self.pools.values()
    }

    /// (healthy backends, all backends) over every pool.
    pub fn health_summary(&self) -> (usize, usize) {
        self.pools()
            .flat_map(|p| p.backends())
            .fold((0, 0), |(h, t), (_, ok)| (h + usize::from(ok), t + 1))
    }

    /// Whether a fallback voice can answer when no backend can.
    pub fn has_fallback(&self) -> bool {
        self.fallback.is_some()
    }

    /// Accepts a validated request for `pool`, or refuses what the pool's backends cannot do
    /// (before any cache or backend work; see [`precheck`] and `protocol::check`). Runs once per
    /// request; cheap: the backend's form of the request is built on the first attempt.
    pub fn prepare(&self, pool: &Arc<BackendPool>, req: &GenerateRequest) -> Result<Prepared, Refusal> {
        precheck::check(&pool.name, &pool.conf, req)?;
        protocol::check(&pool.conf, req)?;
        Ok(Prepared {
            pool: pool.clone(),
            text: req.text.clone(),
            request: Arc::new(req.clone()),
            built: Arc::default(),
        })
    }
}
