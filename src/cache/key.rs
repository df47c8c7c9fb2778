//! The cache key: sha256 over a canonical form of everything that changes the audio, so that
//! equivalent requests (reordered JSON keys, other base64 line wrapping, insignificant
//! whitespace, NFC/NFD spellings) share a key and any meaningful change gives another.
//!
//! Canonical form: the tag `cosygate-cache-v1`, then each field as `name 0x00 length 0x00 value`
//! (length in decimal bytes, so no value can imitate a field boundary), in this order: tenant
//! (empty with `share: global`), pool, model_version, mode, text, prompt_audio_sha256 (hex of the
//! decoded WAV bytes, empty without prompt audio), prompt_text, instruct_text, spk_id, seed,
//! speed (Rust's shortest round-trip decimal). Text fields are already trimmed and NFC-normalized
//! by request validation.

use super::entry::CacheKey;
use crate::api::GenerateRequest;
use sha2::{Digest, Sha256};

/// Computes the key of `req` for `pool` (its name and `model_version`), within `tenant` when
/// the cache is shared per tenant.
pub fn cache_key(tenant: Option<&str>, pool: &str, model_version: &str, req: &GenerateRequest) -> CacheKey {
    key_with_prompt(tenant, pool, model_version, req, &prompt_sha256(req))
}

/// The hex sha256 of the request's prompt audio (empty without one): hashed once per request,
/// for its key and its description.
pub fn prompt_sha256(req: &GenerateRequest) -> String {
    match (&req.prompt_audio, &req.prompt_sha256) {
        (None, _) => String::new(),
        // A registered voice's id: the voice store checked it is this sample's sha256.
        (Some(_), Some(known)) => known.clone(),
        (Some(audio), None) => hex::encode(Sha256::digest(audio)),
    }
}

/// The key of `req` and the hex sha256 of its prompt audio (empty without one; the
/// description of a disk entry carries it, see [`describe`]), hashing the prompt once.
pub fn key_and_prompt_sha256(
    tenant: Option<&str>,
    pool: &str,
    model_version: &str,
    req: &GenerateRequest,
) -> (CacheKey, String) {
    let prompt = prompt_sha256(req);
    (key_with_prompt(tenant, pool, model_version, req, &prompt), prompt)
}

/// [`cache_key`] with the prompt's hex sha256 computed already.
fn key_with_prompt(
    tenant: Option<&str>,
    pool: &str,
    model_version: &str,
    req: &GenerateRequest,
    prompt: &str,
) -> CacheKey {
    let mut h = Sha256::new();
    h.update(b"cosygate-cache-v1");
    let mut field = |name: &str, value: &[u8]| {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(value.len().to_string().as_bytes());
        h.update([0]);
        h.update(value);
    };
    field("tenant", tenant.unwrap_or("").as_bytes());
    field("pool", pool.as_bytes());
    field("model_version", model_version.as_bytes());
    field("mode", req.mode.as_str().as_bytes());
    field("text", req.text.as_bytes());
    field("prompt_audio_sha256", prompt.as_bytes());
    field("prompt_text", req.prompt_text.as_deref().unwrap_or("").as_bytes());
    field(
        "instruct_text",
        req.instruct_text.as_deref().unwrap_or("").as_bytes(),
    );
    field("spk_id", req.spk_id.as_deref().unwrap_or("").as_bytes());
    field("seed", req.seed.to_string().as_bytes());
    field("speed", req.speed.to_string().as_bytes());
    CacheKey(h.finalize().into())
}

/// The request's parameters as stored beside a disk entry (for operators; never the audio),
/// with its prompt's hex sha256 from [`key_and_prompt_sha256`]. Built only when a synthesis
/// may be stored, never for a hit.
pub fn describe(pool: &str, req: &GenerateRequest, prompt_sha256: &str) -> serde_json::Value {
    serde_json::json!({
        "pool": pool,
        "mode": req.mode.as_str(),
        "text": req.text,
        "prompt_audio_sha256": (!prompt_sha256.is_empty()).then_some(prompt_sha256),
        "prompt_text": req.prompt_text,
        "instruct_text": req.instruct_text,
        "spk_id": req.spk_id,
        "seed": req.seed,
        "speed": req.speed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{GenerateRequest, RequestLimits};

    const LIMITS: RequestLimits = RequestLimits {
        max_text_chars: 200,
        max_prompt_seconds: 30.0,
    };

    fn key(body: &str) -> CacheKey {
        let req = GenerateRequest::parse(body.as_bytes(), LIMITS).expect("valid request");
        cache_key(None, "cosyvoice", "v1", &req)
    }

    #[test]
    fn equivalent_requests_share_a_key() {
        let base = key(r#"{"text":"café","mode":"sft","spk_id":"a"}"#);
        assert_eq!(
            base,
            key(r#"{ "spk_id" : "a", "mode":"sft",  "text":"  café " }"#)
        );
        assert_eq!(
            base,
            key("{\"text\":\"cafe\u{301}\",\"mode\":\"sft\",\"spk_id\":\"a\"}"),
            "NFD = NFC"
        );
        assert_eq!(
            base,
            key(r#"{"text":"café","mode":"sft","spk_id":"a","seed":0,"speed":1.0}"#),
            "defaults"
        );
    }

    #[test]
    fn every_field_that_matters_changes_the_key() {
        let base = r#"{"text":"hi","mode":"sft","spk_id":"a"}"#;
        let k = key(base);
        for other in [
            r#"{"text":"ho","mode":"sft","spk_id":"a"}"#,
            r#"{"text":"hi","mode":"sft","spk_id":"b"}"#,
            r#"{"text":"hi","mode":"sft","spk_id":"a","seed":1}"#,
            r#"{"text":"hi","mode":"sft","spk_id":"a","speed":1.5}"#,
            r#"{"text":"hi","mode":"sft","spk_id":"a","prompt_text":"x"}"#,
        ] {
            assert_ne!(k, key(other), "{other}");
        }
        let req = GenerateRequest::parse(base.as_bytes(), LIMITS).expect("valid");
        assert_ne!(k, cache_key(None, "cosyvoice", "v2", &req), "model_version");
        assert_ne!(k, cache_key(None, "other", "v1", &req), "pool");
        assert_ne!(k, cache_key(Some("school-a"), "cosyvoice", "v1", &req), "tenant");
        assert_ne!(
            cache_key(Some("a"), "p", "v", &req),
            cache_key(Some("b"), "p", "v", &req)
        );
    }

    #[test]
    fn field_boundaries_cannot_be_imitated() {
        let a = GenerateRequest::parse(br#"{"text":"a","mode":"sft","spk_id":"bc"}"#, LIMITS).expect("valid");
        let b = GenerateRequest::parse(br#"{"text":"ab","mode":"sft","spk_id":"c"}"#, LIMITS).expect("valid");
        assert_ne!(cache_key(None, "p", "", &a), cache_key(None, "p", "", &b));
    }
}
