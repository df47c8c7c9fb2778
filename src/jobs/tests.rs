//! Tests of the job store (`mod.rs`): ownership, expiry, the per-caller quota, the byte bound
//! with its tombstones, the count bound, and tasks that die.

use super::*;
use crate::config::{ByteSize, ConfDuration};

fn conf(keep_ms: u64, max: usize, max_bytes: u64, per_caller: usize) -> JobsConf {
    JobsConf {
        keep: ConfDuration(Duration::from_millis(keep_ms)),
        max,
        max_bytes: ByteSize(max_bytes),
        max_unfinished_per_caller: per_caller,
    }
}

fn cell() -> Progress {
    Arc::new(Mutex::new(Phase::Running))
}

/// A task that finishes with a WAV of `len` bytes when `go` is sent (or at once without one).
fn task(
    progress: &Progress,
    len: usize,
    go: Option<tokio::sync::oneshot::Receiver<()>>,
) -> tokio::task::JoinHandle<()> {
    let progress = progress.clone();
    tokio::spawn(async move {
        if let Some(go) = go {
            let _ = go.await;
        }
        *progress.lock() = Phase::Done(Ok(Synthesized {
            wav: bytes::Bytes::from(vec![7u8; len]),
            source: crate::synth::Source::Fallback,
            degraded: false,
            approximate: None,
            created: std::time::SystemTime::now(),
            key: None,
        }));
    })
}

/// Waits (deadline 2 s) until the store has `unfinished` unfinished jobs.
async fn settle(jobs: &Jobs, unfinished: usize) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while jobs.usage().1 != unfinished {
        assert!(Instant::now() < deadline, "usage stays {:?}", jobs.usage());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn code(status: Option<JobStatus>) -> Option<&'static str> {
    match status {
        Some(JobStatus::Done(Err(JobFailed::Expired { .. }))) => Some("expired"),
        Some(JobStatus::Done(Err(JobFailed::Died))) => Some("died"),
        Some(JobStatus::Done(Err(JobFailed::Synth(_)))) => Some("synth_error"),
        Some(JobStatus::Done(Ok(_))) => Some("ok"),
        Some(_) => Some("unfinished"),
        None => None,
    }
}

#[tokio::test]
async fn jobs_belong_to_their_creator_and_expire_after_they_finish() {
    let jobs = Arc::new(Jobs::new(&conf(50, 10, 1 << 20, 4)));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let p = cell();
    let id = jobs
        .create("10.0.0.1", p.clone(), task(&p, 100, Some(rx)))
        .expect("created");
    assert_eq!(id.len(), 32);
    assert!(jobs.get(&id, "10.0.0.2").is_none(), "another caller sees nothing");
    // Unfinished jobs never expire, however long they run.
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(code(jobs.get(&id, "10.0.0.1")), Some("unfinished"));
    tx.send(()).expect("go");
    settle(&jobs, 0).await;
    assert_eq!(code(jobs.get(&id, "10.0.0.1")), Some("ok"));
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(jobs.get(&id, "10.0.0.1").is_none(), "expired");
    assert_eq!(jobs.usage(), (0, 0, 0));
}

#[tokio::test]
async fn each_caller_has_a_quota_of_unfinished_jobs() {
    let jobs = Arc::new(Jobs::new(&conf(60_000, 100, 1 << 20, 2)));
    let mut gates = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = tokio::sync::oneshot::channel();
        gates.push(tx);
        let p = cell();
        jobs.create("a", p.clone(), task(&p, 10, Some(rx)))
            .expect("within quota");
    }
    assert_eq!(jobs.check_quota("a"), Err(JobError::QuotaReached { held: 2 }));
    assert!(jobs.check_quota("b").is_ok());
    let p = cell();
    let e = jobs
        .create("a", p.clone(), task(&p, 10, None))
        .expect_err("over quota");
    assert_eq!(e, JobError::QuotaReached { held: 2 });
    let (_b_gate, rx) = tokio::sync::oneshot::channel();
    let p = cell();
    jobs.create("b", p.clone(), task(&p, 10, Some(rx)))
        .expect("another caller has its own quota");
    // One of a's jobs finishes: a may start another.
    gates.remove(0).send(()).expect("go");
    settle(&jobs, 2).await;
    let p = cell();
    jobs.create("a", p.clone(), task(&p, 10, None))
        .expect("room again");
}

