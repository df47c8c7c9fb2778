//! The upstream side: pools of CosyVoice backends, their health, the protocols they speak, and
//! the synthesis call that turns a validated request into a checked WAV or a clear error.

pub mod attempt;
pub mod fallback;
pub mod multipart;
pub mod pool;
pub mod protocol;

use crate::api::{ApiError, GenerateRequest};
use crate::config::GatewayConf;
use crate::jobs::{Phase, Progress};
use crate::metrics;
use crate::schedule::QueueError;
use attempt::AttemptError;
use bytes::Bytes;
use fallback::Fallback;
use indexmap::IndexMap;
use log::warn;
use pingora::connectors::http::Connector;
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use pingora::services::background::GenBackgroundService;
pub use pool::BackendPool;
pub use protocol::UpstreamRequest;
use std::net::SocketAddr;
use std::sync::Arc;

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

    /// The pool named by the client, or the default pool.
    pub fn pool(&self, name: Option<&str>) -> Result<&Arc<BackendPool>, ApiError> {
        let name = name.unwrap_or(&self.default_pool);
        self.pools.get(name).ok_or_else(|| {
            ApiError::new(
                404,
                "unknown_pool",
                format!(
                    "there is no pool named {name:?}; known pools: {}",
                    self.pools.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
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

    /// Translates a validated request into `pool`'s protocol, or refuses what the pool's
    /// backends cannot do (before any cache or backend work).
    pub fn prepare(&self, pool: &BackendPool, req: &GenerateRequest) -> Result<UpstreamRequest, ApiError> {
        protocol::build(&pool.conf, req)
    }

    /// Synthesizes a prepared request: waits for a GPU slot on a healthy, breaker-closed backend
    /// (fairly across `client`s), sends it under the pool's deadline, and retries a retryable
    /// failure on another backend up to `retry.attempts` times. When no backend can serve, or
    /// every attempt failed, the fallback voice answers if one is configured.
    pub async fn synthesize(
        &self,
        pool: &BackendPool,
        upstream: &UpstreamRequest,
        text: &str,
        client: &str,
        request_id: &str,
        progress: &Progress,
    ) -> Result<Synthesis, ApiError> {
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut last: Option<ApiError> = None;
        for _ in 0..=pool.conf.retry.attempts {
            let ticket = match pool.scheduler.ticket(client, tried.clone()) {
                Ok(t) => t,
                Err(QueueError::NoBackend) => break,
                Err(e) => return Err(e.to_api(&pool.name)),
            };
            set_phase(
                progress,
                Phase::Queued {
                    position: Arc::new(ticket.position_probe()),
                },
            );
            let slot = match ticket.slot().await {
                Ok(slot) => slot,
                Err(e) => return Err(e.to_api(&pool.name)),
            };
            set_phase(progress, Phase::Running);
            let addr = slot.addr();
            let outcome = attempt::send(&self.connector, addr, upstream, request_id, pool.conf.timeout.0)
                .await
                .and_then(|(status, body)| protocol::decode(&pool.conf, status, body));
            match outcome {
                Ok(wav) => {
                    slot.succeeded();
                    return Ok(Synthesis {
                        wav,
                        backend: Some(addr),
                        degraded: false,
                        cacheable: true,
                    });
                }
                Err(e @ AttemptError::Rejected { .. }) => {
                    // The backend is fine; the request is not. Never retried.
                    slot.succeeded();
                    return Err(attempt_error_to_api(&e));
                }
                Err(e) => {
                    slot.failed();
                    metrics::BACKEND_ERRORS
                        .with_label_values(&[&addr.to_string(), e.kind()])
                        .inc();
                    warn!("request {request_id}: pool {} backend {addr}: {e}", pool.name);
                    tried.push(addr);
                    last = Some(attempt_error_to_api(&e));
                }
            }
        }
        if let Some(fallback) = &self.fallback {
            let wav = fallback.speak(text).await?;
            warn!(
                "request {request_id}: pool {} could not serve; answered with the fallback voice",
                pool.name
            );
            return Ok(Synthesis {
                wav,
                backend: None,
                degraded: true,
                cacheable: fallback.cacheable,
            });
        }
        Err(last.unwrap_or_else(|| QueueError::NoBackend.to_api(&pool.name)))
    }
}

fn set_phase(progress: &Progress, phase: Phase) {
    *progress.lock().unwrap_or_else(|p| p.into_inner()) = phase;
}

/// What the client is told when the last attempt failed.
fn attempt_error_to_api(e: &AttemptError) -> ApiError {
    match e {
        AttemptError::Timeout(_) => ApiError::new(
            504,
            "backend_timeout",
            format!("the synthesis did not finish in time ({e}); try again, or with a shorter text"),
        ),
        AttemptError::Rejected { status, detail } => ApiError::new(
            *status,
            "backend_rejected",
            format!("the backend refused the request: {detail}"),
        ),
        _ => ApiError::new(
            502,
            "backend_failed",
            format!("the synthesis failed ({e}); try again"),
        ),
    }
}
