//! 202 Accepted jobs: a request that cannot start in time (or asked `Prefer: respond-async`)
//! keeps its place and runs on; the caller polls `GET /v1/jobs/{id}`. Job ids are 128 random
//! bits, bound to their creator (token name, or IP when anonymous).
//!
//! Bounds, whatever callers do: each caller holds at most `jobs.max_unfinished_per_caller`
//! unfinished jobs (429 `too_many_jobs` beyond); the store holds at most `jobs.max` jobs (503
//! `too_many_jobs` when all are unfinished) and at most `jobs.max_bytes` of finished results.
//! Past `max_bytes` the oldest finished results are dropped first, leaving a small tombstone so
//! their owner is told (404 `job_expired`) rather than left guessing. Finished jobs expire
//! `jobs.keep` after they finished. Every job is watched by a small task that learns when its
//! synthesis ends, so expiry and eviction are queues in finish order (which is expiry order,
//! `keep` being fixed): amortised O(1) per job, no sweep over the store.
//!
//! With a disk or Redis cache tier, every job is also recorded where other processes can read
//! it (`records.rs`), so a job survives the graceful upgrade of the process that runs it.

mod records;

pub use records::{JobRecords, RecordWriter};

use crate::config::JobsConf;
use crate::synth::{Position, Report, SynthError, Synthesized};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a request is: waiting for a GPU slot, synthesizing, or done.
#[derive(Clone)]
pub enum Phase {
    /// `position` reads the live queue position and the expected wait (None once a slot is
    /// granted).
    Queued {
        position: Position,
    },
    /// Accepted, not yet in the pool's queue (or waiting on an identical request's synthesis);
    /// `eta` was estimated when the request arrived.
    Pending {
        eta: Duration,
    },
    Running,
    Done(Result<Synthesized, JobFailed>),
}

/// Why a job may not start (the edge answers 429 / 503 `too_many_jobs`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    /// The caller already holds `held` unfinished jobs, its quota.
    #[error("{held} unfinished jobs already (the quota)")]
    QuotaReached { held: usize },
    /// The store holds `jobs.max` jobs and none is finished.
    #[error("the job store is full of unfinished jobs")]
    StoreFull,
}

/// Why a finished request has no audio for its poller.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum JobFailed {
    #[error(transparent)]
    Synth(#[from] SynthError),
    /// Its result was dropped early to stay within `jobs.max_bytes` (kept `keep` at most).
    #[error("job {id}: result dropped early")]
    Expired { id: String, keep: Duration },
    /// Its task ended (panic, abort) without recording an answer.
    #[error("the synthesis task ended without an answer")]
    Died,
}

/// The shared view of one request's progress, written by its task, read by pollers.
pub type Progress = Arc<Mutex<Phase>>;

/// The layers below report into the cell ([`Report`]); `track` records the end.
impl Report for Mutex<Phase> {
    fn queued(&self, position: Position) {
        *self.lock() = Phase::Queued { position };
    }

    fn running(&self) {
        *self.lock() = Phase::Running;
    }
}

/// The job layer around a synthesis: runs it and records its result in `progress` (where a
/// poller finds it), then returns it. Runs in the request's production task.
pub async fn track<F>(progress: Progress, synthesis: F) -> Result<Synthesized, SynthError>
where
    F: std::future::Future<Output = Result<Synthesized, SynthError>>,
{
    let result = synthesis.await;
    *progress.lock() = Phase::Done(result.clone().map_err(JobFailed::from));
    result
}

/// What a poller is told.
pub enum JobStatus {
    Queued { position: usize, eta: Duration },
    Running,
    Done(Result<Synthesized, JobFailed>),
}

/// Bytes charged per finished job besides its WAV (id, owner, map and queue entries).
const JOB_OVERHEAD: usize = 256;

struct Job {
    owner: String,
    progress: Progress,
    /// When it expires; None while unfinished.
    expires: Option<Instant>,
    /// Bytes charged to the store for its result (0 while unfinished or once dropped).
    bytes: usize,
}

#[derive(Default)]
struct Store {
    jobs: HashMap<String, Job>,
    /// Finished jobs (tombstones included) in finish order, which is expiry order.
    expiry: VecDeque<(Instant, String)>,
    /// Finished jobs holding a WAV, oldest first; entries of jobs gone since are skipped.
    results: VecDeque<String>,
    /// Bytes charged for finished jobs.
    bytes: usize,
    /// Unfinished jobs per owner (owners with none are removed).
    unfinished: HashMap<String, usize>,
}

pub struct Jobs {
    store: Mutex<Store>,
    /// Where other processes read this one's jobs (None: memory only).
    records: Option<Arc<JobRecords>>,
    /// Jobs whose creation record is being written, told when it is (see [`Jobs::recorded`]).
    recording: Mutex<HashMap<String, tokio::sync::oneshot::Receiver<()>>>,
    keep: Duration,
    max: usize,
    max_bytes: usize,
    per_caller: usize,
}

