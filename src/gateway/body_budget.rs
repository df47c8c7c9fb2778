//! The global budget of request-body bytes held at once (`limits.max_bodies_in_flight`).
//!
//! Each request body reserves its bytes before they are read: its whole `Content-Length` up
//! front, or chunk by chunk as a chunked body grows. A body that does not fit is refused with
//! 503 `server_busy` and `Retry-After` before (the rest of) it is read. The reservation is held
//! as long as the request's body or its decoded form is held: through validation, queueing and
//! the backend call, also when the request became a 202 job.

use super::ApiError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// `Retry-After` (seconds) of a body refused because the budget is spent.
const RETRY_AFTER_SECS: u64 = 1;

/// Bytes of request bodies held now, at most `max`.
#[derive(Debug)]
pub struct BodyBudget {
    max: usize,
    held: AtomicUsize,
}

impl BodyBudget {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            held: AtomicUsize::new(0),
        })
    }

    /// Bytes reserved now.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// Takes `bytes` from the budget, all or nothing. Runs before a body (or a chunk of it) is
    /// read; never waits.
    fn take(&self, bytes: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|total| *total <= self.max)
            })
            .is_ok()
    }
}

/// Bytes one request holds; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl Reservation {
    /// Reserves `bytes` (a declared `Content-Length`, or 0 to start a chunked body), or the
    /// 503 to answer.
    pub fn new(budget: &Arc<BodyBudget>, bytes: usize) -> Result<Self, ApiError> {
        if !budget.take(bytes) {
            return Err(busy(budget.max));
        }
        crate::metrics::BODIES_IN_FLIGHT.inc();
        crate::metrics::BODY_BYTES_IN_FLIGHT.add(bytes as i64);
        Ok(Self {
            budget: budget.clone(),
            bytes,
        })
    }

    /// Makes the reservation cover `total` bytes (a chunked body that grew), or the 503.
    pub fn cover(&mut self, total: usize) -> Result<(), ApiError> {
        let more = total.saturating_sub(self.bytes);
        if more > 0 {
            if !self.budget.take(more) {
                return Err(busy(self.budget.max));
            }
            crate::metrics::BODY_BYTES_IN_FLIGHT.add(more as i64);
            self.bytes += more;
        }
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
        crate::metrics::BODIES_IN_FLIGHT.dec();
        crate::metrics::BODY_BYTES_IN_FLIGHT.sub(self.bytes as i64);
    }
}

fn busy(max: usize) -> ApiError {
    ApiError::new(
        503,
        "server_busy",
        format!(
            "the gateway is holding its limit of {max} bytes of request bodies; retry after \
             {RETRY_AFTER_SECS} s"
        ),
    )
    .with_retry_after(RETRY_AFTER_SECS)
    .closing()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_all_or_nothing_and_given_back() {
        let budget = BodyBudget::new(100);
        let a = Reservation::new(&budget, 60).expect("fits");
        let err = Reservation::new(&budget, 41).expect_err("over");
        assert_eq!((err.status, err.code), (503, "server_busy"));
        assert!(err.close && err.headers.contains(&("Retry-After", "1".into())));
        let mut b = Reservation::new(&budget, 0).expect("a chunked body starts");
        b.cover(40).expect("grows to the limit");
        assert!(b.cover(41).is_err(), "one byte more does not fit");
        assert_eq!(budget.held(), 100);
        drop(a);
        b.cover(90).expect("fits once the first is given back");
        drop(b);
        assert_eq!(budget.held(), 0);
    }
}
