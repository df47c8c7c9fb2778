//! Supervising one backend, the effects: every health interval the watch loop looks at the
//! backend (the pool's health verdict, the scheduler's failed requests in a row), hands that to
//! its [`Machine`], and carries out what comes back: slot limits and draining in the pool's
//! scheduler, the Redis restart lock, the restart command, the wait for the backend's health,
//! logs, metrics and the state operators see.

use super::command;
use super::lock::{Lock, RestartLock};
use super::machine::{Action, AfterRestart, Machine, Observation, Settings, Trouble};
use super::probe;
use super::{BackendState, SupervisorState};
use crate::backend::BackendPool;
use crate::config::RestartConf;
use crate::metrics;
use crate::schedule::Scheduler;
use log::{error, info, warn};
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// One supervised backend: where it is, how to restart it, and what operators see of it.
pub(super) struct Watch {
    pool: Arc<BackendPool>,
    addr: SocketAddr,
    /// `pool/addr`, in logs.
    name: String,
    conf: RestartConf,
    /// Whether this instance restarts (`supervisor.enabled`).
    enabled: bool,
    status: Mutex<BackendState>,
}

impl Watch {
    pub fn new(pool: &Arc<BackendPool>, addr: SocketAddr, conf: RestartConf, enabled: bool) -> Self {
        Self {
            pool: Arc::clone(pool),
            addr,
            name: format!("{}/{addr}", pool.name),
            conf,
            enabled,
            status: Mutex::new(BackendState {
                pool: pool.name.clone(),
                addr,
                restarts: 0,
                state: SupervisorState::Ok,
            }),
        }
    }

