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

mod command;
mod lock;
mod probe;
#[cfg(test)]
mod tests;

pub use command::CommandError;
pub use lock::{Lock, RestartLock};

use crate::backend::{BackendPool, PoolSet};
use crate::config::{RestartConf, SupervisorConf};
use crate::metrics;
use crate::schedule::Scheduler;
use async_trait::async_trait;
use log::{error, info, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Serialize;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const HOUR: Duration = Duration::from_secs(3600);
/// The backoff doubles at most this many times.
const MAX_BACKOFF_DOUBLINGS: u32 = 6;

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
    fn gauge(self) -> i64 {
        match self {
            SupervisorState::Ok => 0,
            SupervisorState::Restarting => 1,
            SupervisorState::Warming => 2,
            SupervisorState::Failed => 3,
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
    enabled: bool,
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
                    .map(|(addr, restart)| Arc::new(Watch::new(pool, addr, restart)))
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
        Ok(Some(Self {
            watches,
            enabled: conf.enabled,
            lock,
        }))
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
            tasks.spawn(Arc::clone(w).run(self.enabled, self.lock.clone()));
        }
        let _ = shutdown.changed().await;
        tasks.abort_all();
    }
}

/// One supervised backend: where it is, how to restart it, and what happened so far.
struct Watch {
    pool: Arc<BackendPool>,
    addr: SocketAddr,
    /// `pool/addr`, in logs.
    name: String,
    conf: RestartConf,
    status: Mutex<BackendState>,
}

/// The watch loop's memory between ticks.
struct Tracker {
    /// Failed health checks in a row, as seen once per health interval.
    unhealthy: u32,
    /// When the restarts of the last hour were run.
    history: VecDeque<Instant>,
    /// Restarts since the backend was last stable for a cooldown.
    unhelpful: u32,
    /// No restart before this.
    next_allowed: Option<Instant>,
    /// Since when the backend has been fine (no trouble, warm-up over).
    fine_since: Option<Instant>,
    /// The slow start: current slot limit and when it doubles next.
    warm: Option<(usize, Instant)>,
    failed: bool,
    told_disabled: bool,
}

impl Tracker {
    fn new() -> Self {
        Self {
            unhealthy: 0,
            history: VecDeque::new(),
            unhelpful: 0,
            next_allowed: None,
            fine_since: Some(Instant::now()),
            warm: None,
            failed: false,
            told_disabled: false,
        }
    }
}

impl Watch {
    fn new(pool: &Arc<BackendPool>, addr: SocketAddr, conf: RestartConf) -> Self {
        Self {
            pool: Arc::clone(pool),
            addr,
            name: format!("{}/{addr}", pool.name),
            conf,
            status: Mutex::new(BackendState {
                pool: pool.name.clone(),
                addr,
                restarts: 0,
                state: SupervisorState::Ok,
            }),
        }
    }

    fn sched(&self) -> &Scheduler {
        &self.pool.scheduler
    }

    fn interval(&self) -> Duration {
        self.pool.conf.health.interval.0.max(Duration::from_millis(10))
    }

    /// The pool's health checker's verdict.
    fn healthy(&self) -> bool {
        self.pool.backends().iter().any(|&(a, ok)| a == self.addr && ok)
    }

    fn snapshot(&self) -> BackendState {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_state(&self, state: SupervisorState) {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).state = state;
        metrics::BACKEND_SUPERVISOR_STATE
            .with_label_values(&[&self.addr.to_string()])
            .set(state.gauge());
    }

    async fn run(self: Arc<Self>, enabled: bool, lock: Option<Arc<RestartLock>>) {
        let mut t = Tracker::new();
        let mut tick = tokio::time::interval(self.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.step(&mut t, enabled, lock.as_deref()).await {
                // A restart took a while: start counting afresh.
                tick.reset();
            }
        }
    }

