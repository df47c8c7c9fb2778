//! The supervisor's decisions for one backend, as a pure state machine: an [`Observation`]
//! (the health checker's verdict and the failed requests in a row, at a given time) goes in,
//! [`Action`]s come out. Nothing here reads a clock, sleeps, logs, runs a command or talks to
//! Redis or the scheduler: the watch loop (`watch.rs`) does that and reports back
//! ([`Machine::restart_elsewhere`], [`Machine::restart_started`],
//! [`Machine::restart_finished`]). So every rule (the trigger, the cooldown and its backoff, the
//! hourly cap and the give-up, the slow start) is tested with plain instants.

use super::SupervisorState;
use crate::config::RestartConf;
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;
use tokio::time::Instant;

const HOUR: Duration = Duration::from_secs(3600);
/// The backoff doubles at most this many times.
const MAX_BACKOFF_DOUBLINGS: u32 = 6;

/// What the machine needs to know of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Settings {
    /// Failed health checks, or failed requests, in a row that call for a restart (at least 1).
    pub after_failures: u32,
    /// Least time between two restarts; doubled for each restart that did not help.
    pub cooldown: Duration,
    /// Most restarts in any hour; then the machine gives up.
    pub max_per_hour: u32,
    /// Slow start: the slot limit doubles every `warmup`.
    pub warmup: Duration,
    /// The pool's slots per backend; the slow start ends there.
    pub max_concurrency: usize,
    /// Whether this instance restarts at all (`supervisor.enabled`).
    pub enabled: bool,
}

impl Settings {
    pub fn new(conf: &RestartConf, max_concurrency: usize, enabled: bool) -> Self {
        Self {
            after_failures: conf.after_failures.max(1),
            cooldown: conf.cooldown.0,
            max_per_hour: conf.max_per_hour,
            warmup: conf.warmup.0,
            max_concurrency,
            enabled,
        }
    }
}

/// One look at the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Observation {
    pub now: Instant,
    /// The pool's health checker's verdict.
    pub healthy: bool,
    /// Failed requests in a row (the scheduler's passive failure signal).
    pub failed_requests: u32,
}

/// Why the backend needs a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trouble {
    /// This many failed health checks in a row.
    HealthChecks(u32),
    /// This many failed requests in a row.
    FailedRequests(u32),
}

impl fmt::Display for Trouble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trouble::HealthChecks(n) => write!(f, "{n} failed health checks in a row"),
            Trouble::FailedRequests(n) => write!(f, "{n} failed requests in a row"),
        }
    }
}

/// What to do after an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Given up on earlier, it passes its health checks again: watch it again (state ok).
    Recovered,
    /// Slow start: the backend may now have this many slots (state warming).
    WarmUp { slots: usize },
    /// Slow start over: every slot (state ok).
    WarmedUp,
    /// It needs a restart but this instance does not restart (said once).
    RestartsOff { trouble: Trouble },
    /// Restart it: the `attempt`-th restart within the last hour. With a restart lock, take it
    /// first; then [`Machine::restart_started`], and [`Machine::restart_finished`] after.
    Restart { trouble: Trouble, attempt: usize },
    /// `restarts` restarts in the last hour already: stop trying (state failed).
    GiveUp { trouble: Trouble, restarts: usize },
}

/// How the backend is let back in after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterRestart {
    /// Healthy again: one slot, doubling every warm-up (state warming).
    SlowStart,
    /// Healthy again, with its single slot (state ok).
    Serve,
    /// The restart did not bring it back: let it in anyway (its health checks and breaker
    /// guard it); no restart for `backoff` (state ok).
    Failed { backoff: Duration },
}

/// One backend's supervision state between observations.
#[derive(Debug, Clone)]
pub(super) struct Machine {
    settings: Settings,
    /// Failed health checks in a row, as seen once per observation.
    unhealthy: u32,
    /// When the restarts of the last hour began.
    history: VecDeque<Instant>,
    /// Restarts since the backend was last fine for a cooldown.
    unhelpful: u32,
    /// No restart before this.
    next_allowed: Option<Instant>,
    /// Since when the backend has been fine (no trouble, warm-up over).
    fine_since: Option<Instant>,
    /// The slow start: the current slot limit and when it doubles next.
    warm: Option<(usize, Instant)>,
    /// A restart is under way.
    restarting: bool,
    /// Given up (`max_per_hour`).
    failed: bool,
    /// `RestartsOff` was said.
    told_disabled: bool,
}

