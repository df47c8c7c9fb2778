//! Issue 9 through the real binaries: a backend that streams forever is cut off at what the
//! request can produce and blamed; requests that fail the same way on two backends open no
//! breaker; one deadline bounds queueing and every attempt; timeouts are not retried by
//! default; `unknown_pool` names no pools to anonymous callers; a CosyVoice3 backend given no
//! `<|endofprompt|>` (a pool misconfigured as cosyvoice2) fails fast and is not cached.

mod common;

use common::gateway::{pool_yaml, Gateway};
use common::sim::{args_for, Sim};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const FAST: &[&str] = &["--rtf", "0.01", "--first-chunk-ms", "5"];

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Indents pool lines by the 6 spaces `pool_yaml` expects.
fn extra(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("      {l}\n")).collect()
}

fn sft(text: &str, spk: &str) -> Value {
    json!({"text": text, "mode": "sft", "spk_id": spk})
}

struct Reply {
    status: u16,
    body: bytes::Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn post(gw: &Gateway, body: &Value, headers: &[(&str, &str)]) -> Reply {
    let mut req = client().post(gw.url("/generate")).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("the gateway answers");
    let status = resp.status().as_u16();
    let body = resp.bytes().await.expect("body");
    Reply { status, body }
}

async fn requests(sim: &Sim) -> u64 {
    sim.stats().await["requests"].as_u64().expect("requests")
}

#[tokio::test]
async fn a_backend_that_streams_forever_is_cut_off_and_blamed() {
    for protocol in ["cosyvoice_fastapi", "generate_json"] {
        let sim = Sim::start(&args_for(protocol, FAST));
        // 2 s of 24 kHz audio: 96 KB of PCM (+ 4 KiB header slack) per answer at most.
        let gw = Gateway::start(&pool_yaml(
            protocol,
            &[sim.addr()],
            &extra(&[
                "max_audio_seconds: 2",
                "circuit_breaker: { failures: 1, open_for: 60s }",
            ]),
        ));
        let ok = post(&gw, &sft("Short.", "中文女"), &[]).await;
        assert_eq!(ok.status, 200, "{protocol}: a normal answer fits: {}", ok.text());

        sim.fault("endless", 1).await;
        let started = Instant::now();
        let r = post(&gw, &sft("Runaway.", "中文女"), &[]).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (502, "backend_failed"),
            "{protocol}: {}",
            r.text()
        );
        assert!(
            r.text().contains("more audio than the request can produce"),
            "{protocol}: {}",
            r.text()
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{protocol}: cut off at once"
        );
        // The connection was dropped, not pooled: the sim sees its stream end.
        sim.wait_stats(Duration::from_secs(5), "the endless stream to end", |s| {
            s["inflight"] == 0
        })
        .await;
        // Counted against the backend: its one-failure breaker is open now.
        let before = requests(&sim).await;
        let r = post(&gw, &sft("After the runaway.", "中文女"), &[]).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (503, "no_backend_available"),
            "{protocol}"
        );
        assert_eq!(
            requests(&sim).await,
            before,
            "{protocol}: no traffic to an open breaker"
        );
    }
}

