//! Retries: a backend crashing mid-load fails no request, each failed attempt is retried on the
//! other backend, and a backend's 4xx is not retried and its body stays in the log.

use crate::common::gateway::{eventually, pool_yaml, Gateway};
use crate::common::sim::{args_for, Sim};
use crate::support::{client, extra, post, requests, sft, try_post, FAST};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backend_crash_mid_load_fails_no_request() {
    let args = ["--rtf", "0.05", "--first-chunk-ms", "20"];
    let (a, b) = (Sim::start(&args), Sim::start(&args));
    let gw = Arc::new(Gateway::start(&pool_yaml(
        "cosyvoice_fastapi",
        &[a.addr(), b.addr()],
        "",
    )));
    let done = Arc::new(AtomicUsize::new(0));
    let permits = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (gw, done, permits) = (gw.clone(), done.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore");
            let text = format!("Crash test request {i:02}, long enough to keep a slot busy a while.");
            let r = try_post(&client(), &gw, &sft(&text), &[]).await;
            done.fetch_add(1, Ordering::SeqCst);
            r.map_err(|e| format!("request {i}: {e}"))
        });
    }
    eventually(Duration::from_secs(20), "a few requests complete", || {
        let done = done.clone();
        async move { done.load(Ordering::SeqCst) >= 5 }
    })
    .await;
    a.fault("crash", 1).await;
    let mut statuses = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let r = joined.expect("task").expect("the gateway answers");
        r.wav(24000);
        statuses.push(r.status);
    }
    assert_eq!(statuses.len(), 40);
    assert_eq!(
        a.wait_exit(Duration::from_secs(5)).await.and_then(|s| s.code()),
        Some(3),
        "sim A crashed mid-load"
    );
    assert!(requests(&b).await >= 20, "B served the rest");
}

#[tokio::test]
async fn each_failed_attempt_is_retried_on_the_other_backend() {
    for protocol in ["cosyvoice_fastapi", "generate_json"] {
        let (a, b) = (
            Sim::start(&args_for(protocol, FAST)),
            Sim::start(&args_for(protocol, FAST)),
        );
        let gw = Gateway::start(&pool_yaml(
            protocol,
            &[a.addr(), b.addr()],
            // Timeouts are not retried by default; this test wants every kind retried.
            &extra(&[
                "timeout: 1s",
                "circuit_breaker: { failures: 100 }",
                "retry: { on_timeout: true }",
            ]),
        ));
        for (n, fault) in ["error500", "truncate", "hang"].into_iter().enumerate() {
            let (a0, b0) = (requests(&a).await, requests(&b).await);
            a.fault(fault, 1).await;
            // Round robin sends one of two consecutive requests to A first.
            let mut sent = 0;
            while requests(&a).await == a0 {
                assert!(sent < 4, "{protocol} {fault}: no request reached A");
                let text = format!("Retry me after {fault}, request {n}.{sent}.");
                post(&gw, &sft(&text), &[]).await.wav(24000);
                sent += 1;
            }
            assert_eq!(requests(&a).await - a0, 1, "{protocol} {fault}: one attempt on A");
            assert_eq!(
                requests(&b).await - b0,
                sent,
                "{protocol} {fault}: B served every request, one of them as the retry"
            );
        }
    }
}

#[tokio::test]
async fn a_backends_4xx_is_not_retried_and_its_body_stays_in_the_log() {
    let (a, b) = (
        Sim::start(&args_for("generate_json", FAST)),
        Sim::start(&args_for("generate_json", FAST)),
    );
    // CosyVoice2 with no speaker list: the gateway passes any spk_id on, and the sim's
    // `/generate` answers 400 with its own words for an unknown one.
    let gw = Gateway::start(&pool_yaml(
        "generate_json",
        &[a.addr(), b.addr()],
        &extra(&["model: cosyvoice2"]),
    ));
    let body = json!({"text": "Who is this?", "mode": "sft", "spk_id": "nobody-here"}).to_string();
    let r = post(&gw, &body, &[]).await;
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.code(), "backend_rejected");
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert!(
        !text.contains("unknown spk_id") && !text.contains("unknown_speaker"),
        "the backend's own words never reach the client: {text}"
    );
    assert_eq!(
        requests(&a).await + requests(&b).await,
        1,
        "exactly one backend request"
    );
    let id = r.json()["error"]["request_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let log = gw.log();
    assert!(
        log.lines()
            .any(|l| l.contains(&id) && l.contains("unknown spk_id")),
        "the backend's answer is logged with the request id {id}:\n{log}"
    );
}