    /// One look at the backend; true when a restart was attempted.
    async fn step(&self, t: &mut Tracker, enabled: bool, lock: Option<&RestartLock>) -> bool {
        let now = Instant::now();
        let healthy = self.healthy();
        t.unhealthy = if healthy { 0 } else { t.unhealthy.saturating_add(1) };
        let passive = self.sched().consecutive_failures(self.addr);
        let n = self.conf.after_failures.max(1);
        let trouble = if t.unhealthy >= n {
            Some(format!("{} failed health checks in a row", t.unhealthy))
        } else if passive >= n {
            Some(format!("{passive} failed requests in a row"))
        } else {
            None
        };
        if t.failed {
            if trouble.is_none() && healthy {
                t.failed = false;
                t.fine_since = Some(now);
                info!(
                    "supervisor: backend {} passes its health checks again; watching it again",
                    self.name
                );
                self.set_state(SupervisorState::Ok);
            }
            return false;
        }
        self.advance_warmup(t, now);
        let Some(reason) = trouble else {
            if t.warm.is_none() {
                let since = *t.fine_since.get_or_insert(now);
                if now.duration_since(since) >= self.conf.cooldown.0 {
                    t.unhelpful = 0;
                }
            }
            return false;
        };
        t.fine_since = None;
        if !enabled {
            if !t.told_disabled {
                t.told_disabled = true;
                warn!(
                    "supervisor: backend {} needs a restart ({reason}) but restarts are off in this instance (supervisor.enabled: false)",
                    self.name
                );
            }
            return false;
        }
        if t.next_allowed.is_some_and(|at| now < at) {
            return false;
        }
        while t
            .history
            .front()
            .is_some_and(|&at| now.duration_since(at) >= HOUR)
        {
            t.history.pop_front();
        }
        if t.history.len() >= self.conf.max_per_hour as usize {
            self.give_up(t, &reason);
            return false;
        }
        if let Some(l) = lock {
            match l.acquire(self.addr, self.lock_ttl()).await {
                Lock::Acquired => {}
                Lock::Held => {
                    info!(
                        "supervisor: backend {} needs a restart ({reason}); another gateway instance is restarting it",
                        self.name
                    );
                    t.next_allowed = Some(now + self.conf.cooldown.0);
                    return false;
                }
                Lock::Unavailable => {
                    warn!(
                        "supervisor: backend {} needs a restart ({reason}) but the restart lock in Redis cannot be taken; not restarting",
                        self.name
                    );
                    return false;
                }
            }
        }
        t.history.push_back(now);
        t.warm = None;
        let attempt = t.history.len();
        let result = self.restart(&reason, attempt).await;
        if let Some(l) = lock {
            l.release(self.addr, self.conf.cooldown.0).await;
        }
        let backoff = self.conf.cooldown.0 * 2u32.pow(t.unhelpful.min(MAX_BACKOFF_DOUBLINGS));
        t.unhelpful = t.unhelpful.saturating_add(1);
        t.next_allowed = Some(Instant::now() + backoff);
        t.unhealthy = 0;
        match result {
            Ok(()) => {
                let max = self.pool.conf.max_concurrency.max(1);
                if max > 1 {
                    self.sched().set_slot_limit(self.addr, Some(1));
                    t.warm = Some((1, Instant::now() + self.conf.warmup.0));
                    self.set_state(SupervisorState::Warming);
                } else {
                    self.set_state(SupervisorState::Ok);
                }
                self.sched().set_draining(self.addr, false);
            }
            Err(_) => {
                info!(
                    "supervisor: backend {}: next restart not before {} ms from now",
                    self.name,
                    backoff.as_millis()
                );
                self.set_state(SupervisorState::Ok);
            }
        }
        true
    }

    /// How long the Redis lock may be held: the command, then the wait for health.
    fn lock_ttl(&self) -> Duration {
        self.conf.timeout.0 + self.conf.ready_within.0 + Duration::from_secs(5)
    }

