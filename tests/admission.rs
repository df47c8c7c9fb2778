//! Admission through the real binaries: API tokens (401/403), per-IP token buckets with
//! Retry-After and RateLimit headers, X-Forwarded-For only from trusted proxies, per-token
//! buckets, and buckets shared through a real Redis by two gateway instances (and still
//! serving when Redis goes away). Refused requests never reach the backend.

mod common;

use common::gateway::{pool_yaml, Gateway};
use common::redis::Redis;
use common::sim::Sim;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::Duration;

const FAST: &[&str] = &["--rtf", "0.01", "--first-chunk-ms", "5"];
const BODY: &str = r#"{"text":"Admission check.","mode":"sft","spk_id":"中文女"}"#;

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

async fn generate(gw: &Gateway, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(gw.url("/generate"))
        .header("Content-Type", "application/json")
        .body(BODY);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("gateway answers")
}

async fn code(resp: reqwest::Response) -> String {
    let v: Value = resp.json().await.expect("json error");
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn tokens_are_required_checked_and_bound_to_pools() {
    let sim = Sim::start(FAST);
    let yaml = format!(
        "  auth:\n    allow_anonymous: false\n    tokens:\n      - {{ name: school-a, sha256: \"{}\", tenant: school-a }}\n      - {{ name: other-only, sha256: \"{}\", pools: [other] }}\n  default_pool: cosyvoice\n{}    other:\n      protocol: cosyvoice_fastapi\n      speakers: [中文女]\n      backends:\n        - addr: {}\n",
        digest("token-a"),
        digest("token-o"),
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], ""),
        sim.addr()
    );
    let gw = Gateway::start(&yaml);

    let r = generate(&gw, &[]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "www-authenticate"), "Bearer");
    assert_eq!(code(r).await, "missing_token");
    let r = generate(&gw, &[("Authorization", "Bearer nope")]).await;
    assert_eq!(
        (r.status().as_u16(), code(r).await.as_str()),
        (401, "invalid_token")
    );
    let r = generate(&gw, &[("Authorization", "Basic dG9rZW4tYQ==")]).await;
    assert_eq!(
        (r.status().as_u16(), code(r).await.as_str()),
        (401, "invalid_token")
    );
    let r = generate(&gw, &[("Authorization", "Bearer token-o")]).await;
    assert_eq!(
        (r.status().as_u16(), code(r).await.as_str()),
        (403, "forbidden_pool")
    );
    assert_eq!(
        sim.stats().await["requests"],
        0,
        "refused requests never reach the backend"
    );

    assert_eq!(
        generate(&gw, &[("Authorization", "Bearer token-a")])
            .await
            .status(),
        200
    );
    let r = generate(
        &gw,
        &[("Authorization", "Bearer token-o"), ("X-Cosygate-Pool", "other")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(sim.stats().await["requests"], 2);
}

#[tokio::test]
async fn an_empty_bucket_answers_429_until_retry_after_has_passed() {
    let sim = Sim::start(FAST);
    let gw = Gateway::start(&format!(
        "  rate_limit:\n    per_ip: {{ capacity: 5, refill: 1, per: 2s }}\n{}",
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], "")
    ));
    for remaining in (0..5).rev() {
        let r = generate(&gw, &[]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "ratelimit-policy"), "\"per-ip\";q=5;w=10");
        assert!(
            header(&r, "ratelimit").starts_with(&format!("\"per-ip\";r={remaining};t=")),
            "{}",
            header(&r, "ratelimit")
        );
    }
    let r = generate(&gw, &[]).await;
    assert_eq!(r.status(), 429);
    let retry_after: u64 = header(&r, "retry-after").parse().expect("Retry-After in seconds");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(header(&r, "ratelimit"), format!("\"per-ip\";r=0;t={retry_after}"));
    assert_eq!(code(r).await, "rate_limited");
    assert_eq!(sim.stats().await["requests"], 5);

    // Retry-After is the promise: after it, exactly one more token is there.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(generate(&gw, &[]).await.status(), 200);
    assert_eq!(generate(&gw, &[]).await.status(), 429);
    assert_eq!(sim.stats().await["requests"], 6);
}

