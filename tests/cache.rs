//! The WAV cache end to end (issue 4), through the real binaries: client → cosygate →
//! cosyvoice-sim (and a real redis-server for the shared tier). Every assertion is about what a
//! user sees (status, `X-Cache`, `Age`, `X-Cache-Key`, the exact bytes) or what the backend
//! itself counted (`/__sim/stats`), plus the disk tier's files where the README promises a
//! layout. The last test drives `cosygate::cache::Cache` in-process, as the admin purge will.

mod common;

use base64::Engine;
use bytes::Bytes;
use common::gateway::{eventually, pool_yaml, Gateway};
use common::redis::Redis;
use common::sim::{test_wav, Sim};
use cosygate::cache::{Cache, CacheKey, CachedWav};
use cosygate::config::CacheConf;
use cosygate::synth::{Source, Synthesized};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

const FAST: &[&str] = &["--rtf", "0.01", "--first-chunk-ms", "5"];
/// Slow enough that concurrent identical requests overlap the one synthesis.
const SLOW: &[&str] = &["--rtf", "0.01", "--first-chunk-ms", "500"];

// ---------------------------------------------------------------------------------------------
// Helpers

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What a client sees of one answer.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    /// `X-Cache` (empty if absent).
    cache: String,
    age: Option<u64>,
    key: Option<String>,
    content_length: Option<u64>,
    /// The error code of a JSON error answer.
    code: Option<String>,
    body: Bytes,
}

impl Reply {
    fn key(&self) -> String {
        self.key
            .clone()
            .unwrap_or_else(|| panic!("no X-Cache-Key in {self:?}"))
    }

    #[track_caller]
    fn expect(&self, cache: &str) -> &Self {
        assert_eq!(
            (self.status, self.cache.as_str()),
            (200, cache),
            "expected 200 {cache}; got {} {} {:?}",
            self.status,
            self.cache,
            self.code
        );
        assert!(self.body.starts_with(b"RIFF"), "a WAV");
        assert_eq!(self.content_length, Some(self.body.len() as u64));
        match cache {
            "HIT" => assert!(self.age.is_some(), "a HIT carries Age"),
            _ => assert_eq!(self.age, None, "only a HIT carries Age"),
        }
        if cache != "BYPASS" {
            let key = self.key();
            assert!(
                key.len() == 64
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "X-Cache-Key is 64 lowercase hex digits: {key:?}"
            );
        }
        self
    }
}

async fn send_to(client: &reqwest::Client, url: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client
        .post(url)
        .header("Content-Type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("the gateway answers");
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().expect("ASCII header").to_string())
    };
    let cache = header("X-Cache").unwrap_or_default();
    let age = header("Age").map(|a| a.parse().expect("Age is a number of seconds"));
    let key = header("X-Cache-Key");
    let content_length = header("Content-Length").map(|l| l.parse().expect("Content-Length"));
    let body = resp.bytes().await.expect("the whole body");
    let code = if status == 200 {
        None
    } else {
        let v: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("error {status} is JSON ({e}): {}", String::from_utf8_lossy(&body)));
        v["error"]["code"].as_str().map(str::to_string)
    };
    Reply {
        status,
        cache,
        age,
        key,
        content_length,
        code,
        body,
    }
}

async fn send(gw: &Gateway, body: &str, headers: &[(&str, &str)]) -> Reply {
    send_to(&client(), &gw.url("/generate"), body, headers).await
}

async fn requests(sim: &Sim) -> u64 {
    sim.stats().await["requests"].as_u64().expect("requests")
}

/// An SFT request (no prompt audio): the cheapest request that reaches the backend.
fn sft(text: &str) -> String {
    json!({"text": text, "mode": "sft", "spk_id": "中文女"}).to_string()
}

/// `pools:` with one fastapi pool and `cache:` (a YAML flow mapping).
fn cached(sim: &Sim, cache: &str) -> String {
    format!(
        "  cache: {cache}\n{}",
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], "")
    )
}

/// Where the disk tier keeps the entry of `key` (README: `<path>/v2/<2 hex>/<key>.entry`).
fn disk_file(root: &Path, key: &str) -> PathBuf {
    root.join("v2").join(&key[..2]).join(format!("{key}.entry"))
}

fn on_disk(root: &Path, key: &str) -> bool {
    disk_file(root, key).exists()
}

/// An entry file's header line (parsed) and the WAV after it.
fn read_entry(root: &Path, key: &str) -> Option<(Value, Vec<u8>)> {
    let data = std::fs::read(disk_file(root, key)).ok()?;
    let end = data.iter().position(|&b| b == b'\n')?;
    Some((
        serde_json::from_slice(&data[..end]).ok()?,
        data[end + 1..].to_vec(),
    ))
}

/// Waits (up to 5 s) until `check` holds: a miss is answered first and stored after, so the
/// disk catches up with the answers a moment later.
async fn settled(what: &str, check: impl Fn() -> bool) {
    eventually(Duration::from_secs(5), what, || std::future::ready(check())).await;
}

