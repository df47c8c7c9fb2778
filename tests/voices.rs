//! Registered voices end to end (issue 14), through the real binaries: register, list, use as
//! `voice_id` on `/generate` (the same cache key and bytes as sending the sample itself),
//! delete; kept across a restart (the voice directory), shared by two instances through Redis,
//! per tenant (another tenant can neither list, use nor delete a voice), with quotas, refusals
//! of bad samples with `/generate`'s codes, and off without a `voices` section.

mod common;

use base64::Engine;
use common::gateway::{check_config, pool_yaml, Gateway};
use common::metrics::{parse_metrics, sum};
use common::redis::Redis;
use common::sim::{test_wav, Sim};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

const FAST: &[&str] = &["--rtf", "0.01", "--first-chunk-ms", "5"];
const TOKEN_A: &str = "token-of-school-a";
const TOKEN_B: &str = "token-of-school-b";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Two tenants' tokens (anonymous callers allowed on `/generate`), a memory cache (so answers
/// carry `X-Cache-Key`), `cache_extra` inside the cache mapping, and `voices`.
fn config(sim: &Sim, voices: &str, cache_extra: &str) -> String {
    format!(
        "  auth:\n    allow_anonymous: true\n    tokens:\n      - {{ name: a, sha256: \"{}\", tenant: school-a }}\n      - {{ name: b, sha256: \"{}\", tenant: school-b }}\n  cache: {{ memory: {{ max: 64MiB }}{cache_extra} }}\n  voices: {voices}\n{}",
        sha256_hex(TOKEN_A.as_bytes()),
        sha256_hex(TOKEN_B.as_bytes()),
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], "")
    )
}

fn voices_at(dir: &Path, extra: &str) -> String {
    format!("{{ path: \"{}\"{extra} }}", dir.display())
}

/// What a client sees of one answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    json: Value,
    bytes: bytes::Bytes,
    cache: String,
    key: String,
}

impl Answer {
    fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

async fn call(method: reqwest::Method, url: String, token: Option<&str>, body: Option<String>) -> Answer {
    let mut req = client().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("Content-Type", "application/json").body(b);
    }
    let resp = req.send().await.expect("the gateway answers");
    let status = resp.status().as_u16();
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (cache, key) = (header("X-Cache"), header("X-Cache-Key"));
    let bytes = resp.bytes().await.expect("a whole body");
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        json,
        bytes,
        cache,
        key,
    }
}

async fn register(gw: &Gateway, token: Option<&str>, name: &str, wav: &[u8], text: &str) -> Answer {
    let body = json!({"name": name, "prompt_audio": b64(wav), "prompt_text": text}).to_string();
    call(reqwest::Method::POST, gw.url("/v1/voices"), token, Some(body)).await
}

async fn list(gw: &Gateway, token: Option<&str>) -> Answer {
    call(reqwest::Method::GET, gw.url("/v1/voices"), token, None).await
}

async fn delete(gw: &Gateway, token: Option<&str>, id: &str) -> Answer {
    call(
        reqwest::Method::DELETE,
        gw.url(&format!("/v1/voices/{id}")),
        token,
        None,
    )
    .await
}

async fn generate(gw: &Gateway, token: Option<&str>, body: Value) -> Answer {
    call(
        reqwest::Method::POST,
        gw.url("/generate"),
        token,
        Some(body.to_string()),
    )
    .await
}

fn names(list: &Answer) -> Vec<String> {
    assert_eq!(list.status, 200, "{:?}", list.json);
    list.json["voices"]
        .as_array()
        .expect("voices")
        .iter()
        .map(|v| v["name"].as_str().expect("name").to_string())
        .collect()
}

async fn requests(sim: &Sim) -> u64 {
    sim.stats().await["requests"].as_u64().expect("requests")
}

const TRANSCRIPT: &str = "You are a helpful assistant.<|endofprompt|>Hello from the prompt.";

