//! A request's place in the pool's queue ([`Ticket`]) and the GPU slot it gets ([`Slot`]).
//! Both give back what they hold when dropped: a dropped ticket leaves the queue at once, and a
//! slot that was granted but never used, or used by a client that went away, goes to the next
//! waiter. A slot is never lost.

use super::state::Outcome;
use super::{QueueError, Scheduler};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// A place in the queue of one pool; [`Ticket::slot`] waits for the slot.
pub struct Ticket {
    sched: Arc<Scheduler>,
    id: u64,
    issued: Instant,
    rx: Option<oneshot::Receiver<Slot>>,
}

impl Ticket {
    pub(super) fn new(sched: Arc<Scheduler>, id: u64, rx: oneshot::Receiver<Slot>) -> Self {
        Self {
            sched,
            id,
            issued: Instant::now(),
            rx: Some(rx),
        }
    }

    /// How many waiters would be served first (0 = next); `None` once the ticket has left the
    /// queue (a slot was granted, or no backend was left).
    pub fn position(&self) -> Option<usize> {
        self.sched.lock().queue.position(self.id)
    }

    /// A handle that reads this ticket's live position and expected wait while the ticket itself
    /// is awaiting [`Ticket::slot`] (for 202 job status answers); None once out of the queue.
    pub fn position_probe(
        &self,
    ) -> impl Fn() -> Option<(usize, std::time::Duration)> + Send + Sync + 'static {
        let (sched, id) = (self.sched.clone(), self.id);
        move || {
            let position = sched.lock().queue.position(id)?;
            Some((position, sched.eta(position)))
        }
    }

    /// Whether a slot is granted and waiting to be picked up with [`Ticket::slot`].
    pub fn started(&self) -> bool {
        self.rx.as_ref().is_some_and(|rx| !rx.is_empty())
    }

    /// Expected wait from now for the slot (zero once granted).
    pub fn eta(&self) -> std::time::Duration {
        self.position()
            .map_or(std::time::Duration::ZERO, |p| self.sched.eta(p))
    }

    /// Waits for the slot, at most `queue.max_wait` from when the ticket was issued.
    pub async fn slot(self) -> Result<Slot, QueueError> {
        let deadline = self.issued + self.sched.max_wait;
        self.slot_until(deadline).await
    }

    /// Waits for the slot until `queue.max_wait` from issue or `until`, whichever comes first
    /// (the request's own deadline); `QueueError::Timeout` after that.
    pub async fn slot_until(mut self, until: Instant) -> Result<Slot, QueueError> {
        let Some(mut rx) = self.rx.take() else {
            return Err(QueueError::NoBackend);
        };
        let deadline = until.min(self.issued + self.sched.max_wait);
        let result = match tokio::time::timeout_at(deadline, &mut rx).await {
            Ok(Ok(slot)) => Ok(slot),
            // The scheduler dropped the waiter: no backend is usable any more.
            Ok(Err(_)) => Err(QueueError::NoBackend),
            Err(_) => match rx.try_recv() {
                // Granted at the very deadline: take it rather than bounce it.
                Ok(slot) => Ok(slot),
                Err(_) => Err(QueueError::Timeout {
                    waited: self.issued.elapsed(),
                }),
            },
        };
        // Leave the queue before `rx` goes, so no slot is sent into a dead channel.
        self.leave();
        drop(rx);
        result
    }

    fn leave(&self) {
        let removed = self.sched.lock().queue.remove(self.id);
        drop(removed);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.leave();
        // `rx` is dropped after this, outside the lock: a slot already in it is released by
        // its own `Drop` and handed to the next waiter.
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("pool", &self.sched.pool)
            .field("id", &self.id)
            .finish()
    }
}

/// One GPU slot on one backend, held while the request runs. End it with
/// [`Slot::succeeded`] or [`Slot::failed`]; dropping it releases the slot with no verdict
/// (the client went away).
pub struct Slot {
    sched: Arc<Scheduler>,
    backend: usize,
    addr: SocketAddr,
    probe: bool,
    granted: Instant,
    done: bool,
}

impl Slot {
    pub(super) fn new(sched: Arc<Scheduler>, backend: usize, probe: bool) -> Self {
        let addr = sched.addrs[backend];
        Self {
            sched,
            backend,
            addr,
            probe,
            granted: Instant::now(),
            done: false,
        }
    }

    /// The backend this slot is on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether this request is the half-open breaker's probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The request succeeded: the breaker hears it, its time feeds the service-time average,
    /// and the slot goes to the next waiter.
    pub fn succeeded(mut self) {
        let held = self.granted.elapsed();
        self.finish(Outcome::Success(held));
    }

    /// The request failed on this backend: the breaker counts it, and the slot is released.
    pub fn failed(mut self) {
        self.finish(Outcome::Failure);
    }

    /// The attempt failed, but whose fault it was is not known yet (the same request may fail
    /// the same way elsewhere): the slot is released with no verdict. Blame the backend later
    /// with [`Scheduler::record_failure`] if it turns out to be its fault.
    pub fn inconclusive(mut self) {
        self.finish(Outcome::Abandoned);
    }

    /// Releases a slot that never reached its waiter, without dispatching (the dispatcher is
    /// already looping).
    pub(super) fn give_back(mut self) {
        self.done = true;
        self.sched.release(self.backend, self.probe, Outcome::Abandoned);
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.done {
            return;
        }
        self.done = true;
        self.sched.release(self.backend, self.probe, outcome);
        self.sched.dispatch();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.finish(Outcome::Abandoned);
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("pool", &self.sched.pool)
            .field("addr", &self.addr)
            .field("probe", &self.probe)
            .finish()
    }
}
