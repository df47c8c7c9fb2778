//! The degradation ladder (issue 16): when no backend can serve and the exact key misses, a
//! cached entry in the same voice (another seed or speed), then one of the same text (when
//! configured), then the fallback voice (the real espeak-ng), then the error. Asserted as a
//! client sees it (status, `X-Degraded`, `X-Degraded-Reason`, `X-Cache`, `X-Cache-Key`, the exact
//! bytes), in the metrics and the access log, through the memory, disk and Redis tiers, and never
//! across tenants.

use crate::common::gateway::{eventually, free_port, pool_yaml, Gateway};
use crate::common::metrics::{scrape, sum};
use crate::common::redis::Redis;
use crate::common::sim::{args_for, Sim};
use crate::support::{client, requests, sha256_hex, FAST};
use bytes::Bytes;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;

const ESPEAK: &str =
    "  fallback:\n    command: [\"espeak-ng\", \"-v\", \"en-us\", \"-w\", \"{out}\", \"--stdin\"]\n";

/// What a client sees of a (possibly degraded) answer.
#[derive(Debug)]
struct Seen {
    status: u16,
    cache: String,
    degraded: Option<String>,
    reason: Option<String>,
    key: Option<String>,
    code: Option<String>,
    body: Bytes,
}

async fn ask(gw: &Gateway, body: &serde_json::Value, headers: &[(&str, &str)]) -> Seen {
    let mut req = client().post(gw.url("/generate")).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("the gateway answers");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().expect("ASCII").to_string())
    };
    let (status, cache) = (resp.status().as_u16(), header("X-Cache").unwrap_or_default());
    let (degraded, reason, key) = (
        header("X-Degraded"),
        header("X-Degraded-Reason"),
        header("X-Cache-Key"),
    );
    let body = resp.bytes().await.expect("a whole body");
    let code = (status != 200).then(|| {
        let v: serde_json::Value = serde_json::from_slice(&body).expect("a JSON error");
        v["error"]["code"].as_str().unwrap_or_default().to_string()
    });
    Seen {
        status,
        cache,
        degraded,
        reason,
        key,
        code,
        body,
    }
}

fn sft(text: &str, spk: &str, seed: u64, speed: f64) -> serde_json::Value {
    json!({"mode": "sft", "text": text, "spk_id": spk, "seed": seed, "speed": speed})
}

/// An approximate answer: the `rung`'s entry `key` with its `bytes`.
#[track_caller]
fn approximate(seen: &Seen, rung: &str, key: &str, bytes: &Bytes) {
    assert_eq!(seen.status, 200, "{seen:?}");
    assert_eq!(
        (seen.degraded.as_deref(), seen.reason.as_deref()),
        (Some("approximate"), Some(rung)),
        "{seen:?}"
    );
    assert_eq!(seen.cache, "HIT");
    assert_eq!(seen.key.as_deref(), Some(key), "X-Cache-Key names the entry used");
    assert!(seen.body == *bytes, "the stand-in entry's exact bytes");
}

async fn healthy(gw: &Gateway, want: u64) {
    eventually(
        Duration::from_secs(10),
        &format!("{want} healthy backends"),
        || async {
            match client().get(gw.url("/health")).send().await {
                Ok(r) => r
                    .json::<serde_json::Value>()
                    .await
                    .is_ok_and(|v| v["backends_healthy"] == want),
                Err(_) => false,
            }
        },
    )
    .await;
}

async fn metric(admin: u16, rung: &str) -> f64 {
    let samples = scrape(admin).await;
    sum(
        &samples,
        "cosygate_degraded_total",
        &[("pool", "cosyvoice"), ("rung", rung)],
    )
}

