//! Self-healing: a background service that watches every backend with a `restart:` section and
//! restarts it when it stays unhealthy, without ever causing a restart storm.
//!
//! ```text
//!  ok ──after_failures failed checks, or failed requests in a row──► restarting (no traffic)
//!   ▲                                                                   │ command ran, then
//!   │ slot limit 1, 2, 4 … every `warmup`                               │ healthy_after good probes
//!  warming ◄────────────────────────────────────────────────────────────┘
//!  any restart beyond max_per_hour in the last hour ──► failed (logged at error, left alone)
//! ```
//!
//! Guards: `cooldown` between two restarts of one backend, doubled for each restart that did not
//! help (the backend was not stable for a cooldown since); `max_per_hour`; with several gateway
//! instances, a Redis lock per backend (`supervisor.redis`) or a single instance with
//! `supervisor.enabled: true`. Traffic is steered through the pool's scheduler
//! ([`Scheduler::set_draining`], [`Scheduler::set_slot_limit`]).
//!
//! Split in two: [`machine`] decides (a pure state machine: observation in, actions out, no
//! clock or I/O, tested with plain instants) and [`watch`] acts (the loop per backend, the
//! scheduler, the restart [`command`], the health [`probe`], the Redis [`lock`], logs and
//! metrics). This module holds the service and what operators see.
//!
//! [`Scheduler::set_draining`]: crate::schedule::Scheduler::set_draining
//! [`Scheduler::set_slot_limit`]: crate::schedule::Scheduler::set_slot_limit

mod command;
mod lock;
mod machine;
#[cfg(test)]
mod machine_tests;
mod probe;
#[cfg(test)]
mod tests;
mod watch;

pub use command::CommandError;
pub use lock::{Lock, RestartLock};

use crate::backend::PoolSet;
use crate::config::SupervisorConf;
use async_trait::async_trait;
use log::info;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use watch::Watch;

/// What the supervisor thinks of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SupervisorState {
    /// Serving (or never needed a restart).
    Ok,
    /// Being restarted: no traffic until it passes its health checks.
    Restarting,
    /// Back after a restart, with fewer slots until the warm-up is over.
    Warming,
    /// Restarts gave up (`max_per_hour` reached); nothing more is tried.
    Failed,
}

impl SupervisorState {
    /// Its value in the `cosygate_backend_supervisor_state` gauge.
    fn gauge(self) -> i64 {
        match self {
            SupervisorState::Ok => 0,
            SupervisorState::Restarting => 1,
            SupervisorState::Warming => 2,
            SupervisorState::Failed => 3,
        }
    }

    /// Its name in `/admin/backends` (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            SupervisorState::Ok => "ok",
            SupervisorState::Restarting => "restarting",
            SupervisorState::Warming => "warming",
            SupervisorState::Failed => "failed",
        }
    }
}

/// One supervised backend as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendState {
    pub pool: String,
    pub addr: SocketAddr,
    /// Restart commands run since the gateway started.
    pub restarts: u64,
    pub state: SupervisorState,
}

/// The supervisor of every backend that has a `restart:` section. Cheap to clone: clones share
/// the state, so one can run as the background service while another answers [`states`].
///
/// [`states`]: Supervisor::states
#[derive(Clone)]
pub struct Supervisor {
    watches: Vec<Arc<Watch>>,
    lock: Option<Arc<RestartLock>>,
}

impl Supervisor {
    /// None when no backend has a `restart:` section.
    pub fn new(conf: &SupervisorConf, pools: &PoolSet) -> Result<Option<Self>, String> {
        let watches: Vec<Arc<Watch>> = pools
            .pools()
            .flat_map(|pool| {
                pool.conf
                    .backends
                    .0
                    .iter()
                    .filter_map(|b| b.restart.clone().map(|r| (b.addr, r)))
                    .map(|(addr, restart)| Arc::new(Watch::new(pool, addr, restart, conf.enabled)))
                    .collect::<Vec<_>>()
            })
            .collect();
        if watches.is_empty() {
            return Ok(None);
        }
        let lock = match &conf.redis {
            Some(r) => Some(Arc::new(
                RestartLock::new(r).map_err(|e| format!("supervisor.redis: {e}"))?,
            )),
            None => None,
        };
        if !conf.enabled {
            info!(
                "supervisor: restarts are off in this instance (supervisor.enabled: false); {} backend(s) have a restart command",
                watches.len()
            );
        }
        for w in &watches {
            w.set_state(SupervisorState::Ok);
        }
        Ok(Some(Self { watches, lock }))
    }

    /// Every supervised backend: address, restarts so far, state.
    pub fn states(&self) -> Vec<BackendState> {
        self.watches.iter().map(|w| w.snapshot()).collect()
    }
}

#[async_trait]
impl BackgroundService for Supervisor {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tasks = tokio::task::JoinSet::new();
        for w in &self.watches {
            tasks.spawn(Arc::clone(w).run(self.lock.clone()));
        }
        let _ = shutdown.changed().await;
        tasks.abort_all();
    }
}
