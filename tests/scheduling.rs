//! GPU-slot scheduling end to end (issue 5), through the real `cosygate` and `cosyvoice-sim`
//! binaries over HTTP: overload never over-fills a GPU, the queue is fair across clients, failed
//! attempts are retried on another backend (4xx never), circuit breakers keep traffic off a
//! failing backend and probe it once, the fallback voice answers when no backend can, 202 jobs,
//! and a caller who disconnects while queued leaves the queue. Every wait polls with a deadline;
//! every assertion is on what a user sees (status, headers, bytes) or on the sim's own counters.

mod common;

use bytes::Bytes;
use common::gateway::{eventually, free_port, pool_yaml, Gateway};
use common::sim::Sim;
use cosygate::api::wav::parse_wav;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const FAST: &[&str] = &["--rtf", "0.01", "--first-chunk-ms", "5"];

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        // Well below the gateway's keep-alive idle timeout (header_timeout, 10 s), so a pooled
        // connection is never reused just as the gateway closes it.
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .expect("client")
}

/// Indents pool lines by the 6 spaces `pool_yaml` expects.
fn extra(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("      {l}\n")).collect()
}

/// An SFT request (no prompt audio): the cheapest request that reaches the backend.
fn sft(text: &str) -> String {
    json!({"text": text, "mode": "sft", "spk_id": "中文女"}).to_string()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `auth:` with one token per name (token = `token-<name>`), anonymous callers allowed.
fn auth_yaml(names: &[&str]) -> String {
    let tokens: String = names
        .iter()
        .map(|n| {
            format!(
                "      - {{ name: {n}, sha256: \"{}\" }}\n",
                sha256_hex(format!("token-{n}").as_bytes())
            )
        })
        .collect();
    format!("  auth:\n    allow_anonymous: true\n    tokens:\n{tokens}")
}

fn bearer(name: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer token-{name}"))
}

/// One answer of the gateway, read whole.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ASCII header"))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} body is JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The error code of a JSON error answer (checking its shape).
    fn code(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "errors are JSON"
        );
        let v = self.json();
        assert!(
            v["error"]["request_id"].as_str().is_some_and(|s| s.len() >= 32),
            "request_id in {v}"
        );
        assert!(
            v["error"]["message"].as_str().is_some_and(|s| !s.is_empty()),
            "message in {v}"
        );
        v["error"]["code"].as_str().unwrap_or_default().to_string()
    }

    /// Asserts a 200 with a complete mono 16-bit WAV at `rate`; returns the WAV.
    fn wav(&self, rate: u32) -> &Bytes {
        assert_eq!(
            self.status,
            200,
            "expected audio, got {}: {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), Some("audio/wav"));
        let declared: usize = self
            .header("content-length")
            .expect("Content-Length")
            .parse()
            .expect("a number");
        assert_eq!(self.body.len(), declared, "Content-Length matches the body");
        let info = parse_wav(&self.body).expect("a complete, valid WAV");
        assert_eq!(
            (info.sample_rate, info.channels, info.bits_per_sample),
            (rate, 1, 16)
        );
        assert!(info.frames > 0, "the WAV has audio");
        &self.body
    }

    fn retry_after(&self) -> u64 {
        self.header("retry-after")
            .unwrap_or_else(|| panic!("{} has Retry-After", self.status))
            .parse()
            .expect("Retry-After is whole seconds")
    }

    /// Checks the 202 job form (contract: Location, Retry-After, job_id/status/position/eta);
    /// returns the job's location and its status word.
    fn accepted(&self) -> (String, String) {
        assert_eq!(
            self.status,
            202,
            "expected 202, got {}: {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        let v = self.json();
        let id = v["job_id"].as_str().expect("job_id").to_string();
        assert!(
            id.len() >= 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "job id is at least 128 bits of hex: {id:?}"
        );
        let location = format!("/v1/jobs/{id}");
        assert_eq!(self.header("location"), Some(location.as_str()));
        assert!(self.retry_after() >= 1, "Retry-After is at least 1 s");
        let status = v["status"].as_str().expect("status").to_string();
        assert!(status == "queued" || status == "running", "status word in {v}");
        assert!(v["position"].is_u64(), "position is a count: {v}");
        assert!(v["eta_seconds"].is_u64(), "eta_seconds is whole seconds: {v}");
        (location, status)
    }
}

async fn read(resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.expect("the whole body");
    Reply {
        status,
        headers,
        body,
    }
}

async fn try_post(
    client: &reqwest::Client,
    gw: &Gateway,
    body: &str,
    headers: &[(&str, String)],
) -> reqwest::Result<Reply> {
    let mut req = client
        .post(gw.url("/generate"))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

async fn post(gw: &Gateway, body: &str, headers: &[(&str, String)]) -> Reply {
    try_post(&client(), gw, body, headers)
        .await
        .expect("the gateway answers")
}

async fn get(gw: &Gateway, path: &str, headers: &[(&str, String)]) -> Reply {
    let mut req = client().get(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    read(req.send().await.expect("the gateway answers")).await
}

/// Polls a job until it is no longer 202 (each 202 checked), at most `timeout`.
async fn wait_job(gw: &Gateway, location: &str, headers: &[(&str, String)], timeout: Duration) -> Reply {
    let deadline = Instant::now() + timeout;
    loop {
        let r = get(gw, location, headers).await;
        if r.status != 202 {
            return r;
        }
        r.accepted();
        assert!(
            Instant::now() < deadline,
            "job {location} not done within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls an anonymous caller's job (for at most 1 s) until its 202 body satisfies `check`;
/// returns that body.
async fn job_status_until(gw: &Gateway, location: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let r = get(gw, location, &[]).await;
        r.accepted();
        let v = r.json();
        if check(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn requests(sim: &Sim) -> u64 {
    sim.stats().await["requests"].as_u64().expect("requests")
}

async fn health(gw: &Gateway) -> (u16, Value) {
    let r = get(gw, "/health", &[]).await;
    (r.status, r.json())
}

// ---------------------------------------------------------------------------------------------
// 1. Overload never over-fills a GPU

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

// ---------------------------------------------------------------------------------------------
// 3. Retries

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
        let (a, b) = (Sim::start(FAST), Sim::start(FAST));
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
    let (a, b) = (Sim::start(FAST), Sim::start(FAST));
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

// ---------------------------------------------------------------------------------------------
// 4. Circuit breaker

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

// ---------------------------------------------------------------------------------------------
// 5. Fallback

const ESPEAK: &str =
    "  fallback:\n    command: [\"espeak-ng\", \"-v\", \"en-us\", \"-w\", \"{out}\", \"--stdin\"]\n";

async fn wait_health(gw: &Gateway, status: u16, word: &str) {
    eventually(Duration::from_secs(10), "every backend marked down", || async {
        let (s, v) = health(gw).await;
        s == status && v["status"] == word && v["backends_healthy"] == 0
    })
    .await;
}

#[tokio::test]
async fn the_fallback_voice_answers_when_no_backend_can_and_is_not_cached() {
    let (a, b) = (Sim::start(FAST), Sim::start(FAST));
    let gw = Gateway::start(&format!(
        "  cache: {{ ttl: 1h }}\n{ESPEAK}{}",
        pool_yaml("cosyvoice_fastapi", &[a.addr(), b.addr()], "")
    ));
    let real = post(&gw, &sft("Cached from a real backend."), &[]).await;
    real.wav(24000);
    assert_eq!(real.header("x-cache"), Some("MISS"));
    assert_eq!(real.header("x-degraded"), None);

    a.kill();
    b.kill();
    // Every attempt fails (connection refused) before the health checks notice: fallback.
    let body = sft("Hello from the fallback voice.");
    let first = post(&gw, &body, &[]).await;
    first.wav(22050);
    assert_eq!(first.header("x-degraded"), Some("fallback"));
    assert_eq!(first.header("x-cache"), Some("MISS"));

    // Every backend down, and /health still says ok because the fallback can serve.
    wait_health(&gw, 200, "ok").await;
    let again = post(&gw, &body, &[]).await;
    again.wav(22050);
    assert_eq!(again.header("x-degraded"), Some("fallback"));
    assert_eq!(
        again.header("x-cache"),
        Some("MISS"),
        "fallback audio is not cached"
    );
    // Audio cached from a real backend is still served, before any fallback.
    let hit = post(&gw, &sft("Cached from a real backend."), &[]).await;
    assert_eq!(hit.wav(24000), real.wav(24000));
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(hit.header("x-degraded"), None);
}

#[tokio::test]
async fn fallback_audio_is_cached_only_with_fallback_cache_true() {
    let dead = [
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    ];
    let disk = tempfile::tempdir().expect("temp dir");
    let conf = format!(
        "  cache: {{ ttl: 1h, disk: {{ path: {} }} }}\n{ESPEAK}    cache: true\n{}",
        disk.path().display(),
        pool_yaml("cosyvoice_fastapi", &dead, "")
    );
    let gw = Gateway::start(&conf);
    wait_health(&gw, 200, "ok").await;
    let body = sft("Cache the robot voice.");
    let first = post(&gw, &body, &[]).await;
    first.wav(22050);
    assert_eq!(first.header("x-degraded"), Some("fallback"));
    assert_eq!(first.header("x-cache"), Some("MISS"));
    let second = post(&gw, &body, &[]).await;
    assert_eq!(second.wav(22050), first.wav(22050));
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(
        second.header("x-degraded"),
        Some("fallback"),
        "a cached fallback answer says so"
    );
    // From the disk tier too, after a restart (the entry is stored after the first answer).
    eventually(Duration::from_secs(5), "the entry on disk", || {
        std::future::ready(has_entry_file(disk.path()))
    })
    .await;
    drop(gw);
    let gw = Gateway::start(&conf);
    wait_health(&gw, 200, "ok").await;
    let third = post(&gw, &body, &[]).await;
    assert_eq!(third.wav(22050), first.wav(22050));
    assert_eq!(third.header("x-cache-tier"), Some("disk"));
    assert_eq!(third.header("x-degraded"), Some("fallback"));
}

/// Whether a disk cache directory holds an entry file.
fn has_entry_file(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).into_iter().flatten().flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            has_entry_file(&p)
        } else {
            p.extension().is_some_and(|x| x == "entry")
        }
    })
}

#[tokio::test]
async fn identical_requests_that_join_a_fallback_synthesis_are_marked_degraded_too() {
    let dead = [
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    ];
    // A slow fallback voice, so the identical requests join the first one's synthesis.
    let slow = "  fallback:\n    command: [\"sh\", \"-c\", \"sleep 0.5; exec espeak-ng -v en-us -w \\\"$0\\\" --stdin\", \"{out}\"]\n";
    let gw = Gateway::start(&format!(
        "  cache: {{ ttl: 1h }}\n{slow}{}",
        pool_yaml("cosyvoice_fastapi", &dead, "")
    ));
    wait_health(&gw, 200, "ok").await;
    let body = sft("Everyone hears the robot voice.");
    let answers = futures_util::future::join_all((0..4).map(|_| post(&gw, &body, &[]))).await;
    let mut caches: Vec<_> = answers
        .iter()
        .map(|r| {
            r.wav(22050);
            assert_eq!(r.header("x-degraded"), Some("fallback"), "joined or not");
            (r.header("x-cache"), r.header("x-cache-tier"))
        })
        .collect();
    caches.sort();
    assert_eq!(
        caches,
        [
            (Some("HIT"), Some("inflight")),
            (Some("HIT"), Some("inflight")),
            (Some("HIT"), Some("inflight")),
            (Some("MISS"), None)
        ],
        "one synthesis, three joined"
    );
}

#[tokio::test]
async fn without_a_fallback_no_backend_is_a_json_503() {
    let dead = [
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    ];
    let gw = Gateway::start(&pool_yaml("cosyvoice_fastapi", &dead, ""));
    wait_health(&gw, 503, "unavailable").await;
    let r = post(&gw, &sft("Nobody can say this."), &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.code(), "no_backend_available");
    assert!(r.retry_after() >= 1);
    assert_eq!(r.header("x-degraded"), None);
}

// ---------------------------------------------------------------------------------------------
// 6. Jobs

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