#[tokio::test]
async fn same_voice_stands_in_until_a_backend_is_back_then_the_exact_key_is_synthesized() {
    // A `generate_json` pool: its backends take `speed` (CosyVoice's FastAPI server has none).
    let sim = Sim::start(&args_for("generate_json", FAST));
    let addr = sim.addr();
    let admin = free_port();
    let gw = Gateway::start(&format!(
        "  admin: {{ addr: 127.0.0.1:{admin} }}\n  cache: {{ memory: {{ max: 64MiB }} }}\n{ESPEAK}{}",
        pool_yaml("generate_json", &[addr], "")
    ));
    let text = "Hello there.";
    let seed1 = ask(&gw, &sft(text, "中文女", 1, 1.0), &[]).await;
    assert_eq!(
        (seed1.status, seed1.cache.as_str(), seed1.degraded.as_deref()),
        (200, "MISS", None)
    );
    let key1 = seed1.key.clone().expect("X-Cache-Key");

    sim.kill();
    healthy(&gw, 0).await;
    // Another seed, another speed, a stream: the seed-1 entry stands in, marked.
    approximate(
        &ask(&gw, &sft(text, "中文女", 2, 1.0), &[]).await,
        "same_voice",
        &key1,
        &seed1.body,
    );
    approximate(
        &ask(&gw, &sft(text, "中文女", 1, 1.5), &[]).await,
        "same_voice",
        &key1,
        &seed1.body,
    );
    let mut streamed = sft(text, "中文女", 3, 1.0);
    streamed["stream"] = json!(true);
    let s = ask(&gw, &streamed, &[]).await;
    assert_eq!(
        (
            s.status,
            s.degraded.as_deref(),
            s.reason.as_deref(),
            s.key.as_deref()
        ),
        (200, Some("approximate"), Some("same_voice"), Some(key1.as_str())),
        "{s:?}"
    );
    // Another voice: same_text is off by default, so the fallback voice speaks.
    let other = ask(&gw, &sft(text, "英文女", 1, 1.0), &[]).await;
    assert_eq!(
        (other.status, other.degraded.as_deref(), other.reason),
        (200, Some("fallback"), None)
    );
    assert_ne!(other.body, seed1.body);
    assert_eq!(metric(admin, "same_voice").await, 3.0);
    assert_eq!(metric(admin, "fallback").await, 1.0);
    assert!(
        gw.log().contains("\"degraded\":\"same_voice\""),
        "the access log records the rung:\n{}",
        gw.log()
    );

    // A backend again: the seed-2 request is synthesized and cached under its own key.
    let sim = Sim::start_on(addr, &args_for("generate_json", FAST));
    healthy(&gw, 1).await;
    let seed2 = ask(&gw, &sft(text, "中文女", 2, 1.0), &[]).await;
    assert_eq!(
        (seed2.status, seed2.cache.as_str(), seed2.degraded.as_deref()),
        (200, "MISS", None)
    );
    assert_ne!(seed2.key.as_deref(), Some(key1.as_str()));
    assert_eq!(requests(&sim).await, 1, "the new sim synthesized it");
    let again = ask(&gw, &sft(text, "中文女", 2, 1.0), &[]).await;
    assert_eq!((again.cache.as_str(), again.degraded.as_deref()), ("HIT", None));
    assert_eq!((again.key, again.body), (seed2.key, seed2.body));
}

const A: (&str, &str) = ("Authorization", "Bearer token-a");
const B: (&str, &str) = ("Authorization", "Bearer token-b");

fn tokens_yaml() -> String {
    format!(
        "  auth:\n    tokens:\n      - {{ name: a, sha256: \"{}\", tenant: school-a }}\n      - {{ name: b, sha256: \"{}\", tenant: school-b }}\n",
        sha256_hex(b"token-a"),
        sha256_hex(b"token-b")
    )
}

/// A gateway with tokens for tenants A and B, `cache.share: SHARE` and the ladder
/// `[same_voice, same_text]` without fallback; tenant A's `TEXT` in voice `SPK` (seed 0) is
/// synthesized and cached, then the only backend is killed. Returns the gateway, A's answer
/// and its key.
async fn tenant_a_cached_then_no_backend(share: &str, text: &str, spk: &str) -> (Gateway, Seen, String) {
    let sim = Sim::start(FAST);
    let gw = Gateway::start(&format!(
        "{}  cache: {{ share: {share} }}\n{}",
        tokens_yaml(),
        pool_yaml(
            "cosyvoice_fastapi",
            &[sim.addr()],
            "      degrade: { ladder: [same_voice, same_text], fallback: false }\n"
        )
    ));
    let a = ask(&gw, &sft(text, spk, 0, 1.0), &[A]).await;
    assert_eq!((a.status, a.cache.as_str()), (200, "MISS"));
    let key_a = a.key.clone().expect("key");
    sim.kill();
    healthy(&gw, 0).await;
    (gw, a, key_a)
}

#[tokio::test]
async fn same_text_when_configured_never_across_tenants_and_no_fallback_means_the_error() {
    let text = "The bus leaves at eight.";
    let (gw, a, key_a) = tenant_a_cached_then_no_backend("tenant", text, "中文女").await;
    // Tenant A, another voice: its own same-text entry.
    approximate(
        &ask(&gw, &sft(text, "英文男", 0, 1.0), &[A]).await,
        "same_text",
        &key_a,
        &a.body,
    );
    // Tenant B: no rung crosses tenants, and `fallback: false` leaves the pool's error.
    for body in [
        sft(text, "中文女", 0, 1.0),
        sft(text, "中文女", 5, 1.0),
        sft(text, "英文男", 0, 1.0),
    ] {
        let b = ask(&gw, &body, &[B]).await;
        assert_eq!((b.status, b.degraded.as_deref()), (503, None), "{b:?}");
        assert_ne!(b.body, a.body);
        assert!(b.code.is_some());
    }
    // Another text: nothing close is cached; no fallback either.
    let none = ask(&gw, &sft("Something else entirely.", "中文女", 0, 1.0), &[A]).await;
    assert_eq!((none.status, none.degraded.as_deref()), (503, None));
}

