//! Why a request got no GPU slot, and the 503 the caller sees for it.

use crate::api::ApiError;
use std::time::Duration;

/// Seconds a caller is told to wait when no backend is usable (health checks and breakers
/// change on their own schedule; this is a polite retry interval, not a promise).
const NO_BACKEND_RETRY_SECS: u64 = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueError {
    /// The pool's queue holds `queue.max_len` waiters; `retry_after` is the time it needs to
    /// drain at the current service rate.
    Full { retry_after: Duration },
    /// No slot within `queue.max_wait`.
    Timeout { waited: Duration },
    /// No backend of the pool is usable (all unhealthy or their breakers open).
    NoBackend,
}

impl QueueError {
    /// The answer for the caller: 503 with `Retry-After` (whole seconds, at least 1).
    pub fn to_api(&self, pool: &str) -> ApiError {
        match self {
            QueueError::Full { retry_after } => {
                let secs = whole_seconds(*retry_after);
                ApiError::new(
                    503,
                    "queue_full",
                    format!("pool {pool} is busy and its queue is full; try again in {secs} s"),
                )
                .with_retry_after(secs)
            }
            QueueError::Timeout { waited } => {
                let secs = whole_seconds(*waited);
                ApiError::new(
                    503,
                    "queue_timeout",
                    format!(
                        "pool {pool} had no free backend for {:.1} s; try again later or \
                         send fewer requests at once",
                        waited.as_secs_f64()
                    ),
                )
                .with_retry_after(secs)
            }
            QueueError::NoBackend => ApiError::new(
                503,
                "no_backend_available",
                format!(
                    "no backend of pool {pool} is available right now (unhealthy or failing); \
                     try again shortly"
                ),
            )
            .with_retry_after(NO_BACKEND_RETRY_SECS),
        }
    }
}

impl std::fmt::Display for QueueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueueError::Full { retry_after } => {
                write!(f, "queue full (drains in {:.1} s)", retry_after.as_secs_f64())
            }
            QueueError::Timeout { waited } => {
                write!(f, "no slot within {:.1} s", waited.as_secs_f64())
            }
            QueueError::NoBackend => write!(f, "no usable backend"),
        }
    }
}

impl std::error::Error for QueueError {}

/// `d` rounded up to whole seconds, at least 1.
fn whole_seconds(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry_after(e: &ApiError) -> Option<&str> {
        e.headers
            .iter()
            .find(|(n, _)| *n == "Retry-After")
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn codes_and_retry_after() {
        let full = QueueError::Full {
            retry_after: Duration::from_millis(2100),
        }
        .to_api("main");
        assert_eq!((full.status, full.code), (503, "queue_full"));
        assert_eq!(retry_after(&full), Some("3"));
        assert!(full.message.contains("main"));

        let timeout = QueueError::Timeout {
            waited: Duration::from_millis(10),
        }
        .to_api("main");
        assert_eq!((timeout.status, timeout.code), (503, "queue_timeout"));
        assert_eq!(retry_after(&timeout), Some("1"));

        let none = QueueError::NoBackend.to_api("main");
        assert_eq!((none.status, none.code), (503, "no_backend_available"));
        assert_eq!(retry_after(&none), Some("5"));
    }

    #[test]
    fn whole_seconds_rounds_up_and_is_at_least_one() {
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_secs(2)), 2);
        assert_eq!(whole_seconds(Duration::from_millis(2001)), 3);
    }
}