/// Whose quota a job counts against: its owner, except that anonymous IPv6 callers
/// (`ip:ADDR`) share one quota per /64, as they share one rate limit (one host can use a whole
/// /64). Ownership (who may read the job) stays the full address.
fn quota_key(owner: &str) -> String {
    match owner
        .strip_prefix("ip:")
        .and_then(|ip| ip.parse::<std::net::Ipv6Addr>().ok())
    {
        Some(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        _ => owner.to_string(),
    }
}

/// The status of a progress cell right now.
pub fn status_of(progress: &Progress) -> JobStatus {
    match &*progress.lock() {
        Phase::Queued { position } => match position() {
            Some((position, eta)) => JobStatus::Queued { position, eta },
            None => JobStatus::Running,
        },
        Phase::Pending { eta } => JobStatus::Queued {
            position: 0,
            eta: *eta,
        },
        Phase::Running => JobStatus::Running,
        Phase::Done(r) => JobStatus::Done(r.clone()),
    }
}

impl Jobs {
    /// Built once at startup from `jobs:`.
    pub fn new(conf: &JobsConf) -> Self {
        Self {
            store: Mutex::new(Store::default()),
            records: None,
            recording: Mutex::new(HashMap::new()),
            keep: conf.keep.0,
            max: conf.max.max(1),
            max_bytes: usize::try_from(conf.max_bytes.0).unwrap_or(usize::MAX),
            per_caller: conf.max_unfinished_per_caller.max(1),
        }
    }

    /// Records every job in `records` too, for other processes.
    pub fn with_records(mut self, records: Option<Arc<JobRecords>>) -> Self {
        self.records = records;
        self
    }

    /// Registers `task` (the request's synthesis, already running) as a job of `owner`, and
    /// watches it to learn when it ends. Its id; or 429 `too_many_jobs` when the owner already
    /// has its quota of unfinished jobs, 503 when the store is full of unfinished jobs (the
    /// caller then aborts the task: the request is not queued). Needs a tokio runtime.
    pub fn create<T: Send + 'static>(
        self: &Arc<Self>,
        owner: &str,
        progress: Progress,
        task: tokio::task::JoinHandle<T>,
    ) -> Result<String, JobError> {
        let id = {
            let mut store = self.store.lock();
            let now = Instant::now();
            store.expire(now);
            let quota = quota_key(owner);
            self.quota_left(&store, &quota)?;
            while store.jobs.len() >= self.max {
                if !store.drop_oldest_finished() {
                    return Err(JobError::StoreFull);
                }
            }
            let id = format!("{:032x}", rand::random::<u128>());
            store.jobs.insert(
                id.clone(),
                Job {
                    owner: owner.to_string(),
                    progress,
                    expires: None,
                    bytes: 0,
                },
            );
            *store.unfinished.entry(quota).or_default() += 1;
            id
        };
        if let Some(records) = &self.records {
            let written = records.created(&id, owner);
            self.recording.lock().insert(id.clone(), written);
        }
        let jobs = Arc::clone(self);
        let watched = id.clone();
        tokio::spawn(async move {
            let ended = task.await;
            jobs.finished(&watched, ended.is_err());
        });
        Ok(id)
    }

    /// 429 `too_many_jobs` if `owner` already holds its quota of unfinished jobs. Runs before
    /// a `Prefer: respond-async` request starts, so a refused one never reaches a backend.
    pub fn check_quota(&self, owner: &str) -> Result<(), JobError> {
        let store = self.store.lock();
        self.quota_left(&store, &quota_key(owner))
    }

    /// Waits (at most `limit`) until the job's creation record is written, so every instance
    /// finds the job as soon as its 202 is out. At once without records.
    pub async fn recorded(&self, id: &str, limit: Duration) {
        let written = self.recording.lock().remove(id);
        if let Some(written) = written {
            let _ = tokio::time::timeout(limit, written).await;
        }
    }

    /// Like [`get`](Self::get), and when this process does not know the job, as another
    /// process recorded it (a job started before a graceful upgrade).
    pub async fn find(&self, id: &str, owner: &str) -> Option<JobStatus> {
        if let Some(status) = self.get(id, owner) {
            return Some(status);
        }
        self.records.as_ref()?.load(id, owner).await
    }

    fn quota_left(&self, store: &Store, quota: &str) -> Result<(), JobError> {
        let held = store.unfinished.get(quota).copied().unwrap_or(0);
        if held < self.per_caller {
            return Ok(());
        }
        Err(JobError::QuotaReached { held })
    }

    /// The job's status for `owner`; None for an unknown or expired id, or another caller's job
    /// (which must look exactly like an unknown one). A result dropped early to stay within
    /// `max_bytes` is `Done(Err(404 job_expired))`.
    pub fn get(&self, id: &str, owner: &str) -> Option<JobStatus> {
        let mut store = self.store.lock();
        store.expire(Instant::now());
        let job = store.jobs.get(id).filter(|j| j.owner == owner)?;
        Some(status_of(&job.progress))
    }

    /// The job's progress cell (for a status answer), whoever owns it.
    pub fn progress(&self, id: &str) -> Option<Progress> {
        self.store.lock().jobs.get(id).map(|j| j.progress.clone())
    }

    /// Job records being written to the shared store (the drain waits for them).
    pub fn records_in_flight(&self) -> usize {
        self.records.as_ref().map_or(0, |r| r.writes_in_flight())
    }

    /// How many jobs are held, how many are unfinished, and the bytes their results take.
    pub fn usage(&self) -> (usize, usize, usize) {
        let store = self.store.lock();
        let unfinished = store.unfinished.values().sum();
        (store.jobs.len(), unfinished, store.bytes)
    }

    /// Runs when a job's task has ended: starts its expiry clock, charges its result, and
    /// drops the oldest results while the store is over `max_bytes`. A task that died without
    /// recording an answer (panic, abort) becomes a 500 `internal` answer.
    fn finished(&self, id: &str, died: bool) {
        let mut store = self.store.lock();
        let now = Instant::now();
        let Some(job) = store.jobs.get_mut(id) else {
            return;
        };
        let bytes = {
            let mut phase = job.progress.lock();
            if died && !matches!(*phase, Phase::Done(_)) {
                *phase = Phase::Done(Err(JobFailed::Died));
            }
            match &*phase {
                Phase::Done(Ok(a)) => a.wav.len() + JOB_OVERHEAD,
                _ => JOB_OVERHEAD,
            }
        };
        self.recording.lock().remove(id);
        if let Some(records) = &self.records {
            if let Phase::Done(result) = &*job.progress.lock() {
                records.finished(id, &job.owner, result);
            }
        }
        let holds_wav = bytes > JOB_OVERHEAD;
        let expires = now + self.keep;
        job.expires = Some(expires);
        job.bytes = bytes;
        let quota = quota_key(&job.owner);
        store.bytes += bytes;
        store.expiry.push_back((expires, id.to_string()));
        if holds_wav {
            store.results.push_back(id.to_string());
        }
        if let Some(n) = store.unfinished.get_mut(&quota) {
            *n -= 1;
            if *n == 0 {
                store.unfinished.remove(&quota);
            }
        }
        while store.bytes > self.max_bytes {
            match store.drop_oldest_result(self.keep) {
                Some(dropped) => {
                    if let Some(records) = &self.records {
                        records.removed(&dropped);
                    }
                }
                None => break,
            }
        }
    }
}

