//! A pool of backends that serve the same model: their addresses, the active HTTP health check
//! (pingora-load-balancing, run as a Pingora background service), and the pool's scheduler,
//! which hands out GPU slots only on backends that pass their health check.

use crate::config::PoolConf;
use crate::schedule::{HealthFn, RetryBudget, Scheduler};
use async_trait::async_trait;
use log::{info, warn};
use parking_lot::Mutex;
use pingora::http::RequestHeader;
use pingora::lb::health_check::{HealthObserve, HttpHealthCheck};
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, LoadBalancer};
use pingora::services::background::{background_service, GenBackgroundService};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

/// One named pool: its settings and its health-checked backends.
pub struct BackendPool {
    pub name: String,
    pub conf: PoolConf,
    lb: Arc<LoadBalancer<RoundRobin>>,
    /// GPU slots, the fair queue and the circuit breakers of this pool's backends.
    pub scheduler: Arc<Scheduler>,
    /// How many retries the pool may still send (`retry.budget_*`).
    pub retry_budget: RetryBudget,
    /// Backends that failed their last deep probe (`health.synthesize_every`).
    pub deep: Arc<DeepHealth>,
}

/// The deep probe's verdicts: which backends answer liveness checks but cannot synthesize.
#[derive(Debug, Default)]
pub struct DeepHealth {
    failing: Mutex<HashSet<SocketAddr>>,
}

impl DeepHealth {
    pub fn failing(&self, addr: SocketAddr) -> bool {
        self.failing.lock().contains(&addr)
    }

    /// Records a probe's verdict; true when it changed.
    pub fn record(&self, addr: SocketAddr, synthesizes: bool) -> bool {
        let mut failing = self.failing.lock();
        if synthesizes {
            failing.remove(&addr)
        } else {
            failing.insert(addr)
        }
    }
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
        let lb = service.task();
        let by_addr: HashMap<SocketAddr, Backend> = lb
            .backends()
            .get_backend()
            .iter()
            .filter_map(|b| b.addr.as_inet().map(|a| (*a, b.clone())))
            .collect();
        let health_lb = lb.clone();
        let deep = Arc::new(DeepHealth::default());
        let deep_verdicts = deep.clone();
        let healthy: HealthFn = Arc::new(move |addr: SocketAddr| {
            by_addr.get(&addr).is_some_and(|b| health_lb.backends().ready(b)) && !deep_verdicts.failing(addr)
        });
        let addrs: Vec<SocketAddr> = conf.backends.0.iter().map(|b| b.addr).collect();
        let scheduler = Scheduler::new(
            name,
            &addrs,
            conf.max_concurrency,
            &conf.queue,
            &conf.circuit_breaker,
            healthy,
        );
        let retry_budget = RetryBudget::new(
            conf.retry.budget_ratio,
            conf.retry.budget_min,
            conf.retry.budget_window.0,
        );
        let pool = Arc::new(Self {
            name: name.to_string(),
            conf,
            lb,
            scheduler,
            retry_budget,
            deep,
        });
        Ok((pool, service))
    }

    /// Every backend with its current health: it passes its liveness check and did not fail
    /// its last deep probe.
    pub fn backends(&self) -> Vec<(SocketAddr, bool)> {
        let backends = self.lb.backends();
        backends
            .get_backend()
            .iter()
            .filter_map(|b| {
                b.addr
                    .as_inet()
                    .map(|a| (*a, backends.ready(b) && !self.deep.failing(*a)))
            })
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