    /// Doubles the slow-start slot limit when its time has come; ends the warm-up at
    /// `max_concurrency`.
    fn advance_warmup(&self, t: &mut Tracker, now: Instant) {
        let Some((limit, at)) = t.warm else { return };
        if now < at {
            return;
        }
        let limit = limit.saturating_mul(2);
        if limit >= self.pool.conf.max_concurrency {
            t.warm = None;
            t.fine_since = Some(now);
            self.sched().set_slot_limit(self.addr, None);
            self.set_state(SupervisorState::Ok);
            info!(
                "supervisor: backend {} warmed up: all {} slots",
                self.name, self.pool.conf.max_concurrency
            );
        } else {
            t.warm = Some((limit, now + self.conf.warmup.0));
            self.sched().set_slot_limit(self.addr, Some(limit));
            info!("supervisor: backend {} warming up: {limit} slots", self.name);
        }
    }

    fn give_up(&self, t: &mut Tracker, reason: &str) {
        t.failed = true;
        t.warm = None;
        self.sched().set_draining(self.addr, false);
        self.sched().set_slot_limit(self.addr, None);
        self.set_state(SupervisorState::Failed);
        error!(
            "supervisor: GIVING UP on backend {}: it needs a restart ({reason}) but was already restarted {} times in the last hour (restart.max_per_hour); state failed, no more restarts: fix it by hand",
            self.name,
            t.history.len()
        );
    }

    /// Takes the backend out of rotation, runs the command, and waits for `healthy_after`
    /// good probes in a row. The backend stays drained on success (the caller lets it back in
    /// with a slot limit); it is let back in on failure (the health checks and breaker guard it).
    async fn restart(&self, reason: &str, attempt: usize) -> Result<(), String> {
        let started = Instant::now();
        self.sched().set_draining(self.addr, true);
        self.set_state(SupervisorState::Restarting);
        let restarts = {
            let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
            st.restarts += 1;
            st.restarts
        };
        warn!(
            "supervisor: restarting backend {} ({reason}); restart #{restarts}, {attempt} of at most {} this hour",
            self.name, self.conf.max_per_hour
        );
        let outcome = match command::run(&self.conf, &self.name).await {
            Err(e) => Err((e.outcome(), format!("the restart command failed: {e}"))),
            Ok(()) => self.wait_healthy().await.map_err(|e| ("unhealthy", e)),
        };
        let ms = started.elapsed().as_millis();
        let backend = self.addr.to_string();
        match outcome {
            Ok(()) => {
                metrics::BACKEND_RESTARTS
                    .with_label_values(&[&backend, "ok"])
                    .inc();
                self.sched().forget_failures(self.addr);
                info!(
                    "supervisor: restart of backend {} ok: healthy again {ms} ms after the restart began ({reason})",
                    self.name
                );
                Ok(())
            }
            Err((label, why)) => {
                metrics::BACKEND_RESTARTS
                    .with_label_values(&[&backend, label])
                    .inc();
                self.sched().set_draining(self.addr, false);
                error!(
                    "supervisor: restart of backend {} failed ({label}) after {ms} ms: {why} (restarted because: {reason})",
                    self.name
                );
                Err(why)
            }
        }
    }

    /// Probes the health path every health interval until `healthy_after` probes in a row pass,
    /// at most `restart.ready_within`.
    async fn wait_healthy(&self) -> Result<(), String> {
        let hc = &self.pool.conf.health;
        let need = hc.healthy_after.max(1);
        let deadline = Instant::now() + self.conf.ready_within.0;
        let mut good = 0;
        loop {
            tokio::time::sleep(self.interval()).await;
            if probe::healthy(self.addr, self.pool.conf.health_path(), hc.timeout.0).await {
                good += 1;
                if good >= need {
                    return Ok(());
                }
            } else {
                good = 0;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not healthy within {} ms after the command (restart.ready_within)",
                    self.conf.ready_within.0.as_millis()
                ));
            }
        }
    }
}
