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
//!
//! The approximate families (`degrade.ladder`, [`Families`]) are hashed the same way under their
//! own tags: `cosygate-same-voice-v1` over every field but seed and speed, and
//! `cosygate-same-text-v1` over tenant and text.

use super::entry::CacheKey;
use crate::api::GenerateRequest;
use crate::config::Rung;
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
    let seed = req.seed.to_string();
    let speed = req.speed.to_string();
    let mut fields = voice_fields(tenant, pool, model_version, req, prompt);
    fields.extend([("seed", seed.as_bytes()), ("speed", speed.as_bytes())]);
    canonical(b"cosygate-cache-v1", &fields)
}

/// Everything in the exact key but the seed and the speed, in the key's order.
fn voice_fields<'a>(
    tenant: Option<&'a str>,
    pool: &'a str,
    model_version: &'a str,
    req: &'a GenerateRequest,
    prompt: &'a str,
) -> Vec<(&'static str, &'a [u8])> {
    vec![
        ("tenant", tenant.unwrap_or("").as_bytes()),
        ("pool", pool.as_bytes()),
        ("model_version", model_version.as_bytes()),
        ("mode", req.mode.as_str().as_bytes()),
        ("text", req.text.as_bytes()),
        ("prompt_audio_sha256", prompt.as_bytes()),
        ("prompt_text", req.prompt_text.as_deref().unwrap_or("").as_bytes()),
        (
            "instruct_text",
            req.instruct_text.as_deref().unwrap_or("").as_bytes(),
        ),
        ("spk_id", req.spk_id.as_deref().unwrap_or("").as_bytes()),
    ]
}

/// sha256 over `tag`, then each field as `name 0x00 length 0x00 value`.
fn canonical(tag: &[u8], fields: &[(&str, &[u8])]) -> CacheKey {
    let mut h = Sha256::new();
    h.update(tag);
    for (name, value) in fields {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(value.len().to_string().as_bytes());
        h.update([0]);
        h.update(value);
    }
    CacheKey(h.finalize().into())
}

/// The keys of the approximate indexes an entry is filed under (`degrade.ladder`): its
/// family of entries in the same voice (the exact key's fields but seed and speed, within the
/// cache's scope, as the exact key) and in the same text (the caller's own tenant and the text,
/// whatever the cache's `share`: another tenant's entry may speak in a voice cloned from that
/// tenant's private sample). With `share: tenant` no rung crosses tenants; with `share: global`
/// only `same_voice` does, and only to callers who sent that very voice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Families {
    pub same_voice: CacheKey,
    pub same_text: CacheKey,
}

impl Families {
    /// `shared_scope`: the tenant when the cache is shared per tenant (as for the exact key);
    /// `caller`: the caller's own tenant (`Caller::cache_scope`), always.
    pub fn of(
        shared_scope: Option<&str>,
        caller: &str,
        pool: &str,
        model_version: &str,
        req: &GenerateRequest,
        prompt_sha256: &str,
    ) -> Self {
        let voice = voice_fields(shared_scope, pool, model_version, req, prompt_sha256);
        let text = [("tenant", caller.as_bytes()), ("text", req.text.as_bytes())];
        Families {
            same_voice: canonical(b"cosygate-same-voice-v1", &voice),
            same_text: canonical(b"cosygate-same-text-v1", &text),
        }
    }

    /// The family key of one rung.
    pub fn of_rung(&self, rung: Rung) -> CacheKey {
        match rung {
            Rung::SameVoice => self.same_voice,
            Rung::SameText => self.same_text,
        }
    }

    /// As a disk entry's description carries them (`"approximate"`, see [`describe`]).
    fn to_json(self) -> serde_json::Value {
        serde_json::json!({"same_voice": self.same_voice.hex(), "same_text": self.same_text.hex()})
    }

    /// Read back from a description (None: an entry stored without them, e.g. fallback audio
    /// or one promoted from Redis).
    pub fn from_description(params: &serde_json::Value) -> Option<Self> {
        let families = params.get("approximate")?;
        let key = |rung: &str| families.get(rung)?.as_str().and_then(CacheKey::from_hex);
        Some(Families {
            same_voice: key("same_voice")?,
            same_text: key("same_text")?,
        })
    }
}

/// The request's parameters as stored beside a disk entry (for operators; never the audio),
/// with its prompt's hex sha256 from [`key_and_prompt_sha256`] and the approximate families
/// it is filed under. Built only when a synthesis may be stored, never for a hit.
pub fn describe(
    pool: &str,
    req: &GenerateRequest,
    prompt_sha256: &str,
    families: Families,
) -> serde_json::Value {
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
        "approximate": families.to_json(),
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

    #[test]
    fn families_ignore_seed_and_speed_but_not_voice_tenant_or_text() {
        let families = |body: &str, tenant: Option<&str>| {
            let req = GenerateRequest::parse(body.as_bytes(), LIMITS).expect("valid");
            Families::of(
                tenant,
                tenant.unwrap_or("anonymous"),
                "p",
                "v",
                &req,
                &prompt_sha256(&req),
            )
        };
        let base = families(r#"{"text":"hi","mode":"sft","spk_id":"a"}"#, None);
        let other_seed = families(
            r#"{"text":"hi","mode":"sft","spk_id":"a","seed":7,"speed":1.5}"#,
            None,
        );
        assert_eq!(
            base, other_seed,
            "seed and speed are what the same-voice rung ignores"
        );
        let other_voice = families(r#"{"text":"hi","mode":"sft","spk_id":"b"}"#, None);
        assert_ne!(base.same_voice, other_voice.same_voice);
        assert_eq!(base.same_text, other_voice.same_text, "same text, any voice");
        let other_tenant = families(r#"{"text":"hi","mode":"sft","spk_id":"a"}"#, Some("t"));
        assert_ne!(base.same_voice, other_tenant.same_voice);
        assert_ne!(base.same_text, other_tenant.same_text, "no rung crosses tenants");
        let req =
            GenerateRequest::parse(br#"{"text":"hi","mode":"sft","spk_id":"a"}"#, LIMITS).expect("valid");
        let (x, y) = (
            Families::of(None, "x", "p", "v", &req, ""),
            Families::of(None, "y", "p", "v", &req, ""),
        );
        assert_eq!(x.same_voice, y.same_voice, "share: global shares the same voice");
        assert_ne!(
            x.same_text, y.same_text,
            "but never another tenant's voice for the same text"
        );
        let other_text = families(r#"{"text":"ho","mode":"sft","spk_id":"a"}"#, None);
        assert_ne!(base.same_text, other_text.same_text);
        let exact = cache_key(
            None,
            "p",
            "v",
            &GenerateRequest::parse(br#"{"text":"hi","mode":"sft","spk_id":"a"}"#, LIMITS).expect("valid"),
        );
        assert!(
            exact != base.same_voice && exact != base.same_text,
            "a family is not an entry's key"
        );
        let req =
            GenerateRequest::parse(br#"{"text":"hi","mode":"sft","spk_id":"a"}"#, LIMITS).expect("valid");
        let described = describe("p", &req, "", base);
        assert_eq!(
            Families::from_description(&described),
            Some(base),
            "a disk entry carries its families"
        );
    }
}
