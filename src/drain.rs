//! Finishing every synthesis before the process exits, on SIGTERM (stop) and SIGQUIT (graceful
//! upgrade). Owns the count of work in flight and the thread that ends the process once it is
//! zero.
//!
//! Pingora 0.9.1's shutdown, after either signal: stop accepting (after handing the listening
//! sockets to the new process and 5 s more of accepting, on SIGQUIT), then sleep
//! `grace_period_seconds`, a fixed sleep, then shut the runtimes down, which drops every task
//! still running: a synthesis in flight is cut. cosygate makes the grace period the *deadline*
//! of a drain (by default the slowest request a pool allows) and ends it early: a thread
//! subscribed to Pingora's execution phases waits, from `ShutdownGracePeriod` on, until no
//! request is being answered, no 202 job is unfinished and no cache store or job record is
//! being written, then exits the process (status 0). An idle gateway exits at once; a busy one
//! as soon as its last answer is written; a stuck one when the grace period ends, as before.

use crate::cache::Cache;
use crate::jobs::Jobs;
use log::{info, warn};
use pingora::server::ExecutionPhase;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// How often the drain looks again.
const POLL: Duration = Duration::from_millis(20);

/// What must end before the process may: requests, jobs, cache stores.
pub struct InFlight {
    requests: AtomicUsize,
    jobs: Arc<Jobs>,
    cache: Option<Arc<Cache>>,
}

/// One request being answered; counted from its headers to its access-log line.
pub struct RequestInFlight(Arc<InFlight>);

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::AcqRel);
        crate::metrics::CONCURRENT_REQUESTS.dec();
    }
}

impl InFlight {
    pub fn new(jobs: Arc<Jobs>, cache: Option<Arc<Cache>>) -> Arc<Self> {
        Arc::new(Self {
            requests: AtomicUsize::new(0),
            jobs,
            cache,
        })
    }

    /// Counts a request until the guard is dropped.
    pub fn request(self: &Arc<Self>) -> RequestInFlight {
        self.requests.fetch_add(1, Ordering::AcqRel);
        crate::metrics::CONCURRENT_REQUESTS.inc();
        RequestInFlight(self.clone())
    }

    /// What is still running, for the log: (requests, unfinished jobs, stores and records
    /// being written).
    pub fn counts(&self) -> (usize, usize, usize) {
        let writes = self.cache.as_ref().map_or(0, |c| c.stores_in_flight()) + self.jobs.records_in_flight();
        (self.requests.load(Ordering::Acquire), self.jobs.usage().1, writes)
    }

    pub fn is_idle(&self) -> bool {
        self.counts() == (0, 0, 0)
    }
}

/// Starts the thread that ends the process once a shutdown's drain is over. `phases` must be
/// subscribed before the server runs; `deadline` is the grace period (Pingora ends the process
/// itself when it passes).
pub fn watch(mut phases: broadcast::Receiver<ExecutionPhase>, in_flight: Arc<InFlight>, deadline: Duration) {
    let spawned = std::thread::Builder::new()
        .name("cosygate drain".into())
        .spawn(move || loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::ShutdownGracePeriod) => {
                    drain(&in_flight, deadline);
                    std::process::exit(0);
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        });
    if let Err(e) = spawned {
        warn!("cannot start the drain thread ({e}); shutdowns will wait the whole grace period");
    }
}

/// Waits until nothing is in flight or `deadline` has passed.
fn drain(in_flight: &InFlight, deadline: Duration) {
    let started = Instant::now();
    let (requests, jobs, writes) = in_flight.counts();
    info!(
        "draining: {requests} requests, {jobs} unfinished jobs, {writes} cache stores and job records in flight; \
         waiting up to {} s (grace_period_seconds)",
        deadline.as_secs()
    );
    let mut last_report = Instant::now();
    while !in_flight.is_idle() {
        if started.elapsed() >= deadline {
            let (requests, jobs, writes) = in_flight.counts();
            warn!(
                "drain deadline passed with {requests} requests, {jobs} jobs and {writes} writes still in flight; they are cut"
            );
            return;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            let (requests, jobs, writes) = in_flight.counts();
            info!("draining: {requests} requests, {jobs} unfinished jobs, {writes} writes left");
            last_report = Instant::now();
        }
        std::thread::sleep(POLL);
    }
    info!("drained in {} ms; exiting", started.elapsed().as_millis());
}
