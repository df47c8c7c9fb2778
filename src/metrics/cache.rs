//! The cache: lookups per tier, hits over a sliding window, entries and bytes per tier, and
//! Redis errors (the Redis tier, the shared buckets, the locks).

use super::{metric, opts};
use parking_lot::Mutex;
use prometheus::{Gauge, IntCounter, IntCounterVec, IntGaugeVec};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

metric! {
    /// Cache lookups per tier and result (`hit`, `miss`).
    CACHE_REQUESTS: IntCounterVec = IntCounterVec::new(
        opts(
            "cosygate_cache_requests_total",
            "Cache lookups by tier (memory, disk, redis) and result (hit, miss)",
        ),
        &["tier", "result"],
    )
}

metric! {
    /// Requests answered from the cache (any tier, or a synthesis already in flight).
    CACHE_HITS: IntCounter = IntCounter::with_opts(opts(
        "cosygate_cache_hits_total",
        "Requests answered without a synthesis of their own",
    ))
}

metric! {
    /// Requests that consulted the cache.
    CACHE_LOOKUPS: IntCounter = IntCounter::with_opts(opts(
        "cosygate_cache_lookups_total",
        "Requests that consulted the cache",
    ))
}

metric! {
    /// Hits over lookups in the last [`HIT_WINDOW`] (0 when there were none).
    CACHE_HIT_RATIO: Gauge = Gauge::with_opts(opts(
        "cosygate_cache_hit_ratio",
        "Share of cache lookups answered without a synthesis over the last 5 minutes (0 without lookups); \
         for alerts and graphs prefer rate(cosygate_cache_hits_total) / rate(cosygate_cache_lookups_total)",
    ))
}

metric! {
    /// Entries per tier, read at scrape time (`memory`, `disk`).
    CACHE_ENTRIES: IntGaugeVec = IntGaugeVec::new(
        opts("cosygate_cache_entries", "Entries held per cache tier (memory, disk)"),
        &["tier"],
    )
}

metric! {
    /// WAV bytes per tier, read at scrape time.
    CACHE_BYTES: IntGaugeVec = IntGaugeVec::new(
        opts("cosygate_cache_bytes", "WAV bytes held per cache tier (memory, disk)"),
        &["tier"],
    )
}

metric! {
    /// Redis round trips that failed or timed out, by what they were for.
    REDIS_ERRORS: IntCounterVec = IntCounterVec::new(
        opts(
            "cosygate_redis_errors_total",
            "Redis calls that failed or timed out, by use; the gateway went on without Redis",
        ),
        &["use"],
    )
}

pub(super) fn touch() {
    CACHE_HITS.get();
    CACHE_LOOKUPS.get();
    CACHE_HIT_RATIO.get();
    let _ = (&*CACHE_REQUESTS, &*CACHE_ENTRIES, &*CACHE_BYTES, &*REDIS_ERRORS);
}

/// How far back `cosygate_cache_hit_ratio` looks.
pub const HIT_WINDOW: Duration = Duration::from_secs(300);
/// Width of one slot of the window.
const SLOT: Duration = Duration::from_secs(10);
const SLOTS: usize = (HIT_WINDOW.as_secs() / SLOT.as_secs()) as usize;

/// Hits and lookups in fixed 10 s slots over the last five minutes; 30 slots, fixed size.
struct HitWindow {
    start: Instant,
    /// (slot number since `start`, hits, lookups), by slot number modulo `SLOTS`.
    slots: [(u64, u64, u64); SLOTS],
}

static WINDOW: LazyLock<Mutex<HitWindow>> = LazyLock::new(|| {
    Mutex::new(HitWindow {
        start: Instant::now(),
        slots: [(u64::MAX, 0, 0); SLOTS],
    })
});

impl HitWindow {
    fn slot_now(&self, now: Instant) -> u64 {
        now.duration_since(self.start).as_secs() / SLOT.as_secs()
    }

    fn record(&mut self, now: Instant, hit: bool) {
        let n = self.slot_now(now);
        let slot = &mut self.slots[(n % SLOTS as u64) as usize];
        if slot.0 != n {
            *slot = (n, 0, 0);
        }
        slot.1 += u64::from(hit);
        slot.2 += 1;
    }

    fn ratio(&self, now: Instant) -> f64 {
        let n = self.slot_now(now);
        let oldest = n.saturating_sub(SLOTS as u64 - 1);
        let (hits, lookups) = self
            .slots
            .iter()
            .filter(|s| s.0 != u64::MAX && s.0 >= oldest && s.0 <= n)
            .fold((0, 0), |(h, l), s| (h + s.1, l + s.2));
        if lookups == 0 {
            0.0
        } else {
            hits as f64 / lookups as f64
        }
    }
}

/// Counts one cache lookup and whether it was answered without a synthesis.
pub fn record_lookup(hit: bool) {
    CACHE_LOOKUPS.inc();
    if hit {
        CACHE_HITS.inc();
    }
    let now = Instant::now();
    let mut window = WINDOW.lock();
    window.record(now, hit);
    CACHE_HIT_RATIO.set(window.ratio(now));
}

/// Brings `cosygate_cache_hit_ratio` up to date before a scrape (old slots age out).
pub fn refresh_hit_ratio() {
    CACHE_HIT_RATIO.set(WINDOW.lock().ratio(Instant::now()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_covers_the_last_five_minutes_only() {
        let start = Instant::now();
        let mut w = HitWindow {
            start,
            slots: [(u64::MAX, 0, 0); SLOTS],
        };
        assert_eq!(w.ratio(start), 0.0);
        for _ in 0..3 {
            w.record(start, true);
        }
        w.record(start, false);
        assert_eq!(w.ratio(start), 0.75);
        let later = start + Duration::from_secs(200);
        w.record(later, false);
        assert_eq!(w.ratio(later), 0.6);
        // The first slot has aged out; only the miss at 200 s is left.
        let much_later = start + Duration::from_secs(320);
        assert_eq!(w.ratio(much_later), 0.0);
        w.record(much_later, true);
        assert_eq!(w.ratio(much_later), 0.5);
        assert_eq!(w.ratio(start + Duration::from_secs(900)), 0.0);
    }
}
