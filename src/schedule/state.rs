//! The pool's scheduling state, kept under the scheduler's one mutex: each backend's in-flight
//! count and breaker, the fair queue, the round-robin cursor and the service-time average. Pure
//! bookkeeping: health and time come in as arguments, and nothing here blocks, sends or drops a
//! [`Slot`](super::Slot) (that happens after the lock is released).

use super::breaker::{Circuit, CircuitBreaker};
use super::fair_queue::FairQueue;
use super::Slot;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Weight of the newest sample in the service-time moving average.
const EWMA_ALPHA: f64 = 0.2;
/// Service time assumed until the first request succeeded.
const DEFAULT_SERVICE: Duration = Duration::from_secs(1);

pub(super) struct Backend {
    pub addr: SocketAddr,
    pub inflight: usize,
    pub breaker: CircuitBreaker,
    /// Set from outside (the supervisor's slow start): at most this many slots, below `max`.
    pub limit: Option<usize>,
    /// Set from outside (a restart in progress): no new requests at all.
    pub draining: bool,
    /// Failed requests in a row (the passive failure signal; a success resets it).
    pub failures: u32,
}

impl Backend {
    pub fn new(addr: SocketAddr, breaker: CircuitBreaker) -> Self {
        Self {
            addr,
            inflight: 0,
            breaker,
            limit: None,
            draining: false,
            failures: 0,
        }
    }
}

/// A queued request: where its slot goes, and the backends it has already tried.
pub(super) struct Waiter {
    pub tx: oneshot::Sender<Slot>,
    pub avoid: Vec<SocketAddr>,
}

/// A slot taken under the lock, to be wrapped in a [`Slot`] and sent after it.
pub(super) struct Grant {
    pub tx: oneshot::Sender<Slot>,
    pub backend: usize,
    pub probe: bool,
}

/// How a slot ended.
#[derive(Debug, Clone, Copy)]
pub(super) enum Outcome {
    /// The request succeeded after holding the slot this long.
    Success(Duration),
    Failure,
    /// No verdict: the client went away, or the slot was never picked up.
    Abandoned,
}

pub(super) struct State {
    pub backends: Vec<Backend>,
    pub queue: FairQueue<Waiter>,
    pub max: usize,
    /// Where the next tie-break starts.
    cursor: usize,
    next_id: u64,
    /// Moving average of successful slot hold times, in seconds.
    service_secs: Option<f64>,
}

impl State {
    pub fn new(backends: Vec<Backend>, max: usize) -> Self {
        Self {
            backends,
            queue: FairQueue::new(),
            max: max.max(1),
            cursor: 0,
            next_id: 0,
            service_secs: None,
        }
    }

    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Healthy and its breaker not open: it serves now or will after the current requests.
    pub fn usable(&self, i: usize, healthy: &[bool], now: Instant) -> bool {
        let b = &self.backends[i];
        healthy.get(i).copied().unwrap_or(false) && !b.draining && b.breaker.state(now) != Circuit::Open
    }

    /// Slots backend `i` may use: `max`, or less while a slot limit is set (at least 1).
    pub fn cap(&self, i: usize) -> usize {
        self.backends[i].limit.map_or(self.max, |l| l.clamp(1, self.max))
    }

    pub fn any_usable(&self, healthy: &[bool], now: Instant) -> bool {
        (0..self.backends.len()).any(|i| self.usable(i, healthy, now))
    }

    /// May take one more request right now.
    fn eligible(&self, i: usize, healthy: &[bool], now: Instant) -> bool {
        let b = &self.backends[i];
        healthy.get(i).copied().unwrap_or(false)
            && !b.draining
            && b.breaker.allows_new(now)
            && b.inflight < self.cap(i)
    }

