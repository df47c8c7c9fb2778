//! Knobs for whoever manages a backend's life from outside the request path (the supervisor):
//! take a backend out of rotation while it restarts, let it back in with a few slots first
//! (slow start), and read, add to or forget the passive failure signal (failed requests in a
//! row).

use super::Scheduler;
use std::net::SocketAddr;

impl Scheduler {
    /// Caps backend `addr` at `limit` slots (at least 1, at most `max_concurrency`); `None`
    /// gives it all of them again. Requests already in flight are not touched. Unknown
    /// addresses are ignored.
    pub fn set_slot_limit(&self, addr: SocketAddr, limit: Option<usize>) {
        if self.with_backend(addr, |b| b.limit = limit) {
            self.dispatch();
        }
    }

    /// While `draining` is true the backend gets no new requests (as if it failed its health
    /// check); requests in flight finish or fail as they will.
    pub fn set_draining(&self, addr: SocketAddr, draining: bool) {
        if self.with_backend(addr, |b| b.draining = draining) {
            self.dispatch();
        }
    }

    /// Failed requests in a row on `addr` (0 after any success, and for unknown addresses).
    pub fn consecutive_failures(&self, addr: SocketAddr) -> u32 {
        let mut n = 0;
        self.with_backend(addr, |b| n = b.failures);
        n
    }

    /// Blames `addr` for a failure found out after its slot was released (see
    /// [`Slot::inconclusive`](super::Slot::inconclusive)): its breaker and its failure streak
    /// count it as if the slot had ended with [`Slot::failed`](super::Slot::failed).
    pub fn record_failure(&self, addr: SocketAddr) {
        let now = super::now();
        if self.with_backend(addr, |b| {
            b.breaker.on_failure(now);
            b.failures = b.failures.saturating_add(1);
        }) {
            self.dispatch();
        }
    }

    /// Forgets `addr`'s past failures: the failure streak is zeroed and its breaker closes (a
    /// freshly restarted process owes nothing to the old one's errors).
    pub fn forget_failures(&self, addr: SocketAddr) {
        if self.with_backend(addr, |b| {
            b.failures = 0;
            b.breaker.reset();
        }) {
            self.dispatch();
        }
    }

    /// The slot limit and draining flag set on `addr`, if it is one of this pool's backends.
    pub fn slot_override(&self, addr: SocketAddr) -> Option<(Option<usize>, bool)> {
        let mut out = None;
        self.with_backend(addr, |b| out = Some((b.limit, b.draining)));
        out
    }

    /// Runs `f` on backend `addr` under the lock; false when there is no such backend.
    fn with_backend(&self, addr: SocketAddr, f: impl FnOnce(&mut super::state::Backend)) -> bool {
        let mut st = self.lock();
        match st.backends.iter_mut().find(|b| b.addr == addr) {
            Some(b) => {
                f(b);
                true
            }
            None => false,
        }
    }
}
