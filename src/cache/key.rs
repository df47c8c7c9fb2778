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
    let mut h = Sha256::new();
    h.update(b"cosygate-cache-v1");
    let mut field = |name: &str, value: &[u8]| {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(value.len().to_string().as_bytes());
        h.update([0]);
        h.update(value);
    };
    let prompt = req
        .prompt_audio
        .as_ref()
        .map(|a| hex::encode(Sha256::digest(a)))
        .unwrap_or_default();
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

/// The request's parameters as stored beside a disk entry (for operators; never the audio).
pub fn describe(pool: &str, req: &GenerateRequest) -> serde_json::Value {
    serde_json::json!({
        "pool": pool,
        "mode": req.mode.as_str(),
        "text": req.text,
        "prompt_audio_sha256": req.prompt_audio.as_ref().map(|a| hex::encode(Sha256::digest(a))),
        "prompt_text": req.prompt_text,
        "instruct_text": req.instruct_text,
        "spk_id": req.spk_id,
        "seed": req.seed,
        "speed": req.speed,
    })
}
