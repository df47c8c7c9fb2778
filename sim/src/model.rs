//! The latency and GPU-capacity model: how many syntheses are in flight (counted by a drop
//! guard, so a client that goes away frees its slot), what happens over capacity (everyone
//! slows down, or the process dies of a simulated CUDA out-of-memory), and the pacing of one
//! synthesis: `--first-chunk-ms` of start-up work, then `rtf × audio seconds` of work per
//! segment, all slowed down alike over capacity.

use super::cli::Overload;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Exit code of the process when the simulated GPU runs out of memory.
pub const OOM_EXIT_CODE: i32 = 1;

/// CosyVoice2's preset speakers (`/inference_sft`'s `spk_id`), the sim's default for
/// `--model cosyvoice2`.
pub const SFT_SPEAKERS: [&str; 7] = [
    "中文女",
    "中文男",
    "日语男",
    "粤语女",
    "英文女",
    "英文男",
    "韩语女",
];

/// The simulated GPU: `slots` syntheses at full speed.
#[derive(Debug)]
pub struct Capacity {
    slots: u32,
    overload: Overload,
    inflight: AtomicU64,
    max_inflight: AtomicU64,
    /// Woken whenever `inflight` changes, so pacers can re-plan at the new speed.
    changed: Notify,
}

impl Capacity {
    pub fn new(slots: u32, overload: Overload) -> Arc<Self> {
        Arc::new(Capacity {
            slots: slots.max(1),
            overload,
            inflight: AtomicU64::new(0),
            max_inflight: AtomicU64::new(0),
            changed: Notify::new(),
        })
    }

    /// A synthesis starts. Over capacity with `--overload oom`, the process exits here and the
    /// request is never answered.
    pub fn enter(self: &Arc<Self>) -> InflightGuard {
        let now = self.inflight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_inflight.fetch_max(now, Ordering::SeqCst);
        self.changed.notify_waiters();
        if self.overload == Overload::Oom && now > u64::from(self.slots) {
            eprintln!(
                "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.50 GiB. \
                 ({now} syntheses in flight, {} slots)",
                self.slots
            );
            log::error!("CUDA out of memory: exiting");
            std::process::exit(OOM_EXIT_CODE);
        }
        InflightGuard(Arc::clone(self))
    }

    pub fn inflight(&self) -> u64 {
        self.inflight.load(Ordering::SeqCst)
    }

    pub fn max_inflight(&self) -> u64 {
        self.max_inflight.load(Ordering::SeqCst)
    }

    /// Forgets the high-water mark (it restarts from the current load).
    pub fn reset_max(&self) {
        self.max_inflight.store(self.inflight(), Ordering::SeqCst);
    }

    /// How much slower than nominal every synthesis runs right now (>= 1).
    pub fn slowdown(&self) -> f64 {
        match self.overload {
            Overload::Slow => (self.inflight() as f64 / f64::from(self.slots)).max(1.0),
            Overload::Oom => 1.0,
        }
    }
}

/// One synthesis in flight; dropping it (answer done, client gone, task cancelled) frees the
/// slot.
#[derive(Debug)]
pub struct InflightGuard(Arc<Capacity>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// Nominal timing of the model.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Start-up work of every synthesis before its first segment (`--first-chunk-ms`).
    pub first_chunk: Duration,
    /// Synthesis seconds per second of audio.
    pub rtf: f64,
}

/// Paces the chunks of one synthesis against the capacity model, as processor sharing: work
/// progresses at `1 / slowdown` of nominal speed, re-planned whenever the load changes.
pub struct Pacer {
    capacity: Arc<Capacity>,
    /// Where this synthesis's own clock stands: the end of the work done so far.
    cursor: Instant,
}

impl Pacer {
    pub fn new(capacity: Arc<Capacity>) -> Self {
        Pacer {
            capacity,
            cursor: Instant::now(),
        }
    }

    /// Waits until `nominal_secs` more seconds of work are done at the current load.
    pub async fn work(&mut self, nominal_secs: f64) {
        let mut remaining = nominal_secs.clamp(0.0, 1.0e6);
        loop {
            let notified = self.capacity.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let factor = self.capacity.slowdown();
            let target = self.cursor + Duration::from_secs_f64(remaining * factor);
            tokio::select! {
                _ = tokio::time::sleep_until(target) => {
                    self.cursor = target;
                    return;
                }
                _ = &mut notified => {
                    let now = Instant::now().max(self.cursor);
                    remaining = (remaining - (now - self.cursor).as_secs_f64() / factor).max(0.0);
                    self.cursor = now;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_counts_and_slow_overload_stretches() {
        let cap = Capacity::new(2, Overload::Slow);
        let a = cap.enter();
        let b = cap.enter();
        assert_eq!(cap.slowdown(), 1.0);
        let c = cap.enter();
        assert_eq!(cap.slowdown(), 1.5);
        drop((a, b, c));
        assert_eq!((cap.inflight(), cap.max_inflight()), (0, 3));
        cap.reset_max();
        assert_eq!(cap.max_inflight(), 0);
    }
}