#[tokio::test]
async fn register_list_generate_and_delete() {
    let sim = Sim::start(FAST);
    let dir = tempfile::tempdir().expect("dir");
    let gw = Gateway::start(&config(&sim, &voices_at(dir.path(), ""), ""));
    let wav = test_wav(1.0, 16000);
    let id = sha256_hex(&wav);

    let created = register(&gw, Some(TOKEN_A), "anna", &wav, TRANSCRIPT).await;
    assert_eq!(created.status, 201, "{:?}", created.json);
    assert_eq!(created.json["voice_id"], id.as_str());
    assert_eq!(created.json["name"], "anna");
    assert_eq!(created.json["bytes"], wav.len() as u64);
    assert_eq!(created.json["seconds"], 1.0);
    // The same audio again: the name and transcript are updated, nothing new is created.
    let again = register(&gw, Some(TOKEN_A), "anna-v2", &wav, TRANSCRIPT).await;
    assert_eq!(
        (again.status, again.json["voice_id"].as_str()),
        (200, Some(id.as_str()))
    );
    assert_eq!(again.json["created"], created.json["created"]);

    let listed = list(&gw, Some(TOKEN_A)).await;
    assert_eq!(names(&listed), ["anna-v2"]);
    let v = &listed.json["voices"][0];
    assert_eq!(v["voice_id"], id.as_str());
    assert_eq!(v["prompt_text"], TRANSCRIPT);
    assert_eq!(v["bytes"], wav.len() as u64);
    assert!(v["created"].as_str().is_some_and(|c| c.ends_with('Z')), "{v}");

    // voice_id, then the same sample sent inline: one synthesis, one key, the same bytes.
    let by_id = generate(
        &gw,
        Some(TOKEN_A),
        json!({"text": "Good morning.", "voice_id": id}),
    )
    .await;
    assert_eq!(
        (by_id.status, by_id.cache.as_str()),
        (200, "MISS"),
        "{:?}",
        by_id.json
    );
    assert!(by_id.bytes.starts_with(b"RIFF"));
    let inline = json!({"text": "Good morning.", "prompt_audio": b64(&wav), "prompt_text": TRANSCRIPT});
    let inline = generate(&gw, Some(TOKEN_A), inline).await;
    assert_eq!((inline.status, inline.cache.as_str()), (200, "HIT"));
    assert_eq!(inline.key, by_id.key);
    assert_eq!(inline.bytes, by_id.bytes);
    let by_name = generate(
        &gw,
        Some(TOKEN_A),
        json!({"text": "Good morning.", "voice_id": "anna-v2"}),
    )
    .await;
    assert_eq!((by_name.status, by_name.key.as_str()), (200, by_id.key.as_str()));
    assert_eq!(requests(&sim).await, 1, "the sim synthesized once");
    // The sample the backend received is the registered one.
    let last = sim.last().await;
    assert_eq!(last["prompt_wav_sha256"], id.as_str(), "{last}");
    assert_eq!(last["fields"]["prompt_text"], TRANSCRIPT, "{last}");

    let conflicting = json!({"text": "x", "voice_id": id, "prompt_text": "y"});
    assert_eq!(
        generate(&gw, Some(TOKEN_A), conflicting).await.code(),
        "conflicting_fields"
    );
    let sft = json!({"text": "x", "voice_id": id, "mode": "sft", "spk_id": "中文女"});
    assert_eq!(
        generate(&gw, Some(TOKEN_A), sft).await.code(),
        "conflicting_fields"
    );
    let odd = json!({"text": "x", "voice_id": "no such/voice"});
    assert_eq!(
        generate(&gw, Some(TOKEN_A), odd).await.code(),
        "invalid_voice_name"
    );

    let gone = delete(&gw, Some(TOKEN_A), &id).await;
    assert_eq!(gone.status, 204);
    assert!(gone.bytes.is_empty());
    assert!(names(&list(&gw, Some(TOKEN_A)).await).is_empty());
    let after = generate(
        &gw,
        Some(TOKEN_A),
        json!({"text": "Good morning.", "voice_id": id}),
    )
    .await;
    assert_eq!((after.status, after.code()), (422, "unknown_voice"));
    let twice = delete(&gw, Some(TOKEN_A), &id).await;
    assert_eq!((twice.status, twice.code()), (404, "voice_not_found"));
    assert!(
        std::fs::read_dir(dir.path().join("v1"))
            .expect("layout")
            .flatten()
            .all(|d| std::fs::read_dir(d.path()).expect("scope dir").next().is_none()),
        "the file is gone"
    );
    let wrong_method = call(reqwest::Method::PUT, gw.url("/v1/voices"), Some(TOKEN_A), None).await;
    assert_eq!(
        (wrong_method.status, wrong_method.code()),
        (405, "method_not_allowed")
    );
}

