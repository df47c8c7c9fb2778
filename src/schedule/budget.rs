//! A pool's retry budget, in the manner of Envoy's: retries may be at most `ratio` of the
//! requests of the recent window, plus a small floor (`min`), so a fleet-wide failure cannot
//! turn every request into `1 + retry.attempts` backend calls. "Recent" is a sliding window
//! estimated from two fixed buckets (the current one and the previous one, weighted by how much
//! of it still overlaps the window): constant memory whatever the traffic. Pure bookkeeping on
//! tokio's clock, so tests drive it with a paused clock.

use parking_lot::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Counts of one fixed bucket.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    requests: u64,
    retries: u64,
}

#[derive(Debug)]
struct Window {
    /// Start of the current bucket.
    start: Instant,
    current: Counts,
    previous: Counts,
}

/// The retry budget of one pool.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min: u32,
    window: Duration,
    state: Mutex<Window>,
}

impl RetryBudget {
    /// Retries at most `ratio` × requests of the last `window`, plus `min`. A zero window counts
    /// as one second.
    pub fn new(ratio: f64, min: u32, window: Duration) -> Self {
        let window = if window.is_zero() {
            Duration::from_secs(1)
        } else {
            window
        };
        Self {
            ratio: if ratio.is_finite() { ratio.max(0.0) } else { 0.0 },
            min,
            window,
            state: Mutex::new(Window {
                start: Instant::now(),
                current: Counts::default(),
                previous: Counts::default(),
            }),
        }
    }

    /// A new request arrived (its first attempt). Runs once per request, before any retry.
    pub fn record_request(&self) {
        let mut w = self.lock();
        self.roll(&mut w);
        w.current.requests = w.current.requests.saturating_add(1);
    }

    /// Asks to retry: true (and the retry is counted) while retries of the window stay within
    /// `min + ratio × requests`; false when the budget is spent.
    pub fn try_retry(&self) -> bool {
        let mut w = self.lock();
        self.roll(&mut w);
        let (requests, retries) = self.estimate(&w);
        if retries + 1.0 > f64::from(self.min) + self.ratio * requests {
            return false;
        }
        w.current.retries = w.current.retries.saturating_add(1);
        true
    }

    /// (requests, retries) over the sliding window ending now.
    fn estimate(&self, w: &Window) -> (f64, f64) {
        let into = Instant::now().saturating_duration_since(w.start).as_secs_f64();
        let weight = (1.0 - into / self.window.as_secs_f64()).clamp(0.0, 1.0);
        (
            w.current.requests as f64 + weight * w.previous.requests as f64,
            w.current.retries as f64 + weight * w.previous.retries as f64,
        )
    }

    /// Moves to the bucket that contains now.
    fn roll(&self, w: &mut Window) {
        let elapsed = Instant::now().saturating_duration_since(w.start);
        if elapsed < self.window {
            return;
        }
        if elapsed < self.window * 2 {
            w.previous = w.current;
            w.start += self.window;
        } else {
            w.previous = Counts::default();
            w.start = Instant::now();
        }
        w.current = Counts::default();
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Window> {
        self.state.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retries_allowed(b: &RetryBudget, asked: usize) -> usize {
        (0..asked).filter(|_| b.try_retry()).count()
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_allows_a_few_retries_with_no_traffic() {
        let b = RetryBudget::new(0.2, 3, Duration::from_secs(10));
        assert_eq!(retries_allowed(&b, 10), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stay_within_a_fifth_of_the_requests_plus_the_floor() {
        let b = RetryBudget::new(0.2, 3, Duration::from_secs(10));
        for _ in 0..100 {
            b.record_request();
        }
        // Every request failing and asking for two retries: 20 + 3 are allowed, not 200.
        assert_eq!(retries_allowed(&b, 200), 23);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_comes_back_as_the_window_slides() {
        let b = RetryBudget::new(0.2, 0, Duration::from_secs(10));
        for _ in 0..50 {
            b.record_request();
        }
        assert_eq!(retries_allowed(&b, 50), 10);
        // Half a window into the next bucket, half of the old counts still weigh: requests
        // 25, retries 5 -> nothing left.
        tokio::time::advance(Duration::from_secs(15)).await;
        assert_eq!(retries_allowed(&b, 5), 0);
        for _ in 0..50 {
            b.record_request();
        }
        // 75 requests and 5 retries in the window: 10 more.
        assert_eq!(retries_allowed(&b, 50), 10);
        // Two idle windows later everything is forgotten.
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(retries_allowed(&b, 5), 0);
        b.record_request();
        b.record_request();
        b.record_request();
        b.record_request();
        b.record_request();
        assert_eq!(retries_allowed(&b, 5), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_ratio_leaves_only_the_floor() {
        let b = RetryBudget::new(0.0, 1, Duration::from_secs(1));
        for _ in 0..1000 {
            b.record_request();
        }
        assert_eq!(retries_allowed(&b, 10), 1);
    }
}
