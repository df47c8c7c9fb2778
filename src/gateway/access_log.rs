//! What every request leaves behind when it ends: one JSON line on the log target
//! `cosygate::access` (so operators can route it apart from diagnostics), and the request-level
//! metrics (duration by route, status and cache result; requests by pool, tenant and status
//! class). Also the one rule for which `X-Request-Id` a client may choose.

use crate::metrics;
use serde::Serialize;
use std::net::IpAddr;

/// The log target of access lines; `RUST_LOG=cosygate::access=off` silences them.
pub const TARGET: &str = "cosygate::access";

/// Longest client-chosen request id kept.
const MAX_REQUEST_ID: usize = 64;

/// The client's `X-Request-Id` when it is sane (1 to 64 of `[A-Za-z0-9._-]`), else None and
/// the gateway makes one. Kept ids are sent to the backend and echoed in every answer.
pub fn client_request_id(value: &[u8]) -> Option<String> {
    let sane = !value.is_empty()
        && value.len() <= MAX_REQUEST_ID
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    sane.then(|| String::from_utf8_lossy(value).into_owned())
}

/// The route label of a path: one of a fixed few, never the path itself.
pub fn route(path: &str) -> &'static str {
    match path {
        "/generate" => "/generate",
        "/health" => "/health",
        p if p.starts_with("/v1/jobs/") => "/v1/jobs",
        "/v1/voices" => "/v1/voices",
        p if p.starts_with("/v1/voices/") => "/v1/voices",
        "/v1/audio/speech" => "/v1/audio/speech",
        "/v1/models" => "/v1/models",
        p if p.starts_with("/v1/models/") => "/v1/models",
        "/inference_zero_shot" => "/inference_zero_shot",
        "/inference_cross_lingual" => "/inference_cross_lingual",
        "/inference_instruct" => "/inference_instruct",
        "/inference_instruct2" => "/inference_instruct2",
        "/inference_sft" => "/inference_sft",
        _ => "other",
    }
}

/// One access-log line. Empty strings and zeros mean "did not apply" (no pool chosen, no
/// backend tried, answered from the cache...).
#[derive(Debug, Serialize)]
pub struct AccessRecord<'a> {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub request_id: &'a str,
    /// The client as admission resolved it (through a trusted proxy's X-Forwarded-For).
    pub client_ip: Option<IpAddr>,
    /// The TCP peer (the proxy, when there is one).
    pub peer: String,
    /// The tenant (or token name) from the config; `anonymous` without a token.
    pub tenant: &'a str,
    pub method: &'a str,
    pub route: &'static str,
    pub status: u16,
    /// The error code of a refusal or failure; empty on success.
    pub error: &'a str,
    /// `HIT`, `MISS`, `BYPASS`, or empty when the route has no cache.
    pub cache: &'a str,
    /// The tier of a hit (`memory`, `disk`, `redis`, `inflight`).
    pub cache_tier: &'a str,
    /// How the answer was degraded: `same_voice`, `same_text` (approximate cached answers),
    /// `fallback`, or empty.
    pub degraded: &'static str,
    pub pool: &'a str,
    pub backend: String,
    pub attempts: u32,
    pub queue_wait_ms: u64,
    pub total_ms: u64,
    pub audio_seconds: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl AccessRecord<'_> {
    /// Writes the line and counts the request in the metrics.
    pub fn emit(&self) {
        let status = self.status.to_string();
        let cache = if self.cache.is_empty() { "-" } else { self.cache };
        metrics::REQUEST_DURATION
            .with_label_values(&[self.route, &status, cache])
            .observe(self.total_ms as f64);
        let pool = if self.pool.is_empty() { "-" } else { self.pool };
        metrics::REQUESTS
            .with_label_values(&[pool, self.tenant, metrics::status_class(self.status)])
            .inc();
        match serde_json::to_string(self) {
            Ok(line) => log::info!(target: TARGET, "{line}"),
            Err(e) => log::error!("access log: cannot encode a record: {e}"),
        }
    }
}

/// Now, as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    format!("{now:.3}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_request_ids_are_kept() {
        assert_eq!(client_request_id(b"abc-123_X.y").as_deref(), Some("abc-123_X.y"));
        assert_eq!(client_request_id(&[b'a'; 64]).map(|s| s.len()), Some(64));
        for bad in [
            &b""[..],
            &[b'a'; 65],
            b"a b",
            b"a\"b",
            b"caf\xc3\xa9",
            b"a/b",
            b"{x}",
        ] {
            assert_eq!(client_request_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn routes_are_a_fixed_set() {
        assert_eq!(route("/generate"), "/generate");
        assert_eq!(route("/v1/jobs/abc"), "/v1/jobs");
        assert_eq!(route("/health"), "/health");
        assert_eq!(route("/anything/else?x"), "other");
    }

    #[test]
    fn the_time_is_rfc3339_utc_with_milliseconds() {
        let t = now_rfc3339();
        assert!(t.ends_with('Z') && t.len() == 24, "{t}");
    }
}