    /// The backend a request that already tried `avoid` should get now, if any: among eligible
    /// backends (not in `avoid` while another usable one exists), the one with the most free
    /// slots; ties go round robin.
    pub fn choose(&self, avoid: &[SocketAddr], healthy: &[bool], now: Instant) -> Option<usize> {
        let n = self.backends.len();
        let avoiding = !avoid.is_empty()
            && (0..n).any(|i| self.usable(i, healthy, now) && !avoid.contains(&self.backends[i].addr));
        let mut best: Option<(usize, usize)> = None;
        for k in 0..n {
            let i = (self.cursor + k) % n;
            let b = &self.backends[i];
            if !self.eligible(i, healthy, now) || (avoiding && avoid.contains(&b.addr)) {
                continue;
            }
            // Ranked by free slots out of the full `max` even while a slot limit holds (slow
            // start caps a backend's concurrency; it does not keep it idle under light load).
            let free = self.max.saturating_sub(b.inflight);
            if best.is_none_or(|(f, _)| free > f) {
                best = Some((free, i));
            }
        }
        best.map(|(_, i)| i)
    }

    /// Takes a slot on backend `i`; returns whether it carries the half-open probe.
    fn take_slot(&mut self, i: usize, now: Instant) -> bool {
        self.cursor = (i + 1) % self.backends.len();
        let b = &mut self.backends[i];
        b.inflight += 1;
        b.breaker.on_dispatch(now)
    }

    /// Matches free slots with waiters in the queue's fair order. Returns the grants to send and
    /// the waiters refused because no backend is usable at all (their senders are dropped, which
    /// tells them `NoBackend`); the caller drops both outside the lock.
    pub fn match_waiters(&mut self, healthy: &[bool], now: Instant) -> (Vec<Grant>, Vec<Waiter>) {
        let mut grants = Vec::new();
        if self.queue.is_empty() {
            return (grants, Vec::new());
        }
        if !self.any_usable(healthy, now) {
            return (grants, self.queue.drain());
        }
        while (0..self.backends.len()).any(|i| self.eligible(i, healthy, now)) {
            let found = self.queue.order().find_map(|id| {
                let w = self.queue.get(id)?;
                self.choose(&w.avoid, healthy, now).map(|b| (id, b))
            });
            let Some((id, backend)) = found else { break };
            let Some(w) = self.queue.take(id) else { break };
            let probe = self.take_slot(backend, now);
            grants.push(Grant {
                tx: w.tx,
                backend,
                probe,
            });
        }
        (grants, Vec::new())
    }

    /// Gives back a slot of backend `i` and records how it went.
    pub fn release(&mut self, i: usize, probe: bool, outcome: Outcome, now: Instant) {
        let Some(b) = self.backends.get_mut(i) else {
            return;
        };
        b.inflight = b.inflight.saturating_sub(1);
        match outcome {
            Outcome::Success(held) => {
                b.breaker.on_success();
                b.failures = 0;
                self.sample(held);
            }
            Outcome::Failure => {
                b.breaker.on_failure(now);
                b.failures = b.failures.saturating_add(1);
            }
            Outcome::Abandoned if probe => b.breaker.on_probe_abandoned(),
            Outcome::Abandoned => {}
        }
    }

    fn sample(&mut self, held: Duration) {
        let x = held.as_secs_f64();
        self.service_secs = Some(match self.service_secs {
            None => x,
            Some(avg) => avg + EWMA_ALPHA * (x - avg),
        });
    }

    /// The moving average of how long a successful request holds its slot.
    pub fn service_time(&self) -> Duration {
        self.service_secs.map_or(DEFAULT_SERVICE, Duration::from_secs_f64)
    }

    /// Slots that are serving or will serve: every slot of a closed backend, one of a
    /// half-open one.
    pub fn usable_slots(&self, healthy: &[bool], now: Instant) -> usize {
        (0..self.backends.len())
            .filter(|&i| self.usable(i, healthy, now))
            .map(|i| match self.backends[i].breaker.state(now) {
                Circuit::Closed => self.cap(i),
                Circuit::HalfOpen | Circuit::Open => 1,
            })
            .sum()
    }

    /// Expected wait for a slot at queue `position`: it needs `position + 1` slots to free up,
    /// and the usable slots free up at `slots / service_time` per second.
    pub fn eta(&self, position: usize, healthy: &[bool], now: Instant) -> Duration {
        let slots = self.usable_slots(healthy, now).max(1);
        let ahead = u32::try_from(position.saturating_add(1)).unwrap_or(u32::MAX);
        let slots = u32::try_from(slots).unwrap_or(u32::MAX);
        self.service_time().saturating_mul(ahead) / slots
    }
}