#[tokio::test]
async fn tenants_cannot_see_use_or_delete_each_others_voices() {
    let sim = Sim::start(FAST);
    let dir = tempfile::tempdir().expect("dir");
    let gw = Gateway::start(&config(&sim, &voices_at(dir.path(), ""), ""));
    let wav = test_wav(1.0, 16000);
    let id = register(&gw, Some(TOKEN_A), "anna", &wav, TRANSCRIPT).await.json["voice_id"]
        .as_str()
        .expect("id")
        .to_string();

    assert!(names(&list(&gw, Some(TOKEN_B)).await).is_empty());
    for voice in [id.as_str(), "anna"] {
        let used = generate(&gw, Some(TOKEN_B), json!({"text": "Hi.", "voice_id": voice})).await;
        assert_eq!((used.status, used.code()), (422, "unknown_voice"));
        let deleted = delete(&gw, Some(TOKEN_B), voice).await;
        assert_eq!((deleted.status, deleted.code()), (404, "voice_not_found"));
        let one = call(
            reqwest::Method::GET,
            gw.url(&format!("/v1/voices/{voice}")),
            Some(TOKEN_B),
            None,
        )
        .await;
        assert_eq!(one.status, 404);
    }
    assert_eq!(requests(&sim).await, 0);
    assert_eq!(
        names(&list(&gw, Some(TOKEN_A)).await),
        ["anna"],
        "still there for A"
    );
    let one = call(
        reqwest::Method::GET,
        gw.url("/v1/voices/anna"),
        Some(TOKEN_A),
        None,
    )
    .await;
    assert_eq!(
        (one.status, one.json["voice_id"].as_str()),
        (200, Some(id.as_str()))
    );
    // B may register the same sample under the same name in its own scope.
    assert_eq!(
        register(&gw, Some(TOKEN_B), "anna", &wav, TRANSCRIPT)
            .await
            .status,
        201
    );

    // Anonymous callers: refused (voices.allow_anonymous is off), on every route.
    let anon = register(&gw, None, "mine", &wav, TRANSCRIPT).await;
    assert_eq!((anon.status, anon.code()), (401, "voice_token_required"));
    assert_eq!(list(&gw, None).await.code(), "voice_token_required");
    let anon = generate(&gw, None, json!({"text": "Hi.", "voice_id": id})).await;
    assert_eq!((anon.status, anon.code()), (401, "voice_token_required"));
}

