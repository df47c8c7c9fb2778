//! A pool of backends that serve the same model: their addresses, the active HTTP health check
//! (pingora-load-balancing, run as a Pingora background service), and which backend gets the
//! next request. Only backends that pass their health check are picked.

use crate::config::PoolConf;
use async_trait::async_trait;
use log::{info, warn};
use pingora::http::RequestHeader;
use pingora::lb::health_check::{HealthObserve, HttpHealthCheck};
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, LoadBalancer};
use pingora::services::background::{background_service, GenBackgroundService};
use std::net::SocketAddr;
use std::sync::Arc;

/// One named pool: its settings and its health-checked backends.
pub struct BackendPool {
    pub name: String,
    pub conf: PoolConf,
    lb: Arc<LoadBalancer<RoundRobin>>,
}

impl BackendPool {
    /// Builds the pool and the background service that health-checks it. The service must be
    /// added to the Pingora server, or every backend stays "healthy" forever.
    pub fn new(
        name: &str,
        conf: PoolConf,
    ) -> Result<(Arc<Self>, GenBackgroundService<LoadBalancer<RoundRobin>>), String> {
        let addrs: Vec<String> = conf.backends.0.iter().map(|b| b.addr.to_string()).collect();
        let mut lb = LoadBalancer::<RoundRobin>::try_from_iter(addrs.iter().map(String::as_str))
            .map_err(|e| format!("pool {name}: {e}"))?;
        lb.set_health_check(health_check(name, &conf)?);
        lb.health_check_frequency = Some(conf.health.interval.0);
        lb.parallel_health_check = true;
        let service = background_service(&format!("health check {name}"), lb);
        let pool = Arc::new(Self {
            name: name.to_string(),
            conf,
            lb: service.task(),
        });
        Ok((pool, service))
    }

    /// The next healthy backend in round-robin order that `accept` allows, if any.
    pub fn pick(&self, accept: impl Fn(SocketAddr) -> bool) -> Option<SocketAddr> {
        self.lb
            .select_with(b"", 256, |b, healthy| {
                healthy && b.addr.as_inet().is_some_and(|a| accept(*a))
            })
            .and_then(|b| b.addr.as_inet().copied())
    }

    /// Every backend with its current health.
    pub fn backends(&self) -> Vec<(SocketAddr, bool)> {
        let backends = self.lb.backends();
        backends
            .get_backend()
            .iter()
            .filter_map(|b| b.addr.as_inet().map(|a| (*a, backends.ready(b))))
            .collect()
    }
}

fn health_check(pool: &str, conf: &PoolConf) -> Result<Box<HttpHealthCheck>, String> {
    let mut hc = HttpHealthCheck::new("localhost", false);
    hc.req = RequestHeader::build("GET", conf.health_path().as_bytes(), None)
        .and_then(|mut r| r.insert_header("Host", "localhost").map(|_| r))
        .map_err(|e| format!("pool {pool}: bad health.path: {e}"))?;
    hc.consecutive_success = conf.health.healthy_after;
    hc.consecutive_failure = conf.health.unhealthy_after;
    hc.peer_template.options.connection_timeout = Some(conf.health.timeout.0);
    hc.peer_template.options.read_timeout = Some(conf.health.timeout.0);
    hc.peer_template.options.total_connection_timeout = Some(conf.health.timeout.0);
    hc.reuse_connection = false;
    hc.health_changed_callback = Some(Box::new(HealthLog {
        pool: pool.to_string(),
    }));
    Ok(Box::new(hc))
}

/// Logs every health flip, naming the pool and the backend.
struct HealthLog {
    pool: String,
}

#[async_trait]
impl HealthObserve for HealthLog {
    async fn observe(&self, target: &Backend, healthy: bool) {
        if healthy {
            info!("pool {} backend {} is healthy again", self.pool, target.addr);
        } else {
            warn!(
                "pool {} backend {} failed its health check and gets no traffic",
                self.pool, target.addr
            );
        }
    }
}