#[tokio::test]
async fn fifty_requests_that_fail_on_every_backend_open_no_breaker() {
    // CosyVoice2 backends with one preset speaker; the pool does not list speakers, so an
    // unknown spk_id reaches them, and they answer 200 then cut (as the real server does).
    let args = [
        "--model",
        "cosyvoice2",
        "--speakers",
        "中文女",
        "--rtf",
        "0.01",
        "--first-chunk-ms",
        "5",
    ];
    let (a, b) = (Sim::start(&args), Sim::start(&args));
    let pool = |budget: &str| {
        pool_yaml(
            "cosyvoice_fastapi",
            &[a.addr(), b.addr()],
            &extra(&[
                "model: cosyvoice2",
                "circuit_breaker: { failures: 3, open_for: 60s }",
                budget,
            ]),
        )
    };
    // A budget that lets every request be tried twice, then the default one.
    for (budget, generous) in [("retry: { budget_ratio: 1.0 }", true), ("retry: {}", false)] {
        let gw = Gateway::start(&pool(budget));
        let before = requests(&a).await + requests(&b).await;
        for round in 0..10 {
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..5 {
                let gw_url = gw.url("/generate");
                let body = sft(&format!("Bad speaker {round}.{i}."), "nobody");
                tasks.spawn(async move {
                    let resp = client().post(gw_url).json(&body).send().await.expect("answer");
                    let status = resp.status().as_u16();
                    let v: Value = resp.json().await.expect("json error");
                    (
                        status,
                        v["error"]["code"].as_str().unwrap_or_default().to_string(),
                    )
                });
            }
            while let Some(done) = tasks.join_next().await {
                let (status, code) = done.expect("task");
                assert_eq!(status, 502, "{code}");
                if generous {
                    assert_eq!(code, "synthesis_failed");
                } else {
                    // Once the budget is spent a request is not tried a second time: no verdict.
                    assert!(code == "synthesis_failed" || code == "backend_failed", "{code}");
                }
            }
        }
        let sent = requests(&a).await + requests(&b).await - before;
        if generous {
            assert_eq!(
                sent, 100,
                "each bad request tried on exactly two backends, then stopped"
            );
        } else {
            assert!(
                (50..100).contains(&sent),
                "the default budget held retries back: {sent}"
            );
        }
        // Every breaker is still closed: a valid request is served at once, and both backends
        // take traffic.
        let started = Instant::now();
        let r = post(&gw, &sft("A valid request.", "中文女"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(started.elapsed() < Duration::from_secs(2), "served at once");
        let (a0, b0) = (requests(&a).await, requests(&b).await);
        for i in 0..6 {
            let r = post(&gw, &sft(&format!("Valid {i}."), "中文女"), &[]).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        assert!(
            requests(&a).await > a0 && requests(&b).await > b0,
            "both backends serve: no breaker opened"
        );
        assert!(
            gw.log().contains("the request's fault, no backend blamed"),
            "the verdict is logged"
        );
    }
}

#[tokio::test]
async fn a_backend_that_alone_cuts_streams_is_still_blamed() {
    let (a, b) = (Sim::start(FAST), Sim::start(FAST));
    let gw = Gateway::start(&pool_yaml(
        "cosyvoice_fastapi",
        &[a.addr(), b.addr()],
        &extra(&["circuit_breaker: { failures: 2, open_for: 60s }"]),
    ));
    a.fault("truncate", 100).await;
    // Every request that meets A is cut there and served by B; A is blamed each time.
    let mut i = 0;
    while requests(&a).await < 2 {
        let r = post(&gw, &sft(&format!("Cut on A {i}."), "中文女"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        i += 1;
        assert!(i < 20, "A never saw two requests");
    }
    let a_seen = requests(&a).await;
    for j in 0..6 {
        let r = post(&gw, &sft(&format!("After A opened {j}."), "中文女"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(requests(&a).await, a_seen, "A's breaker is open: no more traffic");
}

#[tokio::test]
async fn one_deadline_covers_queueing_and_every_attempt() {
    let (a, b) = (Sim::start(FAST), Sim::start(FAST));
    let gw = Gateway::start(&pool_yaml(
        "cosyvoice_fastapi",
        &[a.addr(), b.addr()],
        &extra(&[
            "timeout: 1s",
            "deadline: 1500ms",
            "retry: { attempts: 5, on_timeout: true }",
            "circuit_breaker: { failures: 100 }",
        ]),
    ));
    a.fault("hang", 10).await;
    b.fault("hang", 10).await;
    let started = Instant::now();
    let r = post(&gw, &sft("Never finishes.", "中文女"), &[]).await;
    let took = started.elapsed();
    assert_eq!(
        (r.status, r.code().as_str()),
        (504, "deadline_exceeded"),
        "{}",
        r.text()
    );
    // Six attempts of 1 s each would take 6 s; the deadline ends it at 1.5 s.
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(3000),
        "{took:?}"
    );
    assert_eq!(
        requests(&a).await + requests(&b).await,
        2,
        "one full attempt, one cut short"
    );
}

#[tokio::test]
async fn a_timeout_is_not_retried_by_default() {
    let (a, b) = (Sim::start(FAST), Sim::start(FAST));
    let gw = Gateway::start(&pool_yaml(
        "cosyvoice_fastapi",
        &[a.addr(), b.addr()],
        &extra(&["timeout: 500ms"]),
    ));
    a.fault("hang", 10).await;
    b.fault("hang", 10).await;
    let r = post(&gw, &sft("Slow GPU.", "中文女"), &[]).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (504, "backend_timeout"),
        "{}",
        r.text()
    );
    assert_eq!(
        requests(&a).await + requests(&b).await,
        1,
        "the abandoned synthesis is not doubled"
    );
}

#[tokio::test]
async fn unknown_pool_names_pools_only_to_callers_with_a_token() {
    let sim = Sim::start(FAST);
    let digest = |t: &str| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(t.as_bytes()))
    };
    let gw = Gateway::start(&format!(
        "  auth:\n    allow_anonymous: true\n    tokens:\n      - {{ name: a, sha256: \"{}\", pools: [cosyvoice] }}\n  default_pool: cosyvoice\n{}    secret-pool:\n      protocol: cosyvoice_fastapi\n      backends:\n        - addr: {}\n",
        digest("token-a"),
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], ""),
        sim.addr()
    ));
    let pool = [("X-Cosygate-Pool", "nope")];
    let r = post(&gw, &sft("Hi.", "中文女"), &pool).await;
    assert_eq!((r.status, r.code().as_str()), (404, "unknown_pool"));
    assert!(
        !r.text().contains("cosyvoice") && !r.text().contains("secret-pool"),
        "anonymous callers learn no pool names: {}",
        r.text()
    );
    let r = post(
        &gw,
        &sft("Hi.", "中文女"),
        &[pool[0], ("Authorization", "Bearer token-a")],
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (404, "unknown_pool"));
    assert!(r.text().contains("cosyvoice"), "{}", r.text());
    assert!(
        !r.text().contains("secret-pool"),
        "only the pools the token may use: {}",
        r.text()
    );
    assert_eq!(requests(&sim).await, 0);
}

#[tokio::test]
async fn what_the_model_cannot_do_is_refused_before_any_backend_sees_it() {
    let sim = Sim::start(FAST);
    // A CosyVoice3 pool that lists no speakers, with a prompt limit above the model's 30 s.
    let gw = Gateway::start(&format!(
        "  limits: {{ max_prompt_seconds: 60 }}\n{}",
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], &extra(&["model: cosyvoice3"]))
    ));
    let r = post(&gw, &sft("Hi.", "中文女"), &[]).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (422, "sft_unavailable"),
        "{}",
        r.text()
    );
    assert!(
        r.text().contains("cross_lingual"),
        "says what to do instead: {}",
        r.text()
    );
    let long = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(common::sim::test_wav(31.0, 16000))
    };
    let body = json!({"text": "Hi.", "mode": "cross_lingual", "prompt_audio": long});
    let r = post(&gw, &body, &[]).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (422, "prompt_too_long"),
        "{}",
        r.text()
    );
    assert_eq!(requests(&sim).await, 0, "no backend saw either");
}

