//! Why a request got no GPU slot (the edge maps it to a 503 with `Retry-After`, in
//! `gateway/errors.rs`).

use std::time::Duration;

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
