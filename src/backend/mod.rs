//! The upstream side: pools of CosyVoice backends, their health, the protocols they speak, and
//! the synthesis call that turns a validated request into a checked WAV or a clear error.

pub mod attempt;
pub mod fallback;
pub mod multipart;
pub mod pool;
pub mod protocol;

use crate::api::{ApiError, GenerateRequest};
use crate::config::GatewayConf;
use attempt::AttemptError;
use bytes::Bytes;
use indexmap::IndexMap;
use log::warn;
use pingora::connectors::http::Connector;
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use pingora::services::background::GenBackgroundService;
pub use pool::BackendPool;
pub use protocol::UpstreamRequest;
use std::net::SocketAddr;
use std::sync::Arc;

/// Audio produced by a backend.
#[derive(Debug, Clone)]
pub struct Synthesis {
    pub wav: Bytes,
    pub backend: SocketAddr,
}

/// Every pool, the default one, and the shared connection pool to the backends.
pub struct PoolSet {
    pools: IndexMap<String, Arc<BackendPool>>,
    default_pool: String,
    connector: Connector,
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

    /// Translates a validated request into `pool`'s protocol, or refuses what the pool's
    /// backends cannot do (before any cache or backend work).
    pub fn prepare(&self, pool: &BackendPool, req: &GenerateRequest) -> Result<UpstreamRequest, ApiError> {
        protocol::build(&pool.conf, req)
    }

    /// Synthesizes a prepared request on a healthy backend of `pool`.
    pub async fn synthesize(
        &self,
        pool: &BackendPool,
        upstream: &UpstreamRequest,
        request_id: &str,
    ) -> Result<Synthesis, ApiError> {
        let Some(addr) = pool.pick(|_| true) else {
            return Err(ApiError::new(
                503,
                "no_backend_available",
                format!(
                    "no backend of pool {} is healthy right now; try again shortly",
                    pool.name
                ),
            )
            .with_retry_after(5));
        };
        let outcome = attempt::send(&self.connector, addr, upstream, request_id, pool.conf.timeout.0).await;
        let result = outcome.and_then(|(status, body)| protocol::decode(&pool.conf, status, body));
        match result {
            Ok(wav) => Ok(Synthesis { wav, backend: addr }),
            Err(e) => {
                warn!("request {request_id}: pool {} backend {addr}: {e}", pool.name);
                Err(attempt_error_to_api(&e))
            }
        }
    }
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