#[tokio::test]
async fn past_max_bytes_the_oldest_results_are_dropped_and_their_owners_told() {
    // Room for two results of 1000 bytes and three jobs' overhead (a tombstone keeps its
    // overhead), not three results.
    let budget = 2 * 1000 + 3 * JOB_OVERHEAD + 100;
    let jobs = Arc::new(Jobs::new(&conf(60_000, 100, budget as u64, 10)));
    let mut ids = Vec::new();
    for _ in 0..3 {
        let p = cell();
        ids.push(
            jobs.create("a", p.clone(), task(&p, 1000, None))
                .expect("created"),
        );
        settle(&jobs, 0).await;
    }
    assert!(jobs.usage().2 <= budget, "{:?}", jobs.usage());
    assert_eq!(code(jobs.get(&ids[0], "a")), Some("expired"));
    assert!(
        jobs.get(&ids[0], "b").is_none(),
        "the tombstone is only its owner's"
    );
    assert_eq!(code(jobs.get(&ids[1], "a")), Some("ok"));
    assert_eq!(code(jobs.get(&ids[2], "a")), Some("ok"));
}

#[tokio::test]
async fn the_store_is_bounded_in_jobs() {
    let jobs = Arc::new(Jobs::new(&conf(60_000, 3, 1 << 20, 10)));
    let p = cell();
    let first = jobs.create("a", p.clone(), task(&p, 10, None)).expect("1");
    settle(&jobs, 0).await;
    let mut gates = Vec::new();
    let mut never = || {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        gates.push(tx);
        Some(rx)
    };
    for _ in 0..2 {
        let p = cell();
        jobs.create("a", p.clone(), task(&p, 10, never())).expect("2, 3");
    }
    let p = cell();
    jobs.create("a", p.clone(), task(&p, 10, never()))
        .expect("the finished job makes room");
    assert!(jobs.get(&first, "a").is_none());
    let p = cell();
    let e = jobs
        .create("a", p.clone(), task(&p, 10, never()))
        .expect_err("full");
    assert_eq!(e, JobError::StoreFull);
}

#[tokio::test]
async fn a_task_that_dies_becomes_an_internal_error_and_frees_its_quota() {
    let jobs = Arc::new(Jobs::new(&conf(60_000, 10, 1 << 20, 1)));
    let p = cell();
    let dying = tokio::spawn(async { panic!("boom") });
    let id = jobs.create("a", p, dying).expect("created");
    settle(&jobs, 0).await;
    assert_eq!(code(jobs.get(&id, "a")), Some("died"));
    let p = cell();
    jobs.create("a", p.clone(), task(&p, 10, None))
        .expect("quota freed");
}

#[tokio::test]
async fn many_jobs_expire_without_a_sweep() {
    // 20,000 finished jobs, then each poll does O(1) work: all of them in well under a second
    // even in a debug build (the old sweep was O(n) per call, O(n^2) here).
    let jobs = Arc::new(Jobs::new(&conf(60_000, 30_000, 1 << 30, 30_000)));
    let mut ids = Vec::new();
    for _ in 0..20_000 {
        let p = cell();
        ids.push(jobs.create("a", p.clone(), task(&p, 16, None)).expect("created"));
    }
    settle(&jobs, 0).await;
    let started = Instant::now();
    for id in &ids {
        assert!(jobs.get(id, "a").is_some());
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn anonymous_ipv6_callers_share_a_quota_per_64() {
    let jobs = Arc::new(Jobs::new(&conf(60_000, 100, 1 << 20, 1)));
    let mut gates = Vec::new();
    let mut never = || {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        gates.push(tx);
        Some(rx)
    };
    let p = cell();
    jobs.create("ip:2001:db8:1:2::1", p.clone(), task(&p, 10, never()))
        .expect("first");
    let p = cell();
    let e = jobs
        .create("ip:2001:db8:1:2:ffff::9", p.clone(), task(&p, 10, never()))
        .expect_err("same /64");
    assert_eq!(e, JobError::QuotaReached { held: 1 });
    for other in [
        "ip:2001:db8:1:3::1",
        "ip:10.0.0.1",
        "ip:10.0.0.2",
        "token:ip:2001:db8:1:2::7",
    ] {
        let p = cell();
        jobs.create(other, p.clone(), task(&p, 10, never())).expect(other);
    }
}
