//! What the voice tests share: tokens of two tenants, the config, the client calls (register,
//! list, delete, generate) and one answer as a client sees it.

use crate::common::gateway::{pool_yaml, Gateway};
use crate::common::sim::Sim;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

pub const FAST: &[&str] = &["--rtf", "0.01", "--first-chunk-ms", "5"];
pub const TOKEN_A: &str = "token-of-school-a";
pub const TOKEN_B: &str = "token-of-school-b";

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Two tenants' tokens (anonymous callers allowed on `/generate`), a memory cache (so answers
/// carry `X-Cache-Key`), `cache_extra` inside the cache mapping, and `voices`.
pub fn config(sim: &Sim, voices: &str, cache_extra: &str) -> String {
    format!(
        "  auth:\n    allow_anonymous: true\n    tokens:\n      - {{ name: a, sha256: \"{}\", tenant: school-a }}\n      - {{ name: b, sha256: \"{}\", tenant: school-b }}\n  cache: {{ memory: {{ max: 64MiB }}{cache_extra} }}\n  voices: {voices}\n{}",
        sha256_hex(TOKEN_A.as_bytes()),
        sha256_hex(TOKEN_B.as_bytes()),
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], "")
    )
}

pub fn voices_at(dir: &Path, extra: &str) -> String {
    format!("{{ path: \"{}\"{extra} }}", dir.display())
}

/// What a client sees of one answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub json: Value,
    pub bytes: bytes::Bytes,
    pub cache: String,
    pub key: String,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

pub async fn call(method: reqwest::Method, url: String, token: Option<&str>, body: Option<String>) -> Answer {
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

pub async fn register(gw: &Gateway, token: Option<&str>, name: &str, wav: &[u8], text: &str) -> Answer {
    let body = json!({"name": name, "prompt_audio": b64(wav), "prompt_text": text}).to_string();
    call(reqwest::Method::POST, gw.url("/v1/voices"), token, Some(body)).await
}

pub async fn list(gw: &Gateway, token: Option<&str>) -> Answer {
    call(reqwest::Method::GET, gw.url("/v1/voices"), token, None).await
}

pub async fn delete(gw: &Gateway, token: Option<&str>, id: &str) -> Answer {
    call(
        reqwest::Method::DELETE,
        gw.url(&format!("/v1/voices/{id}")),
        token,
        None,
    )
    .await
}

pub async fn generate(gw: &Gateway, token: Option<&str>, body: Value) -> Answer {
    call(
        reqwest::Method::POST,
        gw.url("/generate"),
        token,
        Some(body.to_string()),
    )
    .await
}

pub fn names(list: &Answer) -> Vec<String> {
    assert_eq!(list.status, 200, "{:?}", list.json);
    list.json["voices"]
        .as_array()
        .expect("voices")
        .iter()
        .map(|v| v["name"].as_str().expect("name").to_string())
        .collect()
}

pub async fn requests(sim: &Sim) -> u64 {
    sim.stats().await["requests"].as_u64().expect("requests")
}

pub const TRANSCRIPT: &str = "You are a helpful assistant.<|endofprompt|>Hello from the prompt.";
