//! 202 jobs (the same audio, only to their owner; `queued` in the first 202) and a caller who
//! disconnects while queued leaving the queue.

use crate::common::gateway::{pool_yaml, Gateway};
use crate::common::sim::Sim;
use crate::support::{auth_yaml, bearer, extra, get, job_status_until, post, requests, sft, wait_job};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn jobs_answer_202_then_the_same_audio_only_to_their_owner() {
    let sim = Sim::start(&["--slots", "1", "--rtf", "0.1", "--first-chunk-ms", "400"]);
    let gw = Gateway::start(&format!(
        "{}{}",
        auth_yaml(&["owner", "other"]),
        pool_yaml(
            "cosyvoice_fastapi",
            &[sim.addr()],
            &extra(&["max_concurrency: 1", "queue: { async_after: 300ms }",]),
        )
    ));
    let owner = [bearer("owner")];
    let body = sft("A job that runs in the background.");
    let mut headers = owner.to_vec();
    headers.push(("Prefer", "respond-async".to_string()));
    let accepted = post(&gw, &body, &headers).await;
    let (location, _) = accepted.accepted();
    assert_eq!(accepted.header("content-type"), Some("application/json"));

    // Still running: the same 202 form.
    let polled = get(&gw, &location, &owner).await;
    assert_eq!(polled.accepted().0, location);
    // Nobody else can see it, and an unknown id looks the same.
    for (who, path) in [
        (vec![bearer("other")], location.clone()),
        (vec![], location.clone()),
        (owner.to_vec(), format!("/v1/jobs/{:032x}", 7u128)),
    ] {
        let r = get(&gw, &path, &who).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (404, "job_not_found"),
            "{path} {who:?}"
        );
    }
    let done = wait_job(&gw, &location, &owner, Duration::from_secs(10)).await;
    let job_wav = done.wav(24000).clone();
    // A synchronous request for the same body gets exactly the same bytes (the sim's audio is
    // deterministic; no cache here).
    let sync = post(&gw, &body, &owner).await;
    assert_eq!(sync.header("x-cache"), Some("BYPASS"));
    assert_eq!(*sync.wav(24000), job_wav);
    assert_eq!(requests(&sim).await, 2);

    // A request that cannot start within async_after becomes a job by itself.
    let slow_gw = Arc::new(gw);
    let slow = {
        let gw = slow_gw.clone();
        let text = "A long request that keeps the only GPU slot busy for well over a second, so that the next one must wait in the queue.";
        tokio::spawn(async move { post(&gw, &sft(text), &[]).await })
    };
    sim.wait_stats(Duration::from_secs(5), "the slow request runs", |s| {
        s["inflight"] == 1
    })
    .await;
    let started = Instant::now();
    let queued = post(&slow_gw, &sft("Queued behind the slow one."), &[]).await;
    let (location, status) = queued.accepted();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "answered after async_after"
    );
    assert_eq!(status, "queued");
    let v = queued.json();
    assert_eq!(v["position"], 0, "next in line: {v}");
    assert!(v["eta_seconds"].as_u64() >= Some(1), "{v}");
    slow.await.expect("task").wav(24000);
    wait_job(&slow_gw, &location, &[], Duration::from_secs(10))
        .await
        .wav(24000);
}

#[tokio::test]
async fn a_queued_job_says_queued_in_its_first_202() {
    let sim = Sim::start(&["--slots", "1", "--rtf", "0.2", "--first-chunk-ms", "200"]);
    let gw = Arc::new(Gateway::start(&pool_yaml(
        "cosyvoice_fastapi",
        &[sim.addr()],
        &extra(&["max_concurrency: 1", "queue: { async_after: 60s }"]),
    )));
    let slow = {
        let gw = gw.clone();
        let text = "A long request that keeps the only GPU slot busy for well over a second, so that the next one must wait.";
        tokio::spawn(async move { post(&gw, &sft(text), &[]).await })
    };
    sim.wait_stats(Duration::from_secs(5), "the slow request runs", |s| {
        s["inflight"] == 1
    })
    .await;
    let queued = post(
        &gw,
        &sft("Waiting politely."),
        &[("Prefer", "respond-async".to_string())],
    )
    .await;
    let (location, status) = queued.accepted();
    let v = queued.json();
    assert_eq!(status, "queued", "the only slot is busy, so the job waits: {v}");
    assert_eq!(v["position"], 0, "{v}");
    assert!(v["eta_seconds"].as_u64() >= Some(1), "{v}");
    slow.await.expect("task").wav(24000);
    wait_job(&gw, &location, &[], Duration::from_secs(10))
        .await
        .wav(24000);
}

// ---------------------------------------------------------------------------------------------
// 7. Disconnect while queued

#[tokio::test]
async fn a_caller_who_disconnects_while_queued_leaves_the_queue() {
    let sim = Sim::start(&["--slots", "1", "--rtf", "0.2", "--first-chunk-ms", "200"]);
    let gw = Arc::new(Gateway::start(&pool_yaml(
        "cosyvoice_fastapi",
        &[sim.addr()],
        &extra(&["max_concurrency: 1", "queue: { max_wait: 30s, async_after: 60s }"]),
    )));
    // A long request (~2.5 s) holds the only slot.
    let long = {
        let gw = gw.clone();
        let text = "The long request holds the only slot: it speaks slowly and at length about queues, sockets and the callers who hang up before their turn comes around.";
        tokio::spawn(async move {
            let r = post(&gw, &sft(text), &[]).await;
            (r, Instant::now())
        })
    };
    sim.wait_stats(Duration::from_secs(5), "the long request runs", |s| {
        s["inflight"] == 1
    })
    .await;

    // A second caller queues over a raw socket...
    let body = sft("I will hang up before my turn.");
    let mut socket = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    let request = format!(
        "POST /generate HTTP/1.1\r\nHost: cosygate\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.expect("send");
    socket.flush().await.expect("flush");
    // ...and a third one (a job, so its place can be read) queues behind it. The grace only
    // lets the gateway read a few hundred local bytes; `position` below checks it did.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = post(
        &gw,
        &sft("Third in line."),
        &[("Prefer", "respond-async".to_string())],
    )
    .await;
    let (location, _) = third.accepted();
    // (The first 202 may still say `running`, position 0: see
    // `a_queued_job_says_queued_in_its_first_202`.) The job's own status shows its place.
    let place = job_status_until(&gw, &location, "the third request is queued", |v| {
        v["status"] == "queued"
    })
    .await;
    assert_eq!(
        place["position"], 1,
        "the raw-socket caller is queued ahead: {place}"
    );

    // The second caller hangs up: it leaves the queue at once.
    drop(socket);
    let hung_up = Instant::now();
    job_status_until(&gw, &location, "the third request moves up to position 0", |v| {
        v["status"] == "queued" && v["position"] == 0
    })
    .await;
    let (long, long_done) = long.await.expect("task");
    long.wav(24000);
    assert!(
        long_done > hung_up,
        "the long request was still running when the caller left"
    );
    let done = wait_job(&gw, &location, &[], Duration::from_secs(10)).await;
    done.wav(24000);
    assert!(
        long_done.elapsed() < Duration::from_secs(2),
        "the third request ran right after the long one"
    );
    let stats = sim.stats().await;
    assert_eq!(
        stats["requests"], 2,
        "the abandoned request never reached the backend: {stats}"
    );
}
