//! Scheduling of one pool's GPU slots: each backend serves at most `max_concurrency` requests
//! at once; requests beyond that wait in a bounded queue, served round-robin across clients;
//! each slot goes to the healthy, breaker-closed backend with the most free slots (ties round
//! robin); a circuit breaker per backend keeps traffic off a failing one. Pure logic and tokio:
//! no HTTP here.
//!
//! ```text
//! Scheduler::ticket(client, avoid) ─► Ticket (queued, fair order) ─slot().await─► Slot
//!        │ Full / NoBackend                      │ Timeout after max_wait        │
//!        ▼                                       ▼                               ▼
//!      QueueError (503 at the edge)             503 / job expires     succeeded() / failed() / drop
//! ```
//!
//! All state sits behind one `parking_lot::Mutex`, held for short bookkeeping only (never across
//! an await, never while a [`Slot`] is sent or dropped). A waiter gets its slot through a
//! `tokio::sync::oneshot`; when its receiver is gone, the slot goes to the next waiter.

mod breaker;
mod budget;
mod control;
mod error;
mod fair_queue;
mod state;
mod ticket;

#[cfg(test)]
mod control_tests;
#[cfg(test)]
mod tests;

pub use breaker::{Circuit, CircuitBreaker};
pub use budget::RetryBudget;
pub use error::QueueError;
pub use fair_queue::FairQueue;
pub use ticket::{Slot, Ticket};

use crate::config::{BreakerConf, QueueConf};
use parking_lot::{Mutex, MutexGuard};
use serde::Serialize;
use state::{Backend, Outcome, State};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::oneshot;

/// Tells whether a backend passes its health check right now.
pub type HealthFn = Arc<dyn Fn(SocketAddr) -> bool + Send + Sync>;

/// One backend as operators see it (`/admin/backends`, metrics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendView {
    pub addr: SocketAddr,
    pub healthy: bool,
    pub circuit: Circuit,
    pub inflight: usize,
    pub max_concurrency: usize,
}

/// The slots, queue and breakers of one pool.
pub struct Scheduler {
    pool: String,
    addrs: Vec<SocketAddr>,
    max_len: usize,
    max_wait: Duration,
    health: HealthFn,
    /// Lets `dispatch(&self)` hand out slots that point back here.
    me: Weak<Scheduler>,
    state: Mutex<State>,
}

impl Scheduler {
    /// `health(addr)` tells whether a backend passes its health check right now; it is called
    /// outside the scheduler's lock. A `max_concurrency` of 0 counts as 1.
    pub fn new(
        pool: &str,
        backends: &[SocketAddr],
        max_concurrency: usize,
        queue: &QueueConf,
        breaker: &BreakerConf,
        health: HealthFn,
    ) -> Arc<Scheduler> {
        let state = State::new(
            backends
                .iter()
                .map(|&addr| Backend::new(addr, CircuitBreaker::new(breaker.failures, breaker.open_for.0)))
                .collect(),
            max_concurrency,
        );
        Arc::new_cyclic(|me| Scheduler {
            pool: pool.to_string(),
            addrs: backends.to_vec(),
            max_len: queue.max_len,
            max_wait: queue.max_wait.0,
            health,
            me: me.clone(),
            state: Mutex::new(state),
        })
    }

    /// The pool's name.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// Joins the queue (or gets a slot at once). `client` is the fairness key (IP or token
    /// name). `avoid`: backends already tried by this request: others are preferred while
    /// another usable (healthy, breaker not open) backend exists; otherwise any.
    /// `Err(QueueError::Full{..})` when the queue is full, `Err(QueueError::NoBackend)` at once
    /// when no backend is usable.
    pub fn ticket(self: &Arc<Self>, client: &str, avoid: Vec<SocketAddr>) -> Result<Ticket, QueueError> {
        let healthy = self.health_now();
        let now = now();
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut st = self.lock();
            if !st.any_usable(&healthy, now) {
                return Err(QueueError::NoBackend);
            }
            let len = st.queue.len();
            let at_once = len == 0 && st.choose(&avoid, &healthy, now).is_some();
            if len >= self.max_len && !at_once {
                return Err(QueueError::Full {
                    retry_after: st.eta(len, &healthy, now),
                });
            }
            let id = st.next_id();
            st.queue.push(client, id, state::Waiter { tx, avoid });
            id
        };
        let ticket = Ticket::new(Arc::clone(self), id, rx);
        self.dispatch();
        Ok(ticket)
    }

    /// Per backend: addr, health, circuit, in-flight requests and max_concurrency.
    pub fn backends(&self) -> Vec<BackendView> {
        let healthy = self.health_now();
        let now = now();
        let st = self.lock();
        st.backends
            .iter()
            .zip(healthy)
            .map(|(b, healthy)| BackendView {
                addr: b.addr,
                healthy,
                circuit: b.breaker.state(now),
                inflight: b.inflight,
                max_concurrency: st.max,
            })
            .collect()
    }

    /// Requests waiting for a slot.
    pub fn queue_len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Expected wait for a request at `position` (0 = next), from the moving average of
    /// service times and the number of usable slots.
    pub fn eta(&self, position: usize) -> Duration {
        let healthy = self.health_now();
        self.lock().eta(position, &healthy, now())
    }

    /// The moving average of how long a successful request holds its slot (1 s until measured).
    pub fn service_time(&self) -> Duration {
        self.lock().service_time()
    }

    /// Hands free slots to waiters in fair order; refuses every waiter with `NoBackend` when no
    /// backend is usable. Runs after every ticket and release; call it periodically too (health
    /// changes, breaker timeouts), e.g. with [`Scheduler::dispatch_forever`].
    pub fn dispatch(&self) {
        let Some(me) = self.me.upgrade() else {
            return;
        };
        loop {
            let healthy = self.health_now();
            let (grants, refused) = self.lock().match_waiters(&healthy, now());
            drop(refused);
            let mut bounced = false;
            for g in grants {
                let slot = Slot::new(Arc::clone(&me), g.backend, g.probe);
                if let Err(slot) = g.tx.send(slot) {
                    // The waiter left between the match and the send.
                    slot.give_back();
                    bounced = true;
                }
            }
            if !bounced {
                return;
            }
        }
    }

    /// Runs [`Scheduler::dispatch`] every `every`, forever.
    pub async fn dispatch_forever(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.dispatch();
        }
    }

    fn release(&self, backend: usize, probe: bool, outcome: Outcome) {
        self.lock().release(backend, probe, outcome, now());
    }

    fn health_now(&self) -> Vec<bool> {
        self.addrs.iter().map(|&a| (self.health)(a)).collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("pool", &self.pool)
            .field("backends", &self.addrs)
            .finish()
    }
}

/// The current time on tokio's clock (so tests with a paused clock drive breakers too).
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}
