//! 202 jobs are bounded (issue 9 §2 "Jobs"): a caller over its quota of unfinished jobs gets
//! 429 `too_many_jobs` with `Retry-After` and its request never reaches a backend; another
//! caller still gets its jobs; past `jobs.max_bytes` the oldest finished results are dropped
//! and their owner is told (404 `job_expired`), while the newest are served whole.

mod common;

use common::gateway::{pool_yaml, Gateway};
use common::http::complete_wav;
use common::sim::Sim;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

fn token_yaml(names: &[&str]) -> String {
    let tokens: String = names
        .iter()
        .map(|n| {
            format!(
                "      - {{ name: {n}, sha256: \"{}\" }}\n",
                hex::encode(Sha256::digest(format!("token-{n}").as_bytes()))
            )
        })
        .collect();
    format!("  auth:\n    allow_anonymous: true\n    tokens:\n{tokens}")
}

/// Texts of the same length, so every WAV has the same size.
fn text(i: usize) -> String {
    format!("Background job number {i:03} speaks this sentence.")
}

fn wav_len(text: &str) -> usize {
    let frames = (cosyvoice_sim::audio::duration_secs(text, 1.0) * 24000.0).round() as usize;
    44 + 2 * frames
}

async fn submit(client: &reqwest::Client, gw: &Gateway, who: &str, text: &str) -> reqwest::Response {
    client
        .post(gw.url("/generate"))
        .bearer_auth(format!("token-{who}"))
        .header("Prefer", "respond-async")
        .json(&json!({"text": text, "mode": "sft", "spk_id": "中文女"}))
        .send()
        .await
        .expect("an answer")
}

async fn accepted(client: &reqwest::Client, gw: &Gateway, who: &str, text: &str) -> String {
    let r = submit(client, gw, who, text).await;
    assert_eq!(r.status(), 202, "{text}");
    let v: Value = r.json().await.expect("json");
    format!("/v1/jobs/{}", v["job_id"].as_str().expect("job_id"))
}

/// Polls until the job is no longer 202 (deadline 20 s); the final answer.
async fn finish(client: &reqwest::Client, gw: &Gateway, who: &str, location: &str) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = client
            .get(gw.url(location))
            .bearer_auth(format!("token-{who}"))
            .send()
            .await
            .expect("an answer");
        if r.status() != 202 {
            return r;
        }
        assert!(Instant::now() < deadline, "{location} still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn jobs_are_bounded_per_caller_and_in_bytes() {
    let sim = Sim::start(&["--slots", "1", "--rtf", "0.05", "--first-chunk-ms", "300"]);
    let w = wav_len(&text(0));
    // Room for two finished results and some overhead, not three.
    let max_bytes = w * 5 / 2;
    let gw = Gateway::start(&format!(
        "{}  jobs: {{ max_unfinished_per_caller: 2, max_bytes: {max_bytes} }}\n{}",
        token_yaml(&["a", "b"]),
        pool_yaml(
            "cosyvoice_fastapi",
            &[sim.addr()],
            "      model: cosyvoice2\n      max_concurrency: 1\n",
        )
    ));
    let client = reqwest::Client::new();
    common::gateway::eventually(Duration::from_secs(10), "the backend healthy", || async {
        match client.get(gw.url("/health")).send().await {
            Ok(r) => r.json::<Value>().await.is_ok_and(|v| v["backends_healthy"] == 1),
            Err(_) => false,
        }
    })
    .await;

    // The quota: two unfinished jobs for a; the third is refused before any backend sees it.
    let a1 = accepted(&client, &gw, "a", &text(1)).await;
    let a2 = accepted(&client, &gw, "a", &text(2)).await;
    let refused = submit(&client, &gw, "a", &text(3)).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "5");
    let v: Value = refused.json().await.expect("json");
    assert_eq!(v["error"]["code"], "too_many_jobs", "{v}");
    let b1 = accepted(&client, &gw, "b", &text(4)).await;
    for (who, location) in [("a", &a1), ("a", &a2), ("b", &b1)] {
        let r = finish(&client, &gw, who, location).await;
        let status = r.status();
        assert_eq!(status, 200, "{location}: {}", r.text().await.unwrap_or_default());
    }
    let stats = sim.stats().await;
    assert_eq!(
        stats["requests"], 3,
        "the refused request never reached the backend: {stats}"
    );
    // Its jobs done, a may start more.
    let j1 = accepted(&client, &gw, "a", &text(5)).await;
    assert_eq!(finish(&client, &gw, "a", &j1).await.status(), 200);
    let j2 = accepted(&client, &gw, "a", &text(6)).await;
    let j2_wav = complete_wav(finish(&client, &gw, "a", &j2).await).await.0;
    assert_eq!(j2_wav.len(), w);
    let j3 = accepted(&client, &gw, "a", &text(7)).await;
    let j3_wav = complete_wav(finish(&client, &gw, "a", &j3).await).await.0;

    // Three results do not fit in max_bytes: the oldest were dropped, and their owner is told.
    for location in [&a1, &a2, &j1] {
        let r = finish(&client, &gw, "a", location).await;
        assert_eq!(r.status(), 404, "{location}");
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["error"]["code"], "job_expired", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("max_bytes")),
            "{v}"
        );
    }
    // The newest two are still served whole, byte for byte.
    let again = complete_wav(finish(&client, &gw, "a", &j2).await).await.0;
    assert_eq!(again, j2_wav);
    let again = complete_wav(finish(&client, &gw, "a", &j3).await).await.0;
    assert_eq!(again, j3_wav);
    // Someone else's dropped job still looks unknown to them.
    let r = finish(&client, &gw, "b", &a1).await;
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "job_not_found", "{v}");
}