impl Machine {
    pub fn new(settings: Settings, now: Instant) -> Self {
        Self {
            settings,
            unhealthy: 0,
            history: VecDeque::new(),
            unhelpful: 0,
            next_allowed: None,
            fine_since: Some(now),
            warm: None,
            restarting: false,
            failed: false,
            told_disabled: false,
        }
    }

    /// The state operators see.
    pub fn state(&self) -> SupervisorState {
        if self.failed {
            SupervisorState::Failed
        } else if self.restarting {
            SupervisorState::Restarting
        } else if self.warm.is_some() {
            SupervisorState::Warming
        } else {
            SupervisorState::Ok
        }
    }

    /// Takes one look at the backend into account: what to do now, in order (a warm-up step
    /// can come before a restart).
    pub fn observe(&mut self, obs: Observation) -> Vec<Action> {
        let now = obs.now;
        self.unhealthy = if obs.healthy {
            0
        } else {
            self.unhealthy.saturating_add(1)
        };
        let n = self.settings.after_failures;
        let trouble = if self.unhealthy >= n {
            Some(Trouble::HealthChecks(self.unhealthy))
        } else if obs.failed_requests >= n {
            Some(Trouble::FailedRequests(obs.failed_requests))
        } else {
            None
        };
        if self.failed {
            if trouble.is_none() && obs.healthy {
                self.failed = false;
                self.fine_since = Some(now);
                return vec![Action::Recovered];
            }
            return Vec::new();
        }
        let mut actions = Vec::new();
        actions.extend(self.advance_warmup(now));
        let Some(trouble) = trouble else {
            if self.warm.is_none() {
                let since = *self.fine_since.get_or_insert(now);
                if now.duration_since(since) >= self.settings.cooldown {
                    self.unhelpful = 0;
                }
            }
            return actions;
        };
        self.fine_since = None;
        if !self.settings.enabled {
            if !self.told_disabled {
                self.told_disabled = true;
                actions.push(Action::RestartsOff { trouble });
            }
            return actions;
        }
        if self.next_allowed.is_some_and(|at| now < at) {
            return actions;
        }
        while self
            .history
            .front()
            .is_some_and(|&at| now.duration_since(at) >= HOUR)
        {
            self.history.pop_front();
        }
        if self.history.len() >= self.settings.max_per_hour as usize {
            self.failed = true;
            self.warm = None;
            actions.push(Action::GiveUp {
                trouble,
                restarts: self.history.len(),
            });
            return actions;
        }
        actions.push(Action::Restart {
            trouble,
            attempt: self.history.len() + 1,
        });
        actions
    }

    /// The restart was not run because another gateway instance holds the restart lock: ask
    /// again a cooldown from now.
    pub fn restart_elsewhere(&mut self, now: Instant) {
        self.next_allowed = Some(now + self.settings.cooldown);
    }

    /// The restart begins (the lock, if any, is held): it counts against the hour.
    pub fn restart_started(&mut self, now: Instant) {
        self.history.push_back(now);
        self.warm = None;
        self.restarting = true;
    }

    /// The restart ended at `now`; `healthy` when the backend came back. The next restart waits
    /// a cooldown, doubled for each earlier restart since the backend was last fine for one.
    pub fn restart_finished(&mut self, now: Instant, healthy: bool) -> AfterRestart {
        self.restarting = false;
        let backoff = self.settings.cooldown * 2u32.pow(self.unhelpful.min(MAX_BACKOFF_DOUBLINGS));
        self.unhelpful = self.unhelpful.saturating_add(1);
        self.next_allowed = Some(now + backoff);
        self.unhealthy = 0;
        if !healthy {
            return AfterRestart::Failed { backoff };
        }
        if self.settings.max_concurrency.max(1) > 1 {
            self.warm = Some((1, now + self.settings.warmup));
            AfterRestart::SlowStart
        } else {
            AfterRestart::Serve
        }
    }

    /// Doubles the slow-start slot limit when its time has come; ends the warm-up at
    /// `max_concurrency`.
    fn advance_warmup(&mut self, now: Instant) -> Option<Action> {
        let (limit, at) = self.warm?;
        if now < at {
            return None;
        }
        let limit = limit.saturating_mul(2);
        if limit >= self.settings.max_concurrency {
            self.warm = None;
            self.fine_since = Some(now);
            Some(Action::WarmedUp)
        } else {
            self.warm = Some((limit, now + self.settings.warmup));
            Some(Action::WarmUp { slots: limit })
        }
    }
}
