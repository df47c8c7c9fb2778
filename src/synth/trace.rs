//! What the layers tell about one request besides its progress, for the access log: how many
//! backend attempts it took, the last backend tried, and how long it waited for GPU slots.
//! Written by the production task, read by the edge when it logs; lock-free but for the address.

use super::{Position, Report};
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One request's attempts and waits so far.
#[derive(Debug, Default)]
pub struct Trace {
    attempts: AtomicU32,
    queue_wait_us: AtomicU64,
    backend: Mutex<Option<SocketAddr>>,
}

impl Trace {
    /// Backend attempts sent (0: answered from the cache, or refused before any).
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Time spent waiting for GPU slots, over every attempt.
    pub fn queue_wait(&self) -> Duration {
        Duration::from_micros(self.queue_wait_us.load(Ordering::Relaxed))
    }

    /// The backend of the last attempt.
    pub fn backend(&self) -> Option<SocketAddr> {
        *self.backend.lock()
    }
}

/// A [`Report`] that records into a [`Trace`] and passes progress on to another report (the
/// 202 job's cell).
pub struct Traced {
    pub progress: Arc<dyn Report>,
    pub trace: Arc<Trace>,
}

impl Report for Traced {
    fn queued(&self, position: Position) {
        self.progress.queued(position);
    }

    fn running(&self) {
        self.progress.running();
    }

    fn attempt(&self, backend: SocketAddr) {
        self.trace.attempts.fetch_add(1, Ordering::Relaxed);
        *self.trace.backend.lock() = Some(backend);
        self.progress.attempt(backend);
    }

    fn waited(&self, wait: Duration) {
        let us = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        self.trace.queue_wait_us.fetch_add(us, Ordering::Relaxed);
        self.progress.waited(wait);
    }
}
