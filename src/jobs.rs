//! 202 Accepted jobs: a request that cannot start in time (or asked `Prefer: respond-async`)
//! keeps its place and runs on; the caller polls `GET /v1/jobs/{id}`. Job ids are 128 random
//! bits, bound to their creator (token name, or IP when anonymous). Finished jobs are kept for
//! `jobs.keep`; at most `jobs.max` jobs are held, the oldest finished ones going first.

use crate::api::ApiError;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A finished synthesis: the WAV and the headers it is served with.
#[derive(Debug, Clone)]
pub struct Answer {
    pub wav: Bytes,
    pub headers: Vec<(&'static str, String)>,
}

/// Where a request is: waiting for a GPU slot, synthesizing, or done.
#[derive(Clone)]
pub enum Phase {
    /// `position` reads the live queue position and the expected wait (None once a slot is
    /// granted).
    Queued {
        position: Arc<dyn Fn() -> Option<(usize, Duration)> + Send + Sync>,
    },
    /// Accepted, not yet in the pool's queue (or waiting on an identical request's synthesis);
    /// `eta` was estimated when the request arrived.
    Pending {
        eta: Duration,
    },
    Running,
    Done(Result<Answer, ApiError>),
}

/// The shared view of one request's progress, written by its task, read by pollers.
pub type Progress = Arc<Mutex<Phase>>;

/// What a poller is told.
pub enum JobStatus {
    Queued { position: usize, eta: Duration },
    Running,
    Done(Result<Answer, ApiError>),
}

struct Job {
    owner: String,
    progress: Progress,
    finished_at: Option<Instant>,
    created: Instant,
}

pub struct Jobs {
    jobs: Mutex<HashMap<String, Job>>,
    keep: Duration,
    max: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The status of a progress cell right now.
pub fn status_of(progress: &Progress) -> JobStatus {
    match &*lock(progress) {
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
    pub fn new(keep: Duration, max: usize) -> Self {
        Self {
            jobs: Mutex::new(HashMap::new()),
            keep,
            max: max.max(1),
        }
    }

    /// Registers a job for `owner`; its id, or 503 when the store is full of unfinished jobs.
    pub fn create(&self, owner: &str, progress: Progress) -> Result<String, ApiError> {
        let mut jobs = lock(&self.jobs);
        self.sweep(&mut jobs);
        if jobs.len() >= self.max {
            return Err(ApiError::new(
                503,
                "too_many_jobs",
                "too many jobs are pending; try again shortly",
            )
            .with_retry_after(5));
        }
        let id = format!("{:032x}", rand::random::<u128>());
        jobs.insert(
            id.clone(),
            Job {
                owner: owner.to_string(),
                progress,
                finished_at: None,
                created: Instant::now(),
            },
        );
        Ok(id)
    }

    /// The job's status for `owner`; None for an unknown or expired id, or another caller's job
    /// (which must look exactly like an unknown one).
    pub fn get(&self, id: &str, owner: &str) -> Option<JobStatus> {
        let mut jobs = lock(&self.jobs);
        self.sweep(&mut jobs);
        let job = jobs.get_mut(id).filter(|j| j.owner == owner)?;
        let status = status_of(&job.progress);
        if matches!(status, JobStatus::Done(_)) && job.finished_at.is_none() {
            job.finished_at = Some(Instant::now());
        }
        Some(status)
    }

    /// The job's progress cell (for a status answer), whoever owns it.
    pub fn progress(&self, id: &str) -> Option<Progress> {
        lock(&self.jobs).get(id).map(|j| j.progress.clone())
    }

    /// Drops finished jobs older than `keep`, then the oldest finished ones while over `max`.
    fn sweep(&self, jobs: &mut HashMap<String, Job>) {
        let now = Instant::now();
        for job in jobs.values_mut() {
            if job.finished_at.is_none() && matches!(*lock(&job.progress), Phase::Done(_)) {
                job.finished_at = Some(now);
            }
        }
        jobs.retain(|_, j| j.finished_at.is_none_or(|t| now.duration_since(t) < self.keep));
        while jobs.len() >= self.max {
            let oldest = jobs
                .iter()
                .filter(|(_, j)| j.finished_at.is_some())
                .min_by_key(|(_, j)| j.created)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => jobs.remove(&id),
                None => break,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done() -> Progress {
        Arc::new(Mutex::new(Phase::Done(Ok(Answer {
            wav: Bytes::from_static(b"RIFF"),
            headers: vec![],
        }))))
    }

    #[test]
    fn jobs_belong_to_their_creator_and_expire() {
        let jobs = Jobs::new(Duration::from_millis(50), 10);
        let id = jobs.create("10.0.0.1", done()).expect("created");
        assert_eq!(id.len(), 32);
        assert!(jobs.get(&id, "10.0.0.2").is_none(), "another caller sees nothing");
        assert!(matches!(jobs.get(&id, "10.0.0.1"), Some(JobStatus::Done(Ok(_)))));
        std::thread::sleep(Duration::from_millis(80));
        assert!(jobs.get(&id, "10.0.0.1").is_none(), "expired");
    }

    #[test]
    fn the_store_is_bounded() {
        let jobs = Jobs::new(Duration::from_secs(60), 3);
        let queued = || Arc::new(Mutex::new(Phase::Running));
        let first = jobs.create("a", done()).expect("1");
        jobs.get(&first, "a");
        jobs.create("a", queued()).expect("2");
        jobs.create("a", queued()).expect("3");
        jobs.create("a", queued()).expect("finished job 1 makes room");
        assert!(jobs.get(&first, "a").is_none());
        assert_eq!(
            jobs.create("a", queued()).map_err(|e| e.code),
            Err("too_many_jobs")
        );
    }
}
