//! One backend's circuit breaker: `failures` consecutive failed attempts open it for `open_for`
//! (no traffic at all); then exactly one probe request may go (half-open), and its outcome closes
//! the breaker or opens it again. Pure state: every method takes the current time, so tests
//! drive the clock themselves.

use serde::Serialize;
use std::time::{Duration, Instant};

/// What the breaker lets through, as reported to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Circuit {
    /// Normal traffic.
    Closed,
    /// No traffic until `open_for` has passed.
    Open,
    /// One probe request may go (or is on its way).
    HalfOpen,
}

impl Circuit {
    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Open => "open",
            Circuit::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `failures` consecutive failures so far.
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        probe_in_flight: bool,
    },
}

/// The breaker of one backend.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    state: State,
    /// Consecutive failures that open it; 0 disables the breaker (it never opens).
    threshold: u32,
    open_for: Duration,
}

impl CircuitBreaker {
    pub fn new(failures: u32, open_for: Duration) -> Self {
        Self {
            state: State::Closed { failures: 0 },
            threshold: failures,
            open_for,
        }
    }

    /// The state as seen at `now` (an open breaker whose time is up counts as half-open).
    pub fn state(&self, now: Instant) -> Circuit {
        match self.state {
            State::Closed { .. } => Circuit::Closed,
            State::Open { until } if now < until => Circuit::Open,
            State::Open { .. } | State::HalfOpen { .. } => Circuit::HalfOpen,
        }
    }

    /// Whether a new request may be sent to this backend at `now`.
    pub fn allows_new(&self, now: Instant) -> bool {
        match self.state {
            State::Closed { .. } => true,
            State::Open { until } => now >= until,
            State::HalfOpen { probe_in_flight } => !probe_in_flight,
        }
    }

    /// Records that a request was sent at `now` (call only when [`Self::allows_new`] said yes).
    /// Returns whether that request is the half-open probe.
    pub fn on_dispatch(&mut self, now: Instant) -> bool {
        match self.state {
            State::Closed { .. } => false,
            State::Open { until } if now < until => false,
            State::Open { .. } | State::HalfOpen { .. } => {
                self.state = State::HalfOpen {
                    probe_in_flight: true,
                };
                true
            }
        }
    }

    /// A request succeeded: the failure streak ends, a half-open breaker closes. A late success
    /// of a request sent before the breaker opened does not close an open breaker: the probe
    /// decides.
    pub fn on_success(&mut self) {
        match self.state {
            State::Closed { .. } | State::HalfOpen { .. } => self.state = State::Closed { failures: 0 },
            State::Open { .. } => {}
        }
    }

    /// A request failed at `now`: counts towards opening; a half-open breaker opens again.
    pub fn on_failure(&mut self, now: Instant) {
        match self.state {
            State::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if self.threshold > 0 && failures >= self.threshold {
                    self.open(now);
                } else {
                    self.state = State::Closed { failures };
                }
            }
            State::HalfOpen { .. } => self.open(now),
            State::Open { .. } => {}
        }
    }

    /// Closes the breaker and forgets the failure streak (the backend was restarted).
    pub fn reset(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    /// The probe ended with no verdict (the client went away): the next request may probe.
    pub fn on_probe_abandoned(&mut self) {
        if let State::HalfOpen { .. } = self.state {
            self.state = State::HalfOpen {
                probe_in_flight: false,
            };
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = State::Open {
            until: now + self.open_for,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_FOR: Duration = Duration::from_secs(10);

    fn opened(now: Instant) -> CircuitBreaker {
        let mut b = CircuitBreaker::new(3, OPEN_FOR);
        for _ in 0..3 {
            assert!(b.allows_new(now));
            b.on_failure(now);
        }
        b
    }

    #[test]
    fn consecutive_failures_open_it() {
        let now = Instant::now();
        let mut b = CircuitBreaker::new(3, OPEN_FOR);
        b.on_failure(now);
        b.on_failure(now);
        b.on_success(); // streak broken
        b.on_failure(now);
        b.on_failure(now);
        assert_eq!(b.state(now), Circuit::Closed);
        b.on_failure(now);
        assert_eq!(b.state(now), Circuit::Open);
        assert!(!b.allows_new(now + OPEN_FOR / 2));
    }

    #[test]
    fn one_probe_then_success_closes() {
        let now = Instant::now();
        let mut b = opened(now);
        let later = now + OPEN_FOR;
        assert_eq!(b.state(later), Circuit::HalfOpen);
        assert!(b.allows_new(later));
        assert!(b.on_dispatch(later));
        assert!(!b.allows_new(later), "only one probe");
        b.on_success();
        assert_eq!(b.state(later), Circuit::Closed);
        assert!(b.allows_new(later));
        assert!(!b.on_dispatch(later));
    }

    #[test]
    fn failed_probe_reopens() {
        let now = Instant::now();
        let mut b = opened(now);
        let later = now + OPEN_FOR;
        assert!(b.on_dispatch(later));
        b.on_failure(later);
        assert_eq!(b.state(later), Circuit::Open);
        assert!(!b.allows_new(later + OPEN_FOR / 2));
        assert!(b.allows_new(later + OPEN_FOR));
    }

    #[test]
    fn abandoned_probe_frees_the_probe() {
        let now = Instant::now();
        let mut b = opened(now);
        let later = now + OPEN_FOR;
        assert!(b.on_dispatch(later));
        b.on_probe_abandoned();
        assert!(b.allows_new(later));
        assert_eq!(b.state(later), Circuit::HalfOpen);
    }

    #[test]
    fn zero_threshold_never_opens() {
        let now = Instant::now();
        let mut b = CircuitBreaker::new(0, OPEN_FOR);
        for _ in 0..100 {
            b.on_failure(now);
        }
        assert_eq!(b.state(now), Circuit::Closed);
    }

    #[test]
    fn names() {
        assert_eq!(Circuit::Closed.as_str(), "closed");
        assert_eq!(Circuit::Open.as_str(), "open");
        assert_eq!(Circuit::HalfOpen.as_str(), "half_open");
    }
}
