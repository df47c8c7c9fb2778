//! One synthesis per key in flight: the first request for a key runs the work; identical
//! requests that arrive meanwhile wait for it and get a clone of its result (the same bytes, or
//! the same error). The work lives as long as any caller still waits for it; when the last one
//! goes away, it is dropped (and so leaves the queue, or releases its backend slot).
//!
//! Each flight also carries a *side* value made when it starts and handed to every caller
//! that joins it (the cache's: the flight's live audio, which streaming callers read).

use super::entry::CacheKey;
use futures_util::future::{BoxFuture, FutureExt, Shared, WeakShared};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The map holds flights weakly: only waiting callers keep a flight alive.
type Flights<T, S> = Arc<Mutex<HashMap<CacheKey, (u64, WeakShared<BoxFuture<'static, T>>, S)>>>;

/// A flight joined (or started): await `flight` for the result; `side` is the flight's.
pub struct Joined<T: Clone, S> {
    pub flight: Shared<BoxFuture<'static, T>>,
    pub side: S,
    /// Whether this caller started the work.
    pub led: bool,
}

pub struct SingleFlight<T: Clone + Send + Sync + 'static, S: Clone + Send + 'static = ()> {
    flights: Flights<T, S>,
    next_id: AtomicU64,
}

impl<T: Clone + Send + Sync + 'static, S: Clone + Send + 'static> Default for SingleFlight<T, S> {
    fn default() -> Self {
        Self {
            flights: Arc::new(Mutex::new(HashMap::new())),
            next_id: AtomicU64::new(0),
        }
    }
}

/// Removes a flight from the map when its work finishes or is dropped, unless a newer flight
/// for the same key has replaced it.
struct Landing<T: Clone + Send + Sync + 'static, S: Clone + Send + 'static> {
    flights: Flights<T, S>,
    key: CacheKey,
    id: u64,
}

impl<T: Clone + Send + Sync + 'static, S: Clone + Send + 'static> Drop for Landing<T, S> {
    fn drop(&mut self) {
        {
            let mut map = self.flights.lock();
            if map.get(&self.key).is_some_and(|(id, _, _)| *id == self.id) {
                map.remove(&self.key);
            }
        }
    }
}

impl<T: Clone + Send + Sync + 'static, S: Clone + Send + 'static> SingleFlight<T, S> {
    /// Joins the flight running for `key`, or starts one: `side()` makes its side value and
    /// `work(side)` its work (neither runs when joining). Does not wait: the work runs when the
    /// returned flight is awaited, for as long as one caller awaits it.
    pub fn join<F>(&self, key: CacheKey, side: impl FnOnce() -> S, work: impl FnOnce(S) -> F) -> Joined<T, S>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let mut map = self.flights.lock();
        if let Some((flight, side)) = map
            .get(&key)
            .and_then(|(_, weak, side)| Some((weak.upgrade()?, side.clone())))
        {
            return Joined {
                flight,
                side,
                led: false,
            };
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let landing = Landing {
            flights: self.flights.clone(),
            key,
            id,
        };
        let side = side();
        let work = work(side.clone());
        let flight = async move {
            let _landing = landing;
            work.await
        }
        .boxed()
        .shared();
        if let Some(weak) = flight.downgrade() {
            map.insert(key, (id, weak, side.clone()));
        }
        Joined {
            flight,
            side,
            led: true,
        }
    }

    /// Runs `work` for `key`, or joins the flight already running for it, and waits for the
    /// result. Returns the result and whether this caller started the work.
    pub async fn run<F>(&self, key: CacheKey, work: F) -> (T, bool)
    where
        F: Future<Output = T> + Send + 'static,
        S: Default,
    {
        let joined = self.join(key, S::default, |_| work);
        (joined.flight.await, joined.led)
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