#[tokio::test]
async fn forwarded_for_counts_only_behind_a_trusted_proxy() {
    let sim = Sim::start(FAST);
    let pools = pool_yaml("cosyvoice_fastapi", &[sim.addr()], "");
    let trusting = Gateway::start(&format!(
        "  rate_limit:\n    per_ip: {{ capacity: 1, refill: 1, per: 1h }}\n    trusted_proxies: [127.0.0.1/32]\n{pools}"
    ));
    for client in ["192.0.2.1", "192.0.2.2", "198.51.100.7, 192.0.2.3"] {
        assert_eq!(
            generate(&trusting, &[("X-Forwarded-For", client)]).await.status(),
            200,
            "{client}"
        );
    }
    assert_eq!(
        generate(&trusting, &[("X-Forwarded-For", "192.0.2.1")])
            .await
            .status(),
        429
    );
    // The right-most untrusted entry is the client: a spoofed left entry changes nothing.
    assert_eq!(
        generate(&trusting, &[("X-Forwarded-For", "6.6.6.6, 192.0.2.3")])
            .await
            .status(),
        429
    );

    let untrusting = Gateway::start(&format!(
        "  rate_limit:\n    per_ip: {{ capacity: 1, refill: 1, per: 1h }}\n{pools}"
    ));
    assert_eq!(
        generate(&untrusting, &[("X-Forwarded-For", "192.0.2.1")])
            .await
            .status(),
        200
    );
    assert_eq!(
        generate(&untrusting, &[("X-Forwarded-For", "192.0.2.2")])
            .await
            .status(),
        429,
        "the header is ignored"
    );
}

#[tokio::test]
async fn a_token_with_its_own_limit_does_not_use_the_ip_bucket() {
    let sim = Sim::start(FAST);
    let gw = Gateway::start(&format!(
        "  auth:\n    tokens:\n      - {{ name: big, sha256: \"{}\", rate_limit: {{ capacity: 3, refill: 1, per: 1h }} }}\n  rate_limit:\n    per_ip: {{ capacity: 1, refill: 1, per: 1h }}\n{}",
        digest("big-token"),
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], "")
    ));
    let token = [("Authorization", "Bearer big-token")];
    assert_eq!(generate(&gw, &[]).await.status(), 200);
    assert_eq!(
        generate(&gw, &[]).await.status(),
        429,
        "anonymous: one per hour per IP"
    );
    for _ in 0..3 {
        let r = generate(&gw, &token).await;
        assert_eq!(r.status(), 200);
        assert!(header(&r, "ratelimit-policy").starts_with("\"per-token\";q=3"));
    }
    assert_eq!(generate(&gw, &token).await.status(), 429);
}

#[tokio::test]
async fn two_gateways_share_one_budget_through_redis_and_survive_its_loss() {
    let sim = Sim::start(FAST);
    let mut redis = Redis::start();
    let yaml = format!(
        "  rate_limit:\n    per_ip: {{ capacity: 5, refill: 1, per: 1h }}\n    store: redis\n    redis: {{ url: \"{}\", timeout: 200ms }}\n{}",
        redis.url(),
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], "")
    );
    let (a, b) = (Gateway::start(&yaml), Gateway::start(&yaml));
    for gw in [&a, &b, &a, &b, &a] {
        assert_eq!(generate(gw, &[]).await.status(), 200);
    }
    for gw in [&a, &b] {
        let r = generate(gw, &[]).await;
        assert_eq!(r.status(), 429, "the five tokens were shared");
        assert!(header(&r, "retry-after")
            .parse::<u64>()
            .is_ok_and(|s| s > 3500 && s <= 3600));
    }
    redis.stop();
    // Without Redis each instance falls back to its own (fresh) local buckets: still serving.
    assert_eq!(generate(&a, &[]).await.status(), 200);
    assert_eq!(generate(&b, &[]).await.status(), 200);
    common::gateway::eventually(Duration::from_secs(5), "the outage is logged", || async {
        a.log().contains("redis (rate_limit)")
    })
    .await;
}