#[tokio::test]
async fn a_cosyvoice3_backend_behind_a_pool_that_adds_no_marker_fails_fast_and_is_not_cached() {
    // The pool says cosyvoice2, so the gateway adds no <|endofprompt|>; the CosyVoice3 backend
    // then fails inside its stream at once (200, then a cut), as upstream's assert does.
    let sim = Sim::start(FAST);
    let gw = Gateway::start(&format!(
        "  cache: {{}}\n{}",
        pool_yaml(
            "cosyvoice_fastapi",
            &[sim.addr()],
            &extra(&["model: cosyvoice2", "retry: { attempts: 0 }"])
        )
    ));
    let prompt = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(common::sim::test_wav(1.0, 16000))
    };
    let body = json!({"text": "No marker here.", "prompt_audio": prompt, "prompt_text": "Hi."});
    for attempt in 1..=2 {
        let start = Instant::now();
        let r = post(&gw, &body, &[]).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (502, "backend_failed"),
            "attempt {attempt}: {}",
            r.text()
        );
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "a cut, not a wait for a timeout: {:?}",
            start.elapsed()
        );
    }
    let stats = sim.stats().await;
    assert_eq!(
        (stats["missing_endofprompt"].as_u64(), stats["requests"].as_u64()),
        (Some(2), Some(2)),
        "the cut answer was not cached: both reached the backend"
    );
}