#[tokio::test]
async fn the_disk_tier_keeps_its_families_across_a_restart() {
    let sim = Sim::start(FAST);
    let disk = tempfile::tempdir().expect("dir");
    let conf = |backend: SocketAddr| {
        format!(
            "  cache: {{ memory: {{ max: 1KiB }}, disk: {{ path: {}, max: 64MiB }} }}\n{}",
            disk.path().display(),
            pool_yaml("cosyvoice_fastapi", &[backend], "")
        )
    };
    let gw = Gateway::start(&conf(sim.addr()));
    let text = "Kept on disk.";
    let stored = ask(&gw, &sft(text, "中文男", 1, 1.0), &[]).await;
    assert_eq!((stored.status, stored.cache.as_str()), (200, "MISS"));
    let key = stored.key.clone().expect("key");
    let file = disk
        .path()
        .join("v2")
        .join(&key[..2])
        .join(format!("{key}.entry"));
    eventually(Duration::from_secs(5), "the entry on disk", || {
        std::future::ready(file.exists())
    })
    .await;
    drop(gw);

    // A new process with no backend able to serve: the index is rebuilt from the disk.
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let gw = Gateway::start(&conf(dead));
    healthy(&gw, 0).await;
    approximate(
        &ask(&gw, &sft(text, "中文男", 9, 1.0), &[]).await,
        "same_voice",
        &key,
        &stored.body,
    );
}

#[tokio::test]
async fn redis_shares_the_families_with_every_instance_and_a_purge_removes_the_stand_in() {
    let redis = Redis::start();
    let sim = Sim::start(FAST);
    let cache = format!(
        "  cache: {{ memory: {{ max: 64MiB }}, redis: {{ url: \"{}\" }} }}\n",
        redis.url()
    );
    let first = Gateway::start(&format!(
        "{cache}{}",
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], "")
    ));
    let text = "Shared between instances.";
    let made = ask(&first, &sft(text, "英文女", 1, 1.0), &[]).await;
    assert_eq!((made.status, made.cache.as_str()), (200, "MISS"));
    let key = made.key.clone().expect("key");

    // Another instance, whose backend is down, never saw the entry stored.
    let admin = free_port();
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let second = Gateway::start(&format!(
        "  admin: {{ addr: 127.0.0.1:{admin} }}\n{cache}{}",
        pool_yaml("cosyvoice_fastapi", &[dead], "")
    ));
    healthy(&second, 0).await;
    let body = sft(text, "英文女", 2, 1.0);
    approximate(&ask(&second, &body, &[]).await, "same_voice", &key, &made.body);

    // Purged everywhere: no stand-in any more (no fallback configured: the pool's error).
    let purged = client()
        .post(format!("http://127.0.0.1:{admin}/admin/cache/purge"))
        .json(&json!({"key": key}))
        .send()
        .await
        .expect("purge");
    assert_eq!(purged.status(), 200);
    let after = ask(&second, &body, &[]).await;
    assert_eq!(
        (after.status, after.degraded.as_deref()),
        (503, None),
        "{after:?}"
    );
}

#[tokio::test]
async fn with_share_global_same_voice_is_shared_but_same_text_stays_in_the_tenant() {
    let text = "Lunch is at noon.";
    let (gw, a, key_a) = tenant_a_cached_then_no_backend("global", text, "中文男").await;
    // The very voice B asked for: the global cache shares it, as it shares the exact key.
    approximate(
        &ask(&gw, &sft(text, "中文男", 4, 1.0), &[B]).await,
        "same_voice",
        &key_a,
        &a.body,
    );
    // Another voice: A's entry (its voice could be A's private clone) is not B's to hear.
    let other = ask(&gw, &sft(text, "英文女", 0, 1.0), &[B]).await;
    assert_eq!(
        (other.status, other.degraded.as_deref()),
        (503, None),
        "{other:?}"
    );
    // A itself gets its own entry for any voice.
    approximate(
        &ask(&gw, &sft(text, "英文女", 0, 1.0), &[A]).await,
        "same_text",
        &key_a,
        &a.body,
    );
}