/// Waits until `key`'s entry is on disk.
async fn stored(root: &Path, key: &str) {
    settled(&format!("{key} stored on disk"), || on_disk(root, key)).await;
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

// ---------------------------------------------------------------------------------------------
// 1. HIT, MISS, BYPASS

#[tokio::test]
async fn miss_then_hit_and_no_store_bypasses_without_storing() {
    let sim = Sim::start(FAST);
    let gw = Gateway::start(&cached(&sim, "{}"));
    let body = sft("The first lesson starts now.");

    let miss = send(&gw, &body, &[]).await;
    miss.expect("MISS");
    assert_eq!(requests(&sim).await, 1, "a MISS is one backend call");

    let hit = send(&gw, &body, &[]).await;
    hit.expect("HIT");
    assert_eq!(hit.body, miss.body, "a HIT is the exact bytes of the MISS");
    assert_eq!(hit.key, miss.key);
    assert!(
        hit.age.unwrap() <= 5,
        "Age counts seconds since synthesis: {:?}",
        hit.age
    );
    assert_eq!(requests(&sim).await, 1, "a HIT makes no backend call");

    // no-store: synthesized again, not looked up, not stored.
    let bypass = send(&gw, &body, &[("Cache-Control", "no-store")]).await;
    bypass.expect("BYPASS");
    assert_eq!(bypass.body, miss.body, "the sim is deterministic");
    assert_eq!(requests(&sim).await, 2, "a BYPASS is a backend call");
    // ...also as one directive among several.
    send(&gw, &body, &[("Cache-Control", "max-age=0, no-store")])
        .await
        .expect("BYPASS");
    assert_eq!(requests(&sim).await, 3);

    let again = send(&gw, &body, &[]).await;
    again.expect("HIT");
    assert_eq!(
        (again.body.clone(), again.key.clone()),
        (miss.body.clone(), miss.key.clone())
    );
    assert_eq!(requests(&sim).await, 3, "the original entry is still served");

    // A no-store on a new text stores nothing: the next normal request is a MISS.
    let fresh = sft("A text nobody asked for before.");
    send(&gw, &fresh, &[("Cache-Control", "no-store")])
        .await
        .expect("BYPASS");
    assert_eq!(requests(&sim).await, 4);
    let after = send(&gw, &fresh, &[]).await;
    after.expect("MISS");
    assert_eq!(requests(&sim).await, 5);
    assert_ne!(after.key, miss.key);
    send(&gw, &fresh, &[]).await.expect("HIT");
    assert_eq!(requests(&sim).await, 5);
}

#[tokio::test]
async fn without_a_cache_section_every_answer_is_a_bypass() {
    let sim = Sim::start(FAST);
    let gw = Gateway::start(&pool_yaml("cosyvoice_fastapi", &[sim.addr()], ""));
    let body = sft("No cache here.");
    for n in 1..=2 {
        let r = send(&gw, &body, &[]).await;
        r.expect("BYPASS");
        assert_eq!(r.key, None, "no key without a cache");
        assert_eq!(requests(&sim).await, n);
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Canonical keys

const NFC_TEXT: &str = "Un caf\u{e9}, s'il vous pla\u{ee}t.";
const NFD_TEXT: &str = "Un cafe\u{301}, s'il vous plai\u{302}t.";

#[tokio::test]
async fn equivalent_requests_share_a_key_and_every_field_that_matters_changes_it() {
    let sim = Sim::start(FAST);
    // Two pools on the same sim: `json` (generate_json) takes `speed`.
    let pools = format!(
        "  default_pool: cosyvoice\n{}    json:\n      protocol: generate_json\n      health: {{ interval: 200ms, timeout: 500ms }}\n      speakers: [中文女, 中文男]\n      backends:\n        - addr: {}\n",
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], ""),
        sim.addr()
    );
    let gw = Gateway::start(&format!("  cache: {{}}\n{pools}"));
    let prompt = test_wav(1.0, 16000);
    let prompt_b64 = b64(&prompt);
    let s = |v: &str| serde_json::to_string(v).unwrap();

    let base = json!({"text": NFC_TEXT, "mode": "zero_shot", "prompt_audio": prompt_b64, "prompt_text": "A short prompt."})
        .to_string();
    let first = send(&gw, &base, &[]).await;
    first.expect("MISS");
    let key = first.key();
    assert_eq!(requests(&sim).await, 1);

    // Equivalent spellings of the same request.
    let wrapped: String = prompt_b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(wrapped.contains('\n'));
    let equivalents = [
        (
            "reordered keys and extra whitespace",
            format!(
                "{{\n  \"prompt_text\" :  {},\n\t\"prompt_audio\":{} ,  \"mode\" : \"zero_shot\",\r\n  \"text\"  :{}  }}\n",
                s("A short prompt."),
                s(&prompt_b64),
                s(NFC_TEXT)
            ),
        ),
        (
            "base64 wrapped every 76 characters",
            json!({"text": NFC_TEXT, "mode": "zero_shot", "prompt_audio": wrapped, "prompt_text": "A short prompt."}).to_string(),
        ),
        (
            "text and prompt_text with surrounding spaces",
            json!({"text": format!("  {NFC_TEXT} \n"), "mode": "zero_shot", "prompt_audio": prompt_b64, "prompt_text": " A short prompt.  "}).to_string(),
        ),
        (
            "NFD spelling",
            json!({"text": NFD_TEXT, "mode": "zero_shot", "prompt_audio": prompt_b64, "prompt_text": "A short prompt."}).to_string(),
        ),
        (
            "mode, seed and speed spelled out at their defaults",
            json!({"text": NFC_TEXT, "prompt_audio": prompt_b64, "prompt_text": "A short prompt.", "seed": 0, "speed": 1.0}).to_string(),
        ),
    ];
    for (what, body) in &equivalents {
        let r = send(&gw, body, &[]).await;
        r.expect("HIT");
        assert_eq!(r.key(), key, "{what}: same key");
        assert_eq!(r.body, first.body, "{what}: same audio");
    }
    assert_eq!(
        requests(&sim).await,
        1,
        "equivalent requests make no backend call"
    );

    // Each field that matters gives another key: a MISS, one backend call each.
    let other_prompt = b64(&test_wav(1.1, 16000));
    let instruct = |instruction: &str| {
        json!({"text": NFC_TEXT, "mode": "instruct", "prompt_audio": prompt_b64, "instruct_text": instruction}).to_string()
    };
    let sft_with = |extra: Value| {
        let mut v = json!({"text": NFC_TEXT, "mode": "sft", "spk_id": "中文女"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v.to_string()
    };
    let variants: Vec<(&str, String, Option<&str>)> = vec![
        ("text", json!({"text": "Un caf\u{e9} noir.", "mode": "zero_shot", "prompt_audio": prompt_b64, "prompt_text": "A short prompt."}).to_string(), None),
        ("mode", json!({"text": NFC_TEXT, "mode": "cross_lingual", "prompt_audio": prompt_b64, "prompt_text": "A short prompt."}).to_string(), None),
        ("prompt_audio bytes", json!({"text": NFC_TEXT, "mode": "zero_shot", "prompt_audio": other_prompt, "prompt_text": "A short prompt."}).to_string(), None),
        ("prompt_text", json!({"text": NFC_TEXT, "mode": "zero_shot", "prompt_audio": prompt_b64, "prompt_text": "Another prompt."}).to_string(), None),
        ("instruct", instruct("Speak slowly."), None),
        ("instruct_text", instruct("Speak quickly."), None),
        ("sft", sft_with(json!({})), None),
        ("spk_id", sft_with(json!({"spk_id": "中文男"})), None),
        ("seed", sft_with(json!({"seed": 7})), None),
        ("pool", sft_with(json!({})), Some("json")),
        ("speed", sft_with(json!({"speed": 1.5})), Some("json")),
        ("another speed", sft_with(json!({"speed": 0.75})), Some("json")),
    ];
    let mut keys = HashSet::from([key.clone()]);
    let mut calls = 1;
    for (what, body, pool) in &variants {
        let headers: Vec<(&str, &str)> = pool.iter().map(|p| ("X-Cosygate-Pool", *p)).collect();
        let r = send(&gw, body, &headers).await;
        r.expect("MISS");
        calls += 1;
        assert_eq!(requests(&sim).await, calls, "{what}: one backend call");
        assert!(keys.insert(r.key()), "{what}: a key of its own ({})", r.key());
        // And it is cached under that key.
        let again = send(&gw, body, &headers).await;
        again.expect("HIT");
        assert_eq!(
            (again.key(), again.body.clone()),
            (r.key(), r.body.clone()),
            "{what}"
        );
    }
    assert_eq!(requests(&sim).await, calls);

    // `speed` is keyed by value: 1.5 spelled differently is the same key; 1 is the default.
    let r = send(
        &gw,
        &sft_with(json!({"speed": 1.50})),
        &[("X-Cosygate-Pool", "json")],
    )
    .await;
    r.expect("HIT");
    let r = send(
        &gw,
        &sft_with(json!({"speed": 1})),
        &[("X-Cosygate-Pool", "json")],
    )
    .await;
    r.expect("HIT");
    assert_eq!(requests(&sim).await, calls);
}

#[tokio::test]
async fn model_version_is_part_of_the_key_even_on_a_shared_disk() {
    let sim = Sim::start(FAST);
    let disk = tempfile::tempdir().expect("temp dir");
    let conf = |version: &str| {
        format!(
            "  cache: {{ disk: {{ path: {} }} }}\n{}",
            disk.path().display(),
            pool_yaml(
                "cosyvoice_fastapi",
                &[sim.addr()],
                &format!("      model_version: \"{version}\"\n")
            )
        )
    };
    let body = sft("Same words, new weights.");
    let v1 = Gateway::start(&conf("2025-01"));
    let old = send(&v1, &body, &[]).await;
    old.expect("MISS");
    stored(disk.path(), &old.key()).await;

    // Another gateway on the same directory with another model_version: no hit across them.
    let v2 = Gateway::start(&conf("2025-02"));
    let new = send(&v2, &body, &[]).await;
    new.expect("MISS");
    assert_ne!(new.key, old.key);
    assert_eq!(requests(&sim).await, 2);
    // Each still hits its own entry, from the shared directory too.
    send(&v2, &body, &[]).await.expect("HIT");
    send(&v1, &body, &[]).await.expect("HIT");
    drop(v1);
    let v1 = Gateway::start(&conf("2025-01"));
    let r = send(&v1, &body, &[]).await;
    r.expect("HIT");
    assert_eq!(r.key, old.key);
    assert_eq!(requests(&sim).await, 2);
}

// ---------------------------------------------------------------------------------------------
// 3. Tenants

fn auth_yaml() -> String {
    let digest = |token: &str| sha256_hex(token.as_bytes());
    format!(
        "  auth:\n    allow_anonymous: true\n    tokens:\n      - {{ name: a1, sha256: \"{}\", tenant: school-a }}\n      - {{ name: a2, sha256: \"{}\", tenant: school-a }}\n      - {{ name: b1, sha256: \"{}\", tenant: school-b }}\n",
        digest("token-a1"),
        digest("token-a2"),
        digest("token-b1"),
    )
}

const TOKEN_A1: (&str, &str) = ("Authorization", "Bearer token-a1");
const TOKEN_A2: (&str, &str) = ("Authorization", "Bearer token-a2");
const TOKEN_B1: (&str, &str) = ("Authorization", "Bearer token-b1");

#[tokio::test]
async fn share_tenant_keeps_each_tenants_audio_to_itself() {
    let sim = Sim::start(FAST);
    let gw = Gateway::start(&format!("{}{}", auth_yaml(), cached(&sim, "{ share: tenant }")));
    let body = sft("Homework for Monday.");

    let a = send(&gw, &body, &[TOKEN_A1]).await;
    a.expect("MISS");
    let b = send(&gw, &body, &[TOKEN_B1]).await;
    b.expect("MISS");
    assert_ne!(a.key, b.key, "tenants have keys of their own");
    assert_eq!(requests(&sim).await, 2, "tenant B did not get A's audio");

    let again = send(&gw, &body, &[TOKEN_A1]).await;
    again.expect("HIT");
    assert_eq!(
        (again.key.clone(), again.body.clone()),
        (a.key.clone(), a.body.clone())
    );
    // Another token of the same tenant shares the tenant's entries.
    let same_tenant = send(&gw, &body, &[TOKEN_A2]).await;
    same_tenant.expect("HIT");
    assert_eq!(same_tenant.key, a.key);
    assert_eq!(requests(&sim).await, 2);

    // Anonymous callers form one tenant of their own.
    let anon = send(&gw, &body, &[]).await;
    anon.expect("MISS");
    assert!(anon.key != a.key && anon.key != b.key);
    send(&gw, &body, &[]).await.expect("HIT");
    assert_eq!(requests(&sim).await, 3);
}

#[tokio::test]
async fn share_global_gives_everyone_the_same_audio() {
    let sim = Sim::start(FAST);
    let gw = Gateway::start(&format!("{}{}", auth_yaml(), cached(&sim, "{ share: global }")));
    let body = sft("Homework for Tuesday.");

    let a = send(&gw, &body, &[TOKEN_A1]).await;
    a.expect("MISS");
    let b = send(&gw, &body, &[TOKEN_B1]).await;
    b.expect("HIT");
    assert_eq!((b.key.clone(), b.body.clone()), (a.key.clone(), a.body.clone()));
    let anon = send(&gw, &body, &[]).await;
    anon.expect("HIT");
    assert_eq!(anon.key, a.key);
    assert_eq!(requests(&sim).await, 1);
}

#[tokio::test]
async fn a_tenant_named_anonymous_does_not_see_anonymous_callers_audio() {
    let sim = Sim::start(FAST);
    let auth = format!(
        "  auth:\n    allow_anonymous: true\n    tokens:\n      - {{ name: n, sha256: \"{}\", tenant: anonymous }}\n",
        sha256_hex(b"token-n")
    );
    let gw = Gateway::start(&format!("{auth}{}", cached(&sim, "{ share: tenant }")));
    let body = sft("Only for the public.");
    let anon = send(&gw, &body, &[]).await;
    anon.expect("MISS");
    let named = send(&gw, &body, &[("Authorization", "Bearer token-n")]).await;
    named.expect("MISS");
    assert_ne!(named.key, anon.key);
    assert_eq!(requests(&sim).await, 2);
}

// ---------------------------------------------------------------------------------------------
// 4. TTL

#[tokio::test]
async fn entries_expire_ttl_after_synthesis() {
    let sim = Sim::start(FAST);
    let disk = tempfile::tempdir().expect("temp dir");
    let gw = Gateway::start(&cached(
        &sim,
        &format!("{{ ttl: 1s, disk: {{ path: {} }} }}", disk.path().display()),
    ));
    let body = sft("This line is only good for a second.");
    let miss = send(&gw, &body, &[]).await;
    let synthesized = Instant::now();
    miss.expect("MISS");
    let hit = send(&gw, &body, &[]).await;
    hit.expect("HIT");
    assert_eq!(hit.age, Some(0));
    assert_eq!(requests(&sim).await, 1);

    // Poll until the entry has expired (from memory and from disk): the first MISS re-synthesizes.
    let (c, url) = (client(), gw.url("/generate"));
    eventually(
        Duration::from_secs(5),
        "a MISS once the 1 s TTL has passed",
        || {
            let (c, url, body) = (c.clone(), url.clone(), body.clone());
            async move {
                let r = send_to(&c, &url, &body, &[]).await;
                assert_eq!(r.status, 200);
                if r.cache == "HIT" {
                    assert!(
                        r.age.unwrap() <= 1,
                        "an expired entry was served: Age {:?}",
                        r.age
                    );
                }
                r.cache == "MISS"
            }
        },
    )
    .await;
    assert!(
        synthesized.elapsed() >= Duration::from_millis(900),
        "expired after {:?}, before the TTL",
        synthesized.elapsed()
    );
    assert_eq!(requests(&sim).await, 2, "exactly one re-synthesis");
    let r = send(&gw, &body, &[]).await;
    r.expect("HIT");
    assert_eq!(r.body, miss.body);
    assert_eq!(requests(&sim).await, 2);
}

// ---------------------------------------------------------------------------------------------
// 5. LRU eviction on disk

#[tokio::test]
async fn disk_evicts_the_least_recently_used_entry() {
    let sim = Sim::start(FAST);
    let disk = tempfile::tempdir().expect("temp dir");
    let conf = |max: u64| {
        cached(
            &sim,
            &format!(
                "{{ memory: {{ max: 1KiB }}, disk: {{ path: {}, max: {max} }} }}",
                disk.path().display()
            ),
        )
    };
    // Texts of one length: the sim's audio length follows the text, so the entries are equal.
    let (a, b, c) = (
        sft("Entry number A."),
        sft("Entry number B."),
        sft("Entry number C."),
    );

    // Measure an entry with a roomy disk, storing A then B.
    let gw = Gateway::start(&conf(1 << 30));
    let ra = send(&gw, &a, &[]).await;
    ra.expect("MISS");
    stored(disk.path(), &ra.key()).await;
    let rb = send(&gw, &b, &[]).await;
    rb.expect("MISS");
    stored(disk.path(), &rb.key()).await;
    let size = ra.content_length.unwrap();
    assert_eq!(rb.content_length, Some(size), "equal entries");
    drop(gw);

    // Room for two entries, not three. A fresh process: its memory tier is empty, so a hit
    // comes from the disk and marks the entry used (its file's mtime).
    let cap = size * 5 / 2;
    let gw = Gateway::start(&conf(cap));
    let touched = send(&gw, &a, &[]).await;
    touched.expect("HIT");
    assert_eq!(touched.body, ra.body);
    let rc = send(&gw, &c, &[]).await;
    rc.expect("MISS");
    assert_eq!(rc.content_length, Some(size));
    assert_eq!(requests(&sim).await, 3);
    // Storing C (after its answer) pushed out B, the least recently used.
    // The store renames C's file into place, then evicts: wait for both.
    stored(disk.path(), &rc.key()).await;
    settled("B evicted", || !on_disk(disk.path(), &rb.key())).await;
    assert!(on_disk(disk.path(), &ra.key()), "A was used recently: kept");
    assert!(on_disk(disk.path(), &rc.key()), "C was just stored");
    drop(gw);

    // After a restart (LRU order rebuilt from the mtimes): A is a HIT with its bytes, the
    // untouched B is synthesized again, and storing it evicts C, now the least recently used.
    let gw = Gateway::start(&conf(cap));
    let a_again = send(&gw, &a, &[]).await;
    a_again.expect("HIT");
    assert_eq!(a_again.body, ra.body);
    assert_eq!(requests(&sim).await, 3);
    let b_again = send(&gw, &b, &[]).await;
    b_again.expect("MISS");
    assert_eq!(b_again.body, rb.body);
    assert_eq!(requests(&sim).await, 4);
    stored(disk.path(), &rb.key()).await;
    assert!(on_disk(disk.path(), &ra.key()) && on_disk(disk.path(), &rb.key()));
    assert!(!on_disk(disk.path(), &rc.key()), "C was evicted");
    let wav_bytes: u64 = [&ra, &rb, &rc]
        .iter()
        .filter_map(|r| read_entry(disk.path(), &r.key()))
        .map(|(_, wav)| wav.len() as u64)
        .sum();
    assert!(
        wav_bytes <= cap,
        "{wav_bytes} bytes of WAV on disk, over the cap {cap}"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Restarts

#[tokio::test]
async fn the_disk_tier_survives_a_restart() {
    let sim = Sim::start(FAST);
    let disk = tempfile::tempdir().expect("temp dir");
    let conf = cached(
        &sim,
        &format!("{{ disk: {{ path: {} }} }}", disk.path().display()),
    );
    let body = sft("Saved for tomorrow.");

    let gw = Gateway::start(&conf);
    let miss = send(&gw, &body, &[]).await;
    miss.expect("MISS");
    // Answered first, stored after: once stored, a SIGKILL loses nothing.
    stored(disk.path(), &miss.key()).await;
    drop(gw);

    let gw = Gateway::start(&conf);
    let hit = send(&gw, &body, &[]).await;
    hit.expect("HIT");
    assert_eq!(
        (hit.key.clone(), hit.body.clone()),
        (miss.key.clone(), miss.body.clone())
    );
    assert_eq!(requests(&sim).await, 1, "no backend call after the restart");

    // The entry on disk is exactly the WAV that was served, after a header describing it.
    let (meta, wav) = read_entry(disk.path(), &miss.key()).expect("the entry file");
    assert_eq!(wav, miss.body);
    assert_eq!(meta["size"], miss.body.len() as u64);
    assert_eq!(meta["sha256"], sha256_hex(&miss.body));
}

// ---------------------------------------------------------------------------------------------
// 7. Damage on disk

#[tokio::test]
async fn a_damaged_disk_entry_is_resynthesized_never_served() {
    let sim = Sim::start(FAST);
    let disk = tempfile::tempdir().expect("temp dir");
    let conf = cached(
        &sim,
        &format!("{{ disk: {{ path: {} }} }}", disk.path().display()),
    );
    let body = sft("A bit will flip in this one.");

    let gw = Gateway::start(&conf);
    let good = send(&gw, &body, &[]).await;
    good.expect("MISS");
    stored(disk.path(), &good.key()).await;
    drop(gw);

    // Flip one bit of audio data (in the second half of the file, well past the entry's header
    // and the WAV's): same size, wrong checksum.
    let entry = disk_file(disk.path(), &good.key());
    let (_, wav) = read_entry(disk.path(), &good.key()).expect("the entry");
    assert_eq!(wav, good.body);
    let mut bytes = std::fs::read(&entry).expect("the entry file");
    let at = bytes.len() - (good.body.len() - 44) / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&entry, &bytes).expect("damage the WAV");

    let gw = Gateway::start(&conf);
    let r = send(&gw, &body, &[]).await;
    r.expect("MISS");
    assert_eq!(r.body, good.body, "the correct audio, synthesized again");
    assert_eq!(requests(&sim).await, 2, "one re-synthesis");
    settled("the entry is stored again", || {
        read_entry(disk.path(), &good.key()).is_some_and(|(_, wav)| wav == good.body)
    })
    .await;
    let hit = send(&gw, &body, &[]).await;
    hit.expect("HIT");
    assert_eq!(hit.body, good.body);
    drop(gw);

    // And from the disk after one more restart.
    let gw = Gateway::start(&conf);
    let hit = send(&gw, &body, &[]).await;
    hit.expect("HIT");
    assert_eq!(hit.body, good.body);
    assert_eq!(requests(&sim).await, 2);
}

// ---------------------------------------------------------------------------------------------
// 8. One synthesis per key

#[tokio::test]
async fn concurrent_identical_requests_make_one_backend_call() {
    let sim = Sim::start(SLOW);
    let gw = Gateway::start(&cached(&sim, "{}"));
    let body = sft("Twenty students press play at once.");
    let url = gw.url("/generate");
    let c = client();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (c, url, body) = (c.clone(), url.clone(), body.clone());
            tokio::spawn(async move { send_to(&c, &url, &body, &[]).await })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.expect("task"));
    }
    assert_eq!(
        requests(&sim).await,
        1,
        "one backend call for 20 identical requests"
    );
    let misses = replies.iter().filter(|r| r.cache == "MISS").count();
    assert_eq!(
        misses,
        1,
        "exactly one MISS: {:?}",
        replies.iter().map(|r| &r.cache).collect::<Vec<_>>()
    );
    for r in &replies {
        r.expect(if r.cache == "MISS" { "MISS" } else { "HIT" });
        assert_eq!((&r.body, &r.key), (&replies[0].body, &replies[0].key));
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Errors are not cached

#[tokio::test]
async fn failed_syntheses_are_not_cached() {
    let sim = Sim::start(FAST);
    // No retry: the one backend's failure is the answer.
    let gw = Gateway::start(&format!(
        "  cache: {{}}\n{}",
        pool_yaml(
            "cosyvoice_fastapi",
            &[sim.addr()],
            "      retry: { attempts: 0 }\n"
        )
    ));

    for (n, kind) in ["error500", "truncate"].into_iter().enumerate() {
        let body = sft(&format!("This synthesis fails first ({kind})."));
        let calls = 2 * n as u64;
        sim.fault(kind, 1).await;
        let failed = send(&gw, &body, &[]).await;
        assert_eq!(
            (failed.status, failed.code.as_deref()),
            (502, Some("backend_failed")),
            "{kind}: {failed:?}"
        );
        assert_eq!(requests(&sim).await, calls + 1);
        let r = send(&gw, &body, &[]).await;
        r.expect("MISS");
        assert_eq!(
            requests(&sim).await,
            calls + 2,
            "{kind}: the failure was not cached"
        );
        send(&gw, &body, &[]).await.expect("HIT");
        assert_eq!(requests(&sim).await, calls + 2);
    }
}

// ---------------------------------------------------------------------------------------------
// 10, 11. The Redis tier

fn redis_cached(sim: &Sim, redis: &Redis) -> String {
    cached(
        sim,
        &format!(
            "{{ memory: {{ max: 64MiB }}, redis: {{ url: \"{}\", timeout: 200ms }} }}",
            redis.url()
        ),
    )
}

#[tokio::test]
async fn instances_share_audio_and_one_synthesis_through_redis() {
    let redis = Redis::start();
    let (sim_a, sim_b) = (Sim::start(SLOW), Sim::start(SLOW));
    let gw_a = Gateway::start(&redis_cached(&sim_a, &redis));
    let gw_b = Gateway::start(&redis_cached(&sim_b, &redis));

    let body = sft("Shared between instances.");
    let a = send(&gw_a, &body, &[]).await;
    a.expect("MISS");
    assert_eq!(requests(&sim_a).await, 1);
    let b = send(&gw_b, &body, &[]).await;
    b.expect("HIT");
    assert_eq!((b.key.clone(), b.body.clone()), (a.key.clone(), a.body.clone()));
    assert_eq!(requests(&sim_b).await, 0, "instance B used A's synthesis");

    // 10 concurrent identical requests split across both instances: one backend call in all.
    let body = sft("Ten students on two instances.");
    let c = client();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let url = if i % 2 == 0 {
                gw_a.url("/generate")
            } else {
                gw_b.url("/generate")
            };
            let (c, body) = (c.clone(), body.clone());
            tokio::spawn(async move { send_to(&c, &url, &body, &[]).await })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.expect("task"));
    }
    let calls = requests(&sim_a).await + requests(&sim_b).await;
    assert_eq!(calls, 2, "the first request, then one backend call for the 10");
    let misses = replies.iter().filter(|r| r.cache == "MISS").count();
    assert_eq!(
        misses,
        1,
        "{:?}",
        replies.iter().map(|r| &r.cache).collect::<Vec<_>>()
    );
    for r in &replies {
        r.expect(if r.cache == "MISS" { "MISS" } else { "HIT" });
        assert_eq!((&r.body, &r.key), (&replies[0].body, &replies[0].key));
    }
}

#[tokio::test]
async fn requests_go_on_when_redis_goes_away() {
    let mut redis = Redis::start();
    let sim = Sim::start(FAST);
    let gw = Gateway::start(&redis_cached(&sim, &redis));
    let warm = sft("Stored while Redis was up.");
    send(&gw, &warm, &[]).await.expect("MISS");
    send(&gw, &warm, &[]).await.expect("HIT");

    redis.stop();
    // Each Redis call is bounded by its 200 ms timeout; a request makes a handful at most.
    let bound = Duration::from_secs(3);
    let body = sft("Asked while Redis is down.");
    for (n, expected) in [(2, "MISS"), (2, "HIT"), (2, "HIT")] {
        let started = Instant::now();
        let r = send(&gw, &body, &[]).await;
        let took = started.elapsed();
        r.expect(expected);
        assert!(took < bound, "{expected} took {took:?} with Redis down");
        assert_eq!(requests(&sim).await, n);
    }
    let started = Instant::now();
    send(&gw, &warm, &[]).await.expect("HIT");
    assert!(started.elapsed() < bound);
    assert_eq!(requests(&sim).await, 2);
}

// ---------------------------------------------------------------------------------------------
// 12. Purge, in-process

fn conf(yaml: &str) -> CacheConf {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("cache conf {yaml:?}: {e}"))
}

fn entry(seed: u8) -> CachedWav {
    let pcm: Vec<u8> = (0..4800u32).map(|i| (i as u8).wrapping_mul(seed)).collect();
    CachedWav {
        wav: Bytes::from(cosygate::api::wav::pcm16_to_wav(&pcm, 24000).expect("a WAV")),
        created: SystemTime::now(),
        degraded: false,
    }
}

#[tokio::test]
async fn purge_removes_an_entry_from_every_tier() {
    let redis = Redis::start();
    let disk = tempfile::tempdir().expect("temp dir");
    let full = conf(&format!(
        "{{ ttl: 1h, memory: {{ max: 1MiB }}, disk: {{ path: {}, max: 10MiB }}, redis: {{ url: \"{}\", timeout: 500ms }} }}",
        disk.path().display(),
        redis.url()
    ));
    let cache = Cache::open(&full).await.expect("open the cache");
    // Fresh views of one tier each (their memory is empty, so a lookup reaches that tier).
    let disk_only = conf(&format!("{{ disk: {{ path: {} }} }}", disk.path().display()));
    let redis_only = conf(&format!(
        "{{ redis: {{ url: \"{}\", timeout: 500ms }} }}",
        redis.url()
    ));
    let found_in = |c: CacheConf, key: CacheKey| async move {
        let view = Cache::open(&c).await.expect("open a view");
        view.lookup(&key).await.map(|(hit, tier)| (hit.wav, tier))
    };

    let req = cosygate::api::GenerateRequest::parse(
        br#"{"text":"purge me","mode":"sft","spk_id":"a"}"#,
        cosygate::api::RequestLimits {
            max_text_chars: 200,
            max_prompt_seconds: 30.0,
        },
    )
    .expect("a valid request");
    let key = cache.key("anonymous:", "cosyvoice", "", &req);
    let other = CacheKey([0x5a; 32]);
    let (e1, e2) = (entry(3), entry(5));
    cache.store(&key, &e1, &json!({"text": "purge me"})).await;
    cache.store(&other, &e2, &json!({})).await;

    let (hit, tier) = cache.lookup(&key).await.expect("stored");
    assert_eq!((hit.wav.clone(), tier), (e1.wav.clone(), "memory"));
    assert_eq!(
        found_in(disk_only.clone(), key).await,
        Some((e1.wav.clone(), "disk"))
    );
    assert_eq!(
        found_in(redis_only.clone(), key).await,
        Some((e1.wav.clone(), "redis"))
    );
    assert!(on_disk(disk.path(), &key.hex()));

    assert!(cache.purge(&key).await, "purge reports that an entry was there");
    assert!(cache.lookup(&key).await.is_none(), "gone from every tier");
    assert_eq!(found_in(disk_only.clone(), key).await, None);
    assert_eq!(found_in(redis_only.clone(), key).await, None);
    assert!(!on_disk(disk.path(), &key.hex()));
    assert!(!cache.purge(&key).await, "nothing left to purge");
    // The other entry is untouched.
    assert_eq!(
        cache.lookup(&other).await.map(|(h, _)| h.wav),
        Some(e2.wav.clone())
    );

    // purge_all empties every tier, including entries another instance stored.
    let writer = Cache::open(&full).await.expect("a second instance");
    let third = CacheKey([0xa5; 32]);
    writer.store(&third, &e1, &json!({})).await;
    cache.purge_all().await;
    for k in [key, other, third] {
        assert!(cache.lookup(&k).await.is_none(), "{k} after purge_all");
        assert_eq!(found_in(disk_only.clone(), k).await, None, "{k} on disk");
        assert_eq!(found_in(redis_only.clone(), k).await, None, "{k} in Redis");
    }
    let leftovers: Vec<_> = walk(disk.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "entry"))
        .collect();
    assert!(leftovers.is_empty(), "files left after purge_all: {leftovers:?}");
    // The cache still works afterwards.
    cache.store(&key, &e1, &json!({})).await;
    assert!(cache.lookup(&key).await.is_some());
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The Redis lock helper both the cache and the supervisor use

#[tokio::test]
async fn a_redis_lock_is_released_only_by_its_token() {
    use cosygate::redis_link::RedisLink;
    use cosygate::redis_lock::{self, LockAttempt, Release};
    let redis = Redis::start();
    let link = RedisLink::new(&redis.url(), Duration::from_millis(500), "test").expect("link");
    let key = "cosygate:lock:test";
    let (mine, theirs) = (redis_lock::new_token(), redis_lock::new_token());
    let hold = Duration::from_secs(30);

    assert_eq!(
        redis_lock::acquire(&link, key, &mine, hold).await,
        LockAttempt::Acquired
    );
    assert_eq!(
        redis_lock::acquire(&link, key, &theirs, hold).await,
        LockAttempt::Held
    );
    assert!(
        !redis_lock::release(&link, key, &theirs, Release::Now).await,
        "not their lock"
    );
    assert_eq!(redis_lock::is_held(&link, key).await, Some(true));
    assert!(redis_lock::release(&link, key, &mine, Release::Now).await);
    assert_eq!(redis_lock::is_held(&link, key).await, Some(false));

    // Released with a delay: still held (from others) for that long, then gone.
    assert_eq!(
        redis_lock::acquire(&link, key, &theirs, hold).await,
        LockAttempt::Acquired
    );
    let keep = Duration::from_millis(300);
    assert!(redis_lock::release(&link, key, &theirs, Release::After(keep)).await);
    assert_eq!(
        redis_lock::acquire(&link, key, &mine, hold).await,
        LockAttempt::Held
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis_lock::is_held(&link, key).await != Some(false) {
        assert!(Instant::now() < deadline, "the lock did not expire");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        redis_lock::acquire(&link, key, &mine, hold).await,
        LockAttempt::Acquired
    );

    // Redis gone: the attempt says so.
    drop(redis);
    assert_eq!(
        redis_lock::acquire(&link, "cosygate:lock:other", &mine, hold).await,
        LockAttempt::Unavailable
    );
}

#[tokio::test]
async fn a_miss_is_looked_up_once_and_its_joiners_need_no_store() {
    let disk = tempfile::tempdir().expect("temp dir");
    let cache = std::sync::Arc::new(
        Cache::open(&conf(&format!(
            "{{ ttl: 1h, memory: {{ max: 1MiB }}, disk: {{ path: {} }} }}",
            disk.path().display()
        )))
        .await
        .expect("open the cache"),
    );
    let counted = |tier: &str| {
        cosygate::metrics::CACHE_REQUESTS
            .with_label_values(&[tier, "miss"])
            .get()
    };
    let (memory, on_disk_before) = (counted("memory"), counted("disk"));
    let key = CacheKey([0x3c; 32]);
    let e = entry(7);
    let made = Synthesized {
        wav: e.wav.clone(),
        source: Source::Backend("127.0.0.1:9".parse().expect("addr")),
        degraded: false,
        created: e.created,
        key: None,
    };
    let miss = cache
        .get_or_synthesize(key, json!({}), async move { Ok((made, true)) })
        .await
        .expect("synthesized");
    assert_eq!(miss.source, Source::Backend("127.0.0.1:9".parse().expect("addr")));
    assert_eq!(miss.key, Some(key));
    assert_eq!(
        (counted("memory") - memory, counted("disk") - on_disk_before),
        (1, 1),
        "one lookup per tier for one miss"
    );
    // Whatever the store's progress, an identical request is answered from that synthesis.
    let again = cache
        .get_or_synthesize(key, json!({}), async {
            Err(cosygate::synth::SynthError::Internal("synthesized twice".into()))
        })
        .await
        .expect("answered from the first synthesis");
    assert_eq!(again.wav, e.wav);
    assert!(
        matches!(again.source, Source::Tier("memory") | Source::InFlight),
        "{:?}",
        again.source
    );
    // And the store catches up: the entry reaches the disk.
    stored(disk.path(), &key.hex()).await;
}
