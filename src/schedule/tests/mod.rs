//! Scheduler tests: slot limits, backend choice, fairness, cancellation, queue limits, breakers,
//! avoid lists and ETA. Tokio's clock is paused (auto-advancing), so every run is the same.
//!
//! This file holds the setup every test uses; `dispatch` has the tests of slots, choice,
//! fairness, queues, cancellation and ETA, `breakers` those of circuit breakers, avoid lists and
//! unusable backends.

mod breakers;
mod dispatch;

use super::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::time::sleep;

const OPEN_FOR: Duration = Duration::from_secs(10);

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16))
}

/// Backends marked down fail their health check.
#[derive(Clone, Default)]
struct Health(Arc<Mutex<HashSet<SocketAddr>>>);

impl Health {
    fn set(&self, a: SocketAddr, healthy: bool) {
        let mut down = self.0.lock();
        if healthy {
            down.remove(&a);
        } else {
            down.insert(a);
        }
    }

    fn check(&self) -> HealthFn {
        let down = Arc::clone(&self.0);
        Arc::new(move |a| !down.lock().contains(&a))
    }
}

struct Setup {
    backends: usize,
    max: usize,
    max_len: usize,
    max_wait: Duration,
    failures: u32,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            backends: 1,
            max: 1,
            max_len: 64,
            max_wait: Duration::from_secs(3600),
            failures: 3,
        }
    }
}

impl Setup {
    fn build(self, health: &Health) -> Arc<Scheduler> {
        let queue = QueueConf {
            max_len: self.max_len,
            max_wait: crate::config::ConfDuration(self.max_wait),
            ..QueueConf::default()
        };
        let breaker = BreakerConf {
            failures: self.failures,
            open_for: crate::config::ConfDuration(OPEN_FOR),
        };
        let addrs: Vec<SocketAddr> = (0..self.backends).map(addr).collect();
        Scheduler::new("main", &addrs, self.max, &queue, &breaker, health.check())
    }
}

async fn slot(s: &Arc<Scheduler>, client: &str, avoid: Vec<SocketAddr>) -> Slot {
    s.ticket(client, avoid).unwrap().slot().await.unwrap()
}

fn circuit(s: &Scheduler, a: SocketAddr) -> Circuit {
    s.backends().iter().find(|b| b.addr == a).unwrap().circuit
}

fn inflight(s: &Scheduler) -> Vec<usize> {
    s.backends().iter().map(|b| b.inflight).collect()
}
