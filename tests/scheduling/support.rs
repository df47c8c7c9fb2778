//! What every scheduling test shares: the sim's speed, the client, config snippets (pool lines,
//! tokens), one answer read whole ([`Reply`]: status, headers, body, its JSON error code, its WAV,
//! `Retry-After`, a 202's job), requests, job polling and `/health`.

use crate::common::gateway::Gateway;
use crate::common::sim::Sim;
use bytes::Bytes;
use cosygate::api::wav::parse_wav;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

pub const FAST: &[&str] = &["--rtf", "0.01", "--first-chunk-ms", "5"];

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        // Well below the gateway's keep-alive idle timeout (header_timeout, 10 s), so a pooled
        // connection is never reused just as the gateway closes it.
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .expect("client")
}

/// Indents pool lines by the 6 spaces `pool_yaml` expects.
pub fn extra(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("      {l}\n")).collect()
}

/// An SFT request (no prompt audio): the cheapest request that reaches the backend.
pub fn sft(text: &str) -> String {
    json!({"text": text, "mode": "sft", "spk_id": "中文女"}).to_string()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `auth:` with one token per name (token = `token-<name>`), anonymous callers allowed.
pub fn auth_yaml(names: &[&str]) -> String {
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

pub fn bearer(name: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer token-{name}"))
}

/// One answer of the gateway, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ASCII header"))
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} body is JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The error code of a JSON error answer (checking its shape).
    pub fn code(&self) -> String {
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
    pub fn wav(&self, rate: u32) -> &Bytes {
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

    pub fn retry_after(&self) -> u64 {
        self.header("retry-after")
            .unwrap_or_else(|| panic!("{} has Retry-After", self.status))
            .parse()
            .expect("Retry-After is whole seconds")
    }

    /// Checks the 202 job form (contract: Location, Retry-After, job_id/status/position/eta);
    /// returns the job's location and its status word.
    pub fn accepted(&self) -> (String, String) {
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

pub async fn read(resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.expect("the whole body");
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn try_post(
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

pub async fn post(gw: &Gateway, body: &str, headers: &[(&str, String)]) -> Reply {
    try_post(&client(), gw, body, headers)
        .await
        .expect("the gateway answers")
}

pub async fn get(gw: &Gateway, path: &str, headers: &[(&str, String)]) -> Reply {
    let mut req = client().get(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    read(req.send().await.expect("the gateway answers")).await
}

/// Polls a job until it is no longer 202 (each 202 checked), at most `timeout`.
pub async fn wait_job(gw: &Gateway, location: &str, headers: &[(&str, String)], timeout: Duration) -> Reply {
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
pub async fn job_status_until(
    gw: &Gateway,
    location: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
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

pub async fn requests(sim: &Sim) -> u64 {
    sim.stats().await["requests"].as_u64().expect("requests")
}

pub async fn health(gw: &Gateway) -> (u16, Value) {
    let r = get(gw, "/health", &[]).await;
    (r.status, r.json())
}
