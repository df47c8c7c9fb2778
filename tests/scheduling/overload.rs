//! Overload and fairness: three times the capacity never over-fills a GPU and every request
//! gets an answer; one light client is not starved by a heavy client's backlog.

use crate::common::gateway::{pool_yaml, Gateway};
use crate::common::sim::Sim;
use crate::support::{auth_yaml, bearer, client, extra, post, read, requests, sft};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_times_capacity_never_overfills_a_gpu_and_every_request_gets_an_answer() {
    // Each sim dies like a CUDA OOM on a 9th concurrent synthesis.
    let args = [
        "--slots",
        "8",
        "--overload",
        "oom",
        "--rtf",
        "0.2",
        "--first-chunk-ms",
        "50",
    ];
    let (a, b) = (Sim::start(&args), Sim::start(&args));
    // Every request and every job poll below goes through one client, which opens at most 48
    // connections per round: 3 × 48 + 1 < 256 even if no connection were ever reused and the
    // gateway noticed no close, so the per-IP cap can never be what answers.
    let gw = Gateway::start(&format!(
        "  limits: {{ max_connections_per_ip: 256 }}\n{}",
        pool_yaml(
            "cosyvoice_fastapi",
            &[a.addr(), b.addr()],
            &extra(&[
                "max_concurrency: 8",
                "queue: { max_len: 16, max_wait: 5s, async_after: 1s }",
                // Two sims at full load on a busy 2-core machine can take over 500 ms to answer
                // /docs: one slow probe must not mark a working backend down here (this test
                // is about slots and the queue; the sims never crash).
                "health: { interval: 500ms, timeout: 3s, unhealthy_after: 3, healthy_after: 1 }",
            ]),
        )
    ));
    let client = client();
    let (mut ok, mut accepted, mut full) = (0u64, 0u64, 0u64);
    for round in 0..3 {
        // 48 = 3 × the 16 slots; ~1.25 s of synthesis each, so 16 run, 16 wait past
        // async_after (202) and 16 find the queue full (503).
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..48 {
            let (client, url) = (client.clone(), gw.url("/generate"));
            let text = format!(
                "Round {round} request {i:02}: the quick brown fox jumps over the lazy dog while every GPU stays busy."
            );
            tasks.spawn(async move {
                let resp = client
                    .post(url)
                    .header("Content-Type", "application/json")
                    .body(sft(&text))
                    .send()
                    .await;
                match resp {
                    Ok(r) => Ok(read(r).await),
                    Err(e) => Err(format!("request {i}: {e}")),
                }
            });
        }
        let mut jobs = Vec::new();
        let mut errors = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined.expect("task") {
                Err(e) => errors.push(e),
                Ok(r) => match r.status {
                    200 => {
                        r.wav(24000);
                        ok += 1;
                    }
                    202 => {
                        jobs.push(r.accepted().0);
                        accepted += 1;
                    }
                    503 => {
                        assert_eq!(r.code(), "queue_full");
                        assert!(r.retry_after() >= 1);
                        full += 1;
                    }
                    s => panic!(
                        "round {round}: unexpected {s}: {}",
                        String::from_utf8_lossy(&r.body)
                    ),
                },
            }
        }
        assert!(
            errors.is_empty(),
            "round {round}: connection errors (a sim alive: {}/{}): {errors:?}",
            a.is_running(),
            b.is_running()
        );
        for location in jobs {
            let deadline = Instant::now() + Duration::from_secs(20);
            let done = loop {
                let r = client.get(gw.url(&location)).send().await;
                let r = read(r.expect("the gateway answers a job poll")).await;
                if r.status != 202 {
                    break r;
                }
                assert!(Instant::now() < deadline, "job {location} not done within 20 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            done.wav(24000);
            ok += 1;
        }
    }
    assert!(a.is_running() && b.is_running(), "no sim ran out of GPU memory");
    let (sa, sb) = (a.stats().await, b.stats().await);
    for s in [&sa, &sb] {
        assert!(
            s["max_inflight"].as_u64().expect("max_inflight") <= 8,
            "never more than 8 syntheses on one GPU: {s}"
        );
    }
    assert!(
        accepted + full > 0,
        "the load went over capacity (ok {ok}, 202 {accepted}, 503 {full})"
    );
    assert_eq!(ok + full, 3 * 48, "every request ended as audio or a 503");
    assert_eq!(
        requests(&a).await + requests(&b).await,
        ok,
        "each answered request cost exactly one backend call; refused ones none"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Fairness

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_light_request_is_not_starved_by_a_heavy_clients_backlog() {
    let sim = Sim::start(&[
        "--slots",
        "1",
        "--overload",
        "oom",
        "--rtf",
        "0.05",
        "--first-chunk-ms",
        "100",
    ]);
    let gw = Gateway::start(&format!(
        "{}{}",
        auth_yaml(&["heavy", "light"]),
        pool_yaml(
            "cosyvoice_fastapi",
            &[sim.addr()],
            &extra(&[
                "max_concurrency: 1",
                "queue: { max_len: 64, max_wait: 30s, async_after: 60s }",
            ]),
        )
    ));
    let gw = Arc::new(gw);
    let done = Arc::new(AtomicUsize::new(0));
    let mut heavy = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (gw, done) = (gw.clone(), done.clone());
        heavy.spawn(async move {
            let r = post(
                &gw,
                &sft(&format!("Heavy request number {i}.")),
                &[bearer("heavy")],
            )
            .await;
            let seq = done.fetch_add(1, Ordering::SeqCst);
            (r, seq)
        });
    }
    // The heavy client's backlog is in the queue once the backend is working through it.
    sim.wait_stats(
        Duration::from_secs(10),
        "the heavy client's first requests",
        |s| s["requests"].as_u64() >= Some(2),
    )
    .await;
    let sent_at = done.load(Ordering::SeqCst);
    let light = post(&gw, &sft("Just one light request."), &[bearer("light")]).await;
    let light_seq = done.fetch_add(1, Ordering::SeqCst);
    light.wav(24000);
    let mut after = 0;
    while let Some(joined) = heavy.join_next().await {
        let (r, seq) = joined.expect("task");
        r.wav(24000);
        after += usize::from(seq > light_seq);
    }
    let before = light_seq - sent_at;
    // The light request waits for the heavy one on the GPU and at most one more heavy turn (one
    // more may finish on the wire while the light one is being sent).
    assert!(
        before <= 3,
        "the light request finished after {before} of the heavy client's requests"
    );
    assert!(
        after >= 15,
        "the heavy client still had its backlog queued ({after} finished after the light one)"
    );
    assert!(sim.is_running());
    assert_eq!(sim.stats().await["max_inflight"], 1);
}
