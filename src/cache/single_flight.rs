//! One synthesis per key in flight: the first request for a key runs the work; identical
//! requests that arrive meanwhile wait for it and get a clone of its result (the same bytes, or
//! the same error). The work lives as long as any caller still waits for it; when the last one
//! goes away, it is dropped (and so leaves the queue, or releases its backend slot).

use super::entry::CacheKey;
use futures_util::future::{BoxFuture, FutureExt, WeakShared};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The map holds flights weakly: only waiting callers keep a flight alive.
type Flights<T> = Arc<Mutex<HashMap<CacheKey, (u64, WeakShared<BoxFuture<'static, T>>)>>>;

pub struct SingleFlight<T: Clone + Send + Sync + 'static> {
    flights: Flights<T>,
    next_id: AtomicU64,
}

impl<T: Clone + Send + Sync + 'static> Default for SingleFlight<T> {
    fn default() -> Self {
        Self {
            flights: Arc::new(Mutex::new(HashMap::new())),
            next_id: AtomicU64::new(0),
        }
    }
}

/// Removes a flight from the map when its work finishes or is dropped, unless a newer flight
/// for the same key has replaced it.
struct Landing<T: Clone + Send + Sync + 'static> {
    flights: Flights<T>,
    key: CacheKey,
    id: u64,
}

impl<T: Clone + Send + Sync + 'static> Drop for Landing<T> {
    fn drop(&mut self) {
        {
            let mut map = self.flights.lock();
            if map.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
                map.remove(&self.key);
            }
        }
    }
}

impl<T: Clone + Send + Sync + 'static> SingleFlight<T> {
    /// Runs `work` for `key`, or joins the flight already running for it. Returns the result
    /// and whether this caller started the work.
    pub async fn run<F>(&self, key: CacheKey, work: F) -> (T, bool)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let (flight, led) = {
            let mut map = self.flights.lock();
            match map.get(&key).and_then(|(_, weak)| weak.upgrade()) {
                Some(flight) => (flight, false),
                None => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let landing = Landing {
                        flights: self.flights.clone(),
                        key,
                        id,
                    };
                    let flight = async move {
                        let _landing = landing;
                        work.await
                    }
                    .boxed()
                    .shared();
                    if let Some(weak) = flight.downgrade() {
                        map.insert(key, (id, weak));
                    }
                    (flight, true)
                }
            }
        };
        (flight.await, led)
    }

    /// Keys with work in flight.
    pub fn in_flight(&self) -> usize {
        self.flights.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let sf = Arc::new(SingleFlight::<u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let key = CacheKey([7; 32]);
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (sf, runs) = (sf.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                sf.run(key, async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    42
                })
                .await
            }));
        }
        let mut leaders = 0;
        for t in tasks {
            let (v, led) = t.await.expect("task");
            assert_eq!(v, 42);
            leaders += usize::from(led);
        }
        assert_eq!((runs.load(Ordering::SeqCst), leaders), (1, 1));
        assert_eq!(sf.in_flight(), 0, "the flight landed");
    }

    #[tokio::test]
    async fn a_flight_whose_callers_all_left_is_dropped() {
        let sf = SingleFlight::<u32>::default();
        let key = CacheKey([1; 32]);
        let abandoned =
            tokio::time::timeout(Duration::from_millis(20), sf.run(key, std::future::pending())).await;
        assert!(abandoned.is_err());
        assert_eq!(sf.in_flight(), 0);
        assert_eq!(sf.run(key, async { 5 }).await, (5, true));
    }
}