    /// A fresh state machine for this backend, fine as of now.
    pub fn machine(&self) -> Machine {
        let settings = Settings::new(&self.conf, self.pool.conf.max_concurrency, self.enabled);
        Machine::new(settings, Instant::now())
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

    pub fn snapshot(&self) -> BackendState {
        self.status.lock().clone()
    }

    /// Shows `state` to operators (`states()` and the state gauge).
    pub fn set_state(&self, state: SupervisorState) {
        self.status.lock().state = state;
        metrics::BACKEND_SUPERVISOR_STATE
            .with_label_values(&[&self.addr.to_string()])
            .set(state.gauge());
    }

    /// Shows the machine's state, when it changed.
    fn publish(&self, machine: &Machine) {
        let state = machine.state();
        if self.snapshot().state != state {
            self.set_state(state);
        }
    }

    pub async fn run(self: Arc<Self>, lock: Option<Arc<RestartLock>>) {
        let mut machine = self.machine();
        let mut tick = tokio::time::interval(self.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.step(&mut machine, lock.as_deref()).await {
                // A restart took a while: start counting afresh.
                tick.reset();
            }
        }
    }

    /// One look at the backend, and what the machine makes of it; true when a restart was
    /// attempted.
    pub async fn step(&self, machine: &mut Machine, lock: Option<&RestartLock>) -> bool {
        let obs = Observation {
            now: Instant::now(),
            healthy: self.healthy(),
            failed_requests: self.sched().consecutive_failures(self.addr),
        };
        let mut restarted = false;
        for action in machine.observe(obs) {
            match action {
                Action::Recovered => info!(
                    "supervisor: backend {} passes its health checks again; watching it again",
                    self.name
                ),
                Action::WarmUp { slots } => {
                    self.sched().set_slot_limit(self.addr, Some(slots));
                    info!("supervisor: backend {} warming up: {slots} slots", self.name);
                }
                Action::WarmedUp => {
                    self.sched().set_slot_limit(self.addr, None);
                    info!(
                        "supervisor: backend {} warmed up: all {} slots",
                        self.name, self.pool.conf.max_concurrency
                    );
                }
                Action::RestartsOff { trouble } => warn!(
                    "supervisor: backend {} needs a restart ({trouble}) but restarts are off in this instance (supervisor.enabled: false)",
                    self.name
                ),
                Action::GiveUp { trouble, restarts } => {
                    self.sched().set_draining(self.addr, false);
                    self.sched().set_slot_limit(self.addr, None);
                    error!(
                        "supervisor: GIVING UP on backend {}: it needs a restart ({trouble}) but was already restarted {restarts} times in the last hour (restart.max_per_hour); state failed, no more restarts: fix it by hand",
                        self.name
                    );
                }
                Action::Restart { trouble, attempt } => {
                    restarted = self.restart(machine, lock, trouble, attempt, obs.now).await;
                }
            }
            self.publish(machine);
        }
        restarted
    }

    /// Carries out a restart the machine asked for at `now`: the lock (if any), then the
    /// backend out of rotation, the command and the wait for its health; then back in as the
    /// machine says. False when it did not run (the lock is held elsewhere, or Redis is down).
    async fn restart(
        &self,
        machine: &mut Machine,
        lock: Option<&RestartLock>,
        trouble: Trouble,
        attempt: usize,
        now: Instant,
    ) -> bool {
        if let Some(l) = lock {
            match l.acquire(self.addr, self.lock_ttl()).await {
                Lock::Acquired => {}
                Lock::Held => {
                    info!(
                        "supervisor: backend {} needs a restart ({trouble}); another gateway instance is restarting it",
                        self.name
                    );
                    machine.restart_elsewhere(now);
                    return false;
                }
                Lock::Unavailable => {
                    warn!(
                        "supervisor: backend {} needs a restart ({trouble}) but the restart lock in Redis cannot be taken; not restarting",
                        self.name
                    );
                    return false;
                }
            }
        }
        machine.restart_started(now);
        self.sched().set_draining(self.addr, true);
        self.publish(machine);
        let result = self.run_restart(trouble, attempt).await;
        if let Some(l) = lock {
            l.release(self.addr, self.conf.cooldown.0).await;
        }
        match machine.restart_finished(Instant::now(), result.is_ok()) {
            AfterRestart::SlowStart => {
                self.sched().set_slot_limit(self.addr, Some(1));
                self.sched().set_draining(self.addr, false);
            }
            AfterRestart::Serve => self.sched().set_draining(self.addr, false),
            AfterRestart::Failed { backoff } => {
                self.sched().set_draining(self.addr, false);
                info!(
                    "supervisor: backend {}: next restart not before {} ms from now",
                    self.name,
                    backoff.as_millis()
                );
            }
        }
        true
    }

    /// How long the Redis lock may be held: the command, then the wait for health.
    fn lock_ttl(&self) -> Duration {
        self.conf.timeout.0 + self.conf.ready_within.0 + Duration::from_secs(5)
    }

    /// Runs the command and waits for `healthy_after` good probes in a row; counts, logs and
    /// measures the restart. The backend is drained meanwhile (by the caller).
    async fn run_restart(&self, trouble: Trouble, attempt: usize) -> Result<(), String> {
        let started = Instant::now();
        let restarts = {
            let mut st = self.status.lock();
            st.restarts += 1;
            st.restarts
        };
        warn!(
            "supervisor: restarting backend {} ({trouble}); restart #{restarts}, {attempt} of at most {} this hour",
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
                    "supervisor: restart of backend {} ok: healthy again {ms} ms after the restart began ({trouble})",
                    self.name
                );
                Ok(())
            }
            Err((label, why)) => {
                metrics::BACKEND_RESTARTS
                    .with_label_values(&[&backend, label])
                    .inc();
                error!(
                    "supervisor: restart of backend {} failed ({label}) after {ms} ms: {why} (restarted because: {trouble})",
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
            let conf = &self.pool.conf;
            let healthy = if conf.protocol == crate::config::Protocol::Triton
                && conf.transport == crate::config::TritonTransport::Grpc
            {
                crate::backend::triton::grpc::model_ready(self.addr, &conf.model_name, hc.timeout.0).await
            } else {
                probe::healthy(self.addr, conf.health_path(), hc.timeout.0).await
            };
            if healthy {
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
