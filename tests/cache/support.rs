//! What every cache test shares: the sim's speeds, the client, one answer as a client sees it
//! ([`Reply`]: status, `X-Cache`, `Age`, `X-Cache-Key`, bytes), the request bodies and configs,
//! and the disk tier's documented layout (`<path>/v2/<2 hex>/<key>.entry`) with waits for it.

use crate::common::gateway::{eventually, pool_yaml, Gateway};
use crate::common::sim::Sim;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const FAST: &[&str] = &["--rtf", "0.01", "--first-chunk-ms", "5"];
/// Slow enough that concurrent identical requests overlap the one synthesis.
pub const SLOW: &[&str] = &["--rtf", "0.01", "--first-chunk-ms", "500"];

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What a client sees of one answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// `X-Cache` (empty if absent).
    pub cache: String,
    /// `X-Cache-Tier` of a HIT (`memory`, `disk`, `redis`, `inflight`).
    pub tier: Option<String>,
    pub age: Option<u64>,
    pub key: Option<String>,
    pub content_length: Option<u64>,
    /// The error code of a JSON error answer.
    pub code: Option<String>,
    pub body: Bytes,
}

impl Reply {
    pub fn key(&self) -> String {
        self.key
            .clone()
            .unwrap_or_else(|| panic!("no X-Cache-Key in {self:?}"))
    }

    #[track_caller]
    pub fn expect(&self, cache: &str) -> &Self {
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

pub async fn send_to(client: &reqwest::Client, url: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
    try_send_to(client, url, body, headers)
        .await
        .expect("the gateway answers with a whole body")
}

/// As [`send_to`], but an exchange that fails (no answer, or a body cut off) is an `Err`.
pub async fn try_send_to(
    client: &reqwest::Client,
    url: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> reqwest::Result<Reply> {
    let mut req = client
        .post(url)
        .header("Content-Type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().expect("ASCII header").to_string())
    };
    let cache = header("X-Cache").unwrap_or_default();
    let tier = header("X-Cache-Tier");
    let age = header("Age").map(|a| a.parse().expect("Age is a number of seconds"));
    let key = header("X-Cache-Key");
    let content_length = header("Content-Length").map(|l| l.parse().expect("Content-Length"));
    let body = resp.bytes().await?;
    let code = if status == 200 {
        None
    } else {
        let v: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("error {status} is JSON ({e}): {}", String::from_utf8_lossy(&body)));
        v["error"]["code"].as_str().map(str::to_string)
    };
    Ok(Reply {
        status,
        cache,
        tier,
        age,
        key,
        content_length,
        code,
        body,
    })
}

pub async fn send(gw: &Gateway, body: &str, headers: &[(&str, &str)]) -> Reply {
    send_to(&client(), &gw.url("/generate"), body, headers).await
}

pub async fn requests(sim: &Sim) -> u64 {
    sim.stats().await["requests"].as_u64().expect("requests")
}

/// An SFT request (no prompt audio): the cheapest request that reaches the backend.
pub fn sft(text: &str) -> String {
    json!({"text": text, "mode": "sft", "spk_id": "中文女"}).to_string()
}

/// `pools:` with one fastapi pool and `cache:` (a YAML flow mapping).
pub fn cached(sim: &Sim, cache: &str) -> String {
    format!(
        "  cache: {cache}\n{}",
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], "")
    )
}

/// Where the disk tier keeps the entry of `key` (README: `<path>/v2/<2 hex>/<key>.entry`).
pub fn disk_file(root: &Path, key: &str) -> PathBuf {
    root.join("v2").join(&key[..2]).join(format!("{key}.entry"))
}

pub fn on_disk(root: &Path, key: &str) -> bool {
    disk_file(root, key).exists()
}

/// An entry file's header line (parsed) and the WAV after it.
pub fn read_entry(root: &Path, key: &str) -> Option<(Value, Vec<u8>)> {
    let data = std::fs::read(disk_file(root, key)).ok()?;
    let end = data.iter().position(|&b| b == b'\n')?;
    Some((
        serde_json::from_slice(&data[..end]).ok()?,
        data[end + 1..].to_vec(),
    ))
}

/// Waits (up to 5 s) until `check` holds: a miss is answered first and stored after, so the
/// disk catches up with the answers a moment later.
pub async fn settled(what: &str, check: impl Fn() -> bool) {
    eventually(Duration::from_secs(5), what, || std::future::ready(check())).await;
}

/// Waits until `key`'s entry is on disk.
pub async fn stored(root: &Path, key: &str) {
    settled(&format!("{key} stored on disk"), || on_disk(root, key)).await;
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Every file under `dir`.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
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