#[tokio::test]
async fn quotas_names_and_bad_samples() {
    let sim = Sim::start(FAST);
    let dir = tempfile::tempdir().expect("dir");
    // Two voices, 100 KB: two 1 s 16 kHz samples (32 KB each) fit, a 2 s 24 kHz one (96 KB) does not.
    let limits = ", max_per_tenant: 2, max_bytes_per_tenant: 100KiB";
    let gw = Gateway::start(&config(&sim, &voices_at(dir.path(), limits), ""));
    let (one, two, three) = (test_wav(1.0, 16000), test_wav(1.01, 16000), test_wav(0.99, 16000));
    assert_eq!(
        register(&gw, Some(TOKEN_A), "one", &one, TRANSCRIPT).await.status,
        201
    );
    let taken = register(&gw, Some(TOKEN_A), "one", &two, TRANSCRIPT).await;
    assert_eq!((taken.status, taken.code()), (409, "voice_name_taken"));
    let big = register(&gw, Some(TOKEN_A), "big", &test_wav(2.0, 24000), TRANSCRIPT).await;
    assert_eq!((big.status, big.code()), (409, "voice_quota_exceeded"));
    let message = big.json["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("102400") && message.contains("DELETE"),
        "{message}"
    );
    assert_eq!(
        register(&gw, Some(TOKEN_A), "two", &two, TRANSCRIPT).await.status,
        201
    );
    let third = register(&gw, Some(TOKEN_A), "three", &three, TRANSCRIPT).await;
    assert_eq!((third.status, third.code()), (409, "voice_quota_exceeded"));
    assert!(third.json["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("DELETE"));
    // Re-registering one of them is an update, not a third voice.
    assert_eq!(
        register(&gw, Some(TOKEN_A), "uno", &one, TRANSCRIPT).await.status,
        200
    );
    // Quotas are per tenant.
    assert_eq!(
        register(&gw, Some(TOKEN_B), "three", &three, TRANSCRIPT)
            .await
            .status,
        201
    );
    // Deleting makes room.
    assert_eq!(delete(&gw, Some(TOKEN_A), "two").await.status, 204);
    assert_eq!(
        register(&gw, Some(TOKEN_A), "three", &three, TRANSCRIPT)
            .await
            .status,
        201
    );

    // Samples are checked as /generate checks them, with the same codes.
    for (wav, status, code) in [
        (test_wav(1.0, 8000), 422, "sample_rate_too_low"),
        (test_wav(31.0, 16000), 422, "prompt_too_long"),
        (b"not a wav".to_vec(), 400, "invalid_prompt_audio"),
    ] {
        let r = register(&gw, Some(TOKEN_B), "bad", &wav, TRANSCRIPT).await;
        assert_eq!((r.status, r.code()), (status, code));
    }
    let post = |body: String| {
        call(
            reqwest::Method::POST,
            gw.url("/v1/voices"),
            Some(TOKEN_B),
            Some(body),
        )
    };
    let b = b64(&one);
    for (body, code) in [
        (
            json!({"name": "x", "prompt_audio": "@@", "prompt_text": "t"}),
            "invalid_base64",
        ),
        (
            json!({"name": "x", "prompt_audio": b, "prompt_text": "<speak>t"}),
            "forbidden_characters",
        ),
        (json!({"name": "x", "prompt_audio": b}), "missing_field"),
        (
            json!({"name": "x y", "prompt_audio": b, "prompt_text": "t"}),
            "invalid_voice_name",
        ),
        (
            json!({"name": "x", "prompt_audio": b, "prompt_text": "t", "seed": 1}),
            "unknown_field",
        ),
    ] {
        let r = post(body.to_string()).await;
        assert_eq!((r.status, r.code()), (400, code));
    }
    let form = client()
        .post(gw.url("/v1/voices"))
        .bearer_auth(TOKEN_B)
        .header("Content-Type", "text/plain")
        .body("x")
        .send()
        .await
        .expect("answer");
    assert_eq!(form.status().as_u16(), 415);
    assert_eq!(
        names(&list(&gw, Some(TOKEN_B)).await),
        ["three"],
        "nothing bad was stored"
    );
}

#[tokio::test]
async fn voices_survive_a_restart() {
    let sim = Sim::start(FAST);
    let dir = tempfile::tempdir().expect("dir");
    let conf = config(&sim, &voices_at(dir.path(), ""), "");
    let wav = test_wav(1.0, 16000);
    let mut gw = Gateway::start(&conf);
    assert_eq!(
        register(&gw, Some(TOKEN_A), "anna", &wav, TRANSCRIPT)
            .await
            .status,
        201
    );
    gw.kill9();
    let admin_port = common::gateway::free_port();
    let gw = Gateway::start(&conf.replace(
        "  voices:",
        &format!("  admin: {{ addr: 127.0.0.1:{admin_port} }}\n  voices:"),
    ));
    assert_eq!(names(&list(&gw, Some(TOKEN_A)).await), ["anna"]);
    let metrics = client()
        .get(format!("http://127.0.0.1:{admin_port}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let samples = parse_metrics(&metrics);
    assert_eq!(
        sum(&samples, "cosygate_voices", &[]),
        1.0,
        "loaded from the directory"
    );
    assert_eq!(sum(&samples, "cosygate_voice_bytes", &[]), wav.len() as f64);
    let r = generate(
        &gw,
        Some(TOKEN_A),
        json!({"text": "After the restart.", "voice_id": "anna"}),
    )
    .await;
    assert_eq!((r.status, r.cache.as_str()), (200, "MISS"), "{:?}", r.json);
    assert_eq!(requests(&sim).await, 1);
}

#[tokio::test]
async fn instances_share_voices_through_redis() {
    let redis = Redis::start();
    let sim = Sim::start(FAST);
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let redis_conf = format!(", redis: {{ url: \"{}\", timeout: 500ms }}", redis.url());
    let gw_a = Gateway::start(&config(&sim, &voices_at(dir_a.path(), ""), &redis_conf));
    let gw_b = Gateway::start(&config(&sim, &voices_at(dir_b.path(), ""), &redis_conf));
    let wav = test_wav(1.0, 16000);
    let id = sha256_hex(&wav);

    assert_eq!(
        register(&gw_a, Some(TOKEN_A), "anna", &wav, TRANSCRIPT)
            .await
            .status,
        201
    );
    assert_eq!(
        names(&list(&gw_b, Some(TOKEN_A)).await),
        ["anna"],
        "B knows A's voice"
    );
    assert!(
        names(&list(&gw_b, Some(TOKEN_B)).await).is_empty(),
        "per tenant in Redis too"
    );
    let on_b = generate(
        &gw_b,
        Some(TOKEN_A),
        json!({"text": "Used on B.", "voice_id": id}),
    )
    .await;
    assert_eq!(on_b.status, 200, "{:?}", on_b.json);
    let inline = json!({"text": "Used on B.", "prompt_audio": b64(&wav), "prompt_text": TRANSCRIPT});
    let on_a = generate(&gw_a, Some(TOKEN_A), inline).await;
    assert_eq!(
        (on_a.key.as_str(), on_a.bytes.clone()),
        (on_b.key.as_str(), on_b.bytes.clone())
    );

    // Deleted through B: gone on A as well, file included.
    assert_eq!(delete(&gw_b, Some(TOKEN_A), "anna").await.status, 204);
    assert!(names(&list(&gw_a, Some(TOKEN_A)).await).is_empty());
    let after = generate(
        &gw_a,
        Some(TOKEN_A),
        json!({"text": "Used on A.", "voice_id": id}),
    )
    .await;
    assert_eq!((after.status, after.code()), (422, "unknown_voice"));
    // Restarted, A does not bring it back from its directory.
    drop(gw_a);
    let gw_a = Gateway::start(&config(&sim, &voices_at(dir_a.path(), ""), &redis_conf));
    assert!(names(&list(&gw_a, Some(TOKEN_A)).await).is_empty());
    assert!(names(&list(&gw_b, Some(TOKEN_A)).await).is_empty());
}

/// FLUSHALL on the test's Redis.
async fn flush(redis: &Redis) {
    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
    let () = redis::cmd("FLUSHALL")
        .query_async(&mut conn)
        .await
        .expect("FLUSHALL");
}

#[tokio::test]
async fn voices_outlive_a_redis_flush_and_an_outage() {
    let mut redis = Redis::start();
    let sim = Sim::start(FAST);
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let redis_conf = format!(", redis: {{ url: \"{}\", timeout: 500ms }}", redis.url());
    let gw_a = Gateway::start(&config(&sim, &voices_at(dir_a.path(), ""), &redis_conf));
    let gw_b = Gateway::start(&config(&sim, &voices_at(dir_b.path(), ""), &redis_conf));
    let wav = test_wav(1.0, 16000);
    assert_eq!(
        register(&gw_a, Some(TOKEN_A), "anna", &wav, TRANSCRIPT)
            .await
            .status,
        201
    );

    // Redis loses everything: A still has the voice in its directory and shares it again.
    flush(&redis).await;
    assert!(names(&list(&gw_b, Some(TOKEN_A)).await).is_empty());
    assert_eq!(names(&list(&gw_a, Some(TOKEN_A)).await), ["anna"]);
    assert_eq!(names(&list(&gw_b, Some(TOKEN_A)).await), ["anna"], "shared again");

    // Redis away: A serves and registers from its directory; a delete is refused, since the
    // voice would come back from Redis.
    redis.stop();
    let r = generate(
        &gw_a,
        Some(TOKEN_A),
        json!({"text": "Redis is away.", "voice_id": "anna"}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    assert_eq!(
        register(&gw_a, Some(TOKEN_A), "bob", &test_wav(1.01, 16000), TRANSCRIPT)
            .await
            .status,
        201
    );
    assert_eq!(names(&list(&gw_a, Some(TOKEN_A)).await), ["anna", "bob"]);
    let refused = delete(&gw_a, Some(TOKEN_A), "anna").await;
    assert_eq!((refused.status, refused.code()), (503, "voice_store_unavailable"));
    assert_eq!(names(&list(&gw_a, Some(TOKEN_A)).await), ["anna", "bob"]);
}

#[tokio::test]
async fn anonymous_voices_when_allowed_and_none_without_the_section() {
    let sim = Sim::start(FAST);
    let dir = tempfile::tempdir().expect("dir");
    let gw = Gateway::start(&config(
        &sim,
        &voices_at(dir.path(), ", allow_anonymous: true"),
        "",
    ));
    let wav = test_wav(1.0, 16000);
    assert_eq!(register(&gw, None, "shared", &wav, TRANSCRIPT).await.status, 201);
    assert_eq!(names(&list(&gw, None).await), ["shared"]);
    assert!(
        names(&list(&gw, Some(TOKEN_A)).await).is_empty(),
        "anonymous is its own scope"
    );
    let r = generate(&gw, None, json!({"text": "Hi.", "voice_id": "shared"})).await;
    assert_eq!(r.status, 200, "{:?}", r.json);

    let off = Gateway::start(&format!(
        "  cache: {{ memory: {{ max: 64MiB }} }}\n{}",
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], "")
    ));
    for r in [
        list(&off, None).await,
        register(&off, None, "x", &wav, TRANSCRIPT).await,
        delete(&off, None, "x").await,
        generate(&off, None, json!({"text": "Hi.", "voice_id": "x"})).await,
    ] {
        assert_eq!((r.status, r.code()), (404, "voices_disabled"));
        let message = r.json["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("voices:"), "{message}");
    }
}

#[test]
fn the_voice_directory_is_required_without_a_disk_cache() {
    let yaml = "pid_file: /tmp/x.pid\ncosygate:\n  listen:\n    - addr: 127.0.0.1:1\n  voices: { max_per_tenant: 3 }\n  pools:\n    p:\n      protocol: cosyvoice_fastapi\n      backends:\n        - addr: 127.0.0.1:2\n";
    let (code, out) = check_config(yaml);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("cosygate.yaml:5:") && out.contains("voices.path"),
        "{out}"
    );
    let (code, out) = check_config(&yaml.replace("max_per_tenant: 3", "colour: red"));
    assert_ne!(code, 0);
    assert!(out.contains("colour"), "{out}");
    let with_disk = yaml.replace(
        "  voices:",
        "  cache: { disk: { path: /tmp/cosygate-test-cache } }\n  voices:",
    );
    let (code, out) = check_config(&with_disk);
    assert_eq!(code, 0, "{out}");
}
