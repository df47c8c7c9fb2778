//! The circuit breaker end to end: it opens after failures, keeps traffic on the other backend,
//! probes once, and closes or reopens.

use crate::common::gateway::{pool_yaml, Gateway};
use crate::common::sim::Sim;
use crate::support::{extra, post, requests, sft, FAST};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Fires `n` concurrent requests; returns their statuses.
async fn burst(gw: &Arc<Gateway>, n: usize, tag: &str) -> Vec<u16> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (gw, text) = (gw.clone(), format!("Burst {tag} request {i}."));
        tasks.spawn(async move { post(&gw, &sft(&text), &[]).await });
    }
    let mut statuses = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let r = joined.expect("task");
        if r.status == 200 {
            r.wav(24000);
        } else {
            assert_eq!((r.status, r.code().as_str()), (502, "backend_failed"));
        }
        statuses.push(r.status);
    }
    statuses
}

/// Bursts of concurrent requests until one reaches A (the half-open probe; A is slow, so the
/// probe is still in flight while the rest of its burst is dispatched). Returns the burst's
/// statuses; asserts exactly one request of it went to A.
async fn probe_burst(gw: &Arc<Gateway>, a: &Sim, tag: &str, timeout: Duration) -> Vec<u16> {
    let deadline = Instant::now() + timeout;
    let mut k = 0;
    loop {
        let before = requests(a).await;
        let statuses = burst(gw, 4, &format!("{tag}-{k}")).await;
        let reached = requests(a).await - before;
        if reached > 0 {
            assert_eq!(reached, 1, "{tag}: exactly one probe goes to a half-open backend");
            return statuses;
        }
        assert!(
            statuses.iter().all(|s| *s == 200),
            "{tag}: B serves while A is open"
        );
        assert!(Instant::now() < deadline, "{tag}: no probe within {timeout:?}");
        k += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sequential requests until A has answered `n` more (failing) ones; returns when the last one
/// came back.
async fn fail_on_a(gw: &Gateway, a: &Sim, n: u64, tag: &str) -> Instant {
    let target = requests(a).await + n;
    let mut failed = 0;
    for i in 0..4 * n {
        let r = post(gw, &sft(&format!("Open the breaker, {tag} {i}.")), &[]).await;
        if r.status == 200 {
            r.wav(24000);
        } else {
            assert_eq!((r.status, r.code().as_str()), (502, "backend_failed"));
            failed += 1;
        }
        if requests(a).await >= target {
            assert_eq!(failed, n, "{tag}: every request A got failed, and only those");
            return Instant::now();
        }
    }
    panic!("{tag}: A did not get {n} requests");
}

/// While the breaker is open (`opened.elapsed() < 1.5 s` of `open_for: 2s`), every request lands
/// on B; asserts A's counter did not move and at least 3 requests were checked.
async fn all_on_b_while_open(gw: &Gateway, a: &Sim, b: &Sim, opened: Instant, tag: &str) {
    let (a0, b0) = (requests(a).await, requests(b).await);
    let mut sent = 0;
    while sent < 6 && opened.elapsed() < Duration::from_millis(1500) {
        post(gw, &sft(&format!("While open, {tag} {sent}.")), &[])
            .await
            .wav(24000);
        sent += 1;
    }
    assert!(
        sent >= 3,
        "{tag}: too slow to check the open breaker ({sent} requests)"
    );
    assert_eq!(requests(a).await, a0, "{tag}: an open breaker gets no traffic");
    assert_eq!(requests(b).await - b0, sent, "{tag}: B took every request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_circuit_breaker_opens_probes_once_and_closes_or_reopens() {
    // A answers slowly, so its half-open probe is still in flight while other requests arrive.
    let a = Sim::start(&["--rtf", "0.01", "--first-chunk-ms", "300"]);
    let b = Sim::start(FAST);
    let gw = Arc::new(Gateway::start(&pool_yaml(
        "cosyvoice_fastapi",
        &[a.addr(), b.addr()],
        &extra(&[
            "retry: { attempts: 0 }",
            "circuit_breaker: { failures: 3, open_for: 2s }",
        ]),
    )));

    // Three consecutive failures open A's breaker.
    a.fault("error500", 3).await;
    let opened = fail_on_a(&gw, &a, 3, "first").await;
    all_on_b_while_open(&gw, &a, &b, opened, "first").await;

    // After open_for, exactly one probe; it succeeds and closes the breaker.
    let statuses = probe_burst(&gw, &a, "probe", Duration::from_secs(6)).await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "the probe and its burst succeed"
    );
    let a0 = requests(&a).await;
    for i in 0..4 {
        post(&gw, &sft(&format!("Closed again {i}.")), &[])
            .await
            .wav(24000);
    }
    assert!(requests(&a).await > a0, "a closed breaker: A is used again");

    // Open it again; this time the probe fails, which re-opens it.
    a.fault("error500", 3).await;
    fail_on_a(&gw, &a, 3, "second").await;
    a.fault("error500", 1).await;
    let statuses = probe_burst(&gw, &a, "failing probe", Duration::from_secs(6)).await;
    let reopened = Instant::now();
    assert_eq!(
        statuses.iter().filter(|s| **s == 502).count(),
        1,
        "the probe failed (no retries configured): {statuses:?}"
    );
    all_on_b_while_open(&gw, &a, &b, reopened, "re-opened").await;
    // And the next probe, with A healthy again, closes it.
    let statuses = probe_burst(&gw, &a, "last probe", Duration::from_secs(6)).await;
    assert!(statuses.iter().all(|s| *s == 200));
}