impl Store {
    /// Removes the jobs whose time is up (they sit at the front of `expiry`).
    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.expiry.front() {
            if *at > now {
                break;
            }
            if let Some((_, id)) = self.expiry.pop_front() {
                self.remove(&id);
            }
        }
        self.trim_results();
    }

    /// Pops the entries of jobs that are gone or hold no WAV off the front of `results` (in
    /// finish order, like `expiry`), so it never outgrows the store.
    fn trim_results(&mut self) {
        while let Some(id) = self.results.front() {
            if self.jobs.get(id).is_some_and(|j| j.bytes > JOB_OVERHEAD) {
                break;
            }
            self.results.pop_front();
        }
    }

    /// Removes the oldest finished job entirely (to make room for a new one); false if none.
    fn drop_oldest_finished(&mut self) -> bool {
        match self.expiry.pop_front() {
            Some((_, id)) => {
                self.remove(&id);
                self.trim_results();
                true
            }
            None => false,
        }
    }

    /// Replaces the oldest finished result with a tombstone that says so; the job's id, or
    /// None if there is none.
    fn drop_oldest_result(&mut self, keep: Duration) -> Option<String> {
        while let Some(id) = self.results.pop_front() {
            let Some(job) = self.jobs.get_mut(&id) else {
                continue; // expired already
            };
            if job.bytes <= JOB_OVERHEAD {
                continue;
            }
            let freed = job.bytes - JOB_OVERHEAD;
            job.bytes = JOB_OVERHEAD;
            job.progress = Arc::new(Mutex::new(Phase::Done(Err(JobFailed::Expired {
                id: id.clone(),
                keep,
            }))));
            self.bytes -= freed;
            return Some(id);
        }
        None
    }

    fn remove(&mut self, id: &str) {
        if let Some(job) = self.jobs.remove(id) {
            self.bytes -= job.bytes;
        }
    }
}

#[cfg(test)]
mod tests;
