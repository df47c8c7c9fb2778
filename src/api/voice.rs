//! `POST /v1/voices`: the JSON body of a voice registration, parsed strictly and validated as
//! `/generate` validates a prompt (same decoding, WAV checks, transcript rule and codes) into a
//! [`VoiceRegistration`]; and the rule for voice names.

use super::checks::{check_text, decode_prompt_audio, json_error, MAX_AUX_TEXT_CHARS};
use super::invalid::InvalidRequest;
use super::{wav, RequestLimits};
use bytes::Bytes;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Longest voice name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// A validated voice registration.
#[derive(Debug, Clone)]
pub struct VoiceRegistration {
    /// 1-64 characters of `[A-Za-z0-9._-]`.
    pub name: String,
    /// The decoded WAV, checked as `/generate` checks `prompt_audio`.
    pub prompt_audio: Bytes,
    /// Trimmed, NFC, checked as `/generate` checks `prompt_text`; never empty.
    pub prompt_text: String,
    /// Lowercase hex sha256 of `prompt_audio`: the voice id, and the cache key's `prompt_audio_sha256`.
    pub id: String,
    /// The sample's length in seconds.
    pub seconds: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistration {
    name: String,
    prompt_audio: String,
    prompt_text: String,
}

impl VoiceRegistration {
    /// Parses and validates a `POST /v1/voices` body.
    pub fn parse(body: &[u8], limits: RequestLimits) -> Result<Self, InvalidRequest> {
        if body.trim_ascii_start().first() != Some(&b'{') {
            return Err(InvalidRequest::malformed(
                "invalid_json",
                "the body must be a JSON object: {\"name\": ..., \"prompt_audio\": ..., \"prompt_text\": ...}",
            ));
        }
        let raw: RawRegistration =
            serde_json::from_slice(body).map_err(|e| json_error(e, "POST /v1/voices"))?;
        let name = raw.name.trim().to_string();
        check_name("name", &name)?;
        if is_voice_id(&name) {
            return Err(InvalidRequest::malformed(
                "invalid_voice_name",
                "`name` may not look like a voice id (64 hex digits): choose a readable name",
            ));
        }
        let prompt_text = super::checks::nfc_trimmed(&raw.prompt_text);
        if prompt_text.is_empty() {
            return Err(InvalidRequest::malformed(
                "missing_field",
                "`prompt_text` is empty: give the transcript of the prompt audio (zero_shot needs it)",
            ));
        }
        let chars = prompt_text.chars().count();
        if chars > MAX_AUX_TEXT_CHARS {
            return Err(InvalidRequest::unprocessable(
                "field_too_long",
                format!("`prompt_text` has {chars} characters; the limit is {MAX_AUX_TEXT_CHARS}"),
            ));
        }
        check_text("prompt_text", &prompt_text, true)?;
        let prompt_audio = decode_prompt_audio(&raw.prompt_audio, limits)?;
        let seconds = wav::parse_wav(&prompt_audio)
            .map(|i| i.duration_secs())
            .unwrap_or_default();
        let id = hex::encode(Sha256::digest(&prompt_audio));
        Ok(Self {
            name,
            prompt_audio,
            prompt_text,
            id,
            seconds,
        })
    }
}

/// A voice name or id as `field`: 1-64 characters of `[A-Za-z0-9._-]` (a voice id, 64 hex
/// digits, is one too).
pub fn check_name(field: &str, value: &str) -> Result<(), InvalidRequest> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME_CHARS
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidRequest::malformed(
            "invalid_voice_name",
            format!(
                "`{field}` must be 1 to {MAX_NAME_CHARS} characters of letters, digits, '.', '_' and '-'"
            ),
        ))
    }
}

/// Whether `s` has the shape of a voice id (64 lowercase hex digits).
pub fn is_voice_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use unicode_normalization::UnicodeNormalization;

    const LIMITS: RequestLimits = RequestLimits {
        max_text_chars: 200,
        max_prompt_seconds: 30.0,
    };

    fn wav_bytes(rate: u32, seconds: f64) -> Vec<u8> {
        let frames = (f64::from(rate) * seconds) as usize;
        wav::pcm16_to_wav(&vec![0u8; frames * 2], rate).expect("wav")
    }

    fn body(name: &str, audio: &[u8], text: &str) -> String {
        serde_json::json!({
            "name": name,
            "prompt_audio": base64::engine::general_purpose::STANDARD.encode(audio),
            "prompt_text": text,
        })
        .to_string()
    }

    fn code(body: &str) -> &'static str {
        VoiceRegistration::parse(body.as_bytes(), LIMITS)
            .expect_err("refused")
            .code
    }

    #[test]
    fn a_valid_registration_gets_the_sha256_of_its_audio_as_id() {
        let audio = wav_bytes(16000, 1.0);
        let reg = VoiceRegistration::parse(body(" anna.v1 ", &audio, " Hello\u{0301} ").as_bytes(), LIMITS)
            .expect("valid");
        assert_eq!(reg.name, "anna.v1");
        assert_eq!(reg.id, hex::encode(Sha256::digest(&audio)));
        assert!(is_voice_id(&reg.id));
        assert_eq!(reg.prompt_audio.as_ref(), audio.as_slice());
        assert_eq!(reg.prompt_text, "Hello\u{0301}".nfc().collect::<String>());
        assert!((reg.seconds - 1.0).abs() < 1e-6);
    }

    #[test]
    fn refusals_use_the_generate_codes() {
        let good = wav_bytes(16000, 1.0);
        assert_eq!(code(&body("a", &good, "")), "missing_field");
        assert_eq!(code(&body("", &good, "x")), "invalid_voice_name");
        assert_eq!(code(&body("a b", &good, "x")), "invalid_voice_name");
        assert_eq!(code(&body(&"a".repeat(65), &good, "x")), "invalid_voice_name");
        assert_eq!(code(&body("a", b"not a wav", "x")), "invalid_prompt_audio");
        assert_eq!(
            code(&body("a", &wav_bytes(8000, 1.0), "x")),
            "sample_rate_too_low"
        );
        assert_eq!(code(&body("a", &wav_bytes(16000, 31.0), "x")), "prompt_too_long");
        assert_eq!(code(&body("a", &good, "<b>x</b>")), "forbidden_characters");
        assert_eq!(
            code(r#"{"name":"a","prompt_audio":"@@@","prompt_text":"x"}"#),
            "invalid_base64"
        );
        assert_eq!(code(r#"{"name":"a","prompt_text":"x"}"#), "missing_field");
        assert_eq!(
            code(r#"{"name":"a","prompt_audio":"","prompt_text":"x","x":1}"#),
            "unknown_field"
        );
        assert_eq!(code("[]"), "invalid_json");
    }

    #[test]
    fn generate_takes_a_voice_id_instead_of_the_prompt() {
        use crate::api::{GenerateRequest, Mode};
        let parsed =
            GenerateRequest::parse_body(br#"{"text":"Hi.","voice_id":" anna "}"#, LIMITS).expect("valid");
        assert_eq!(parsed.voice_id.as_deref(), Some("anna"));
        assert!(parsed.req.prompt_audio.is_none());
        let audio = Bytes::from(wav_bytes(16000, 1.0));
        let req = parsed.clone().with_voice(
            &hex::encode(sha2::Sha256::digest(&audio)),
            audio.clone(),
            "Transcript.",
        );
        assert_eq!(req.prompt_audio, Some(audio.clone()));
        assert_eq!(req.prompt_text.as_deref(), Some("Transcript."));
        // cross_lingual takes no transcript: the voice gives only its sample.
        let cross =
            GenerateRequest::parse_body(br#"{"text":"Hi.","mode":"cross_lingual","voice_id":"a"}"#, LIMITS)
                .expect("valid");
        let req = cross.with_voice(&hex::encode(sha2::Sha256::digest(&audio)), audio, "Transcript.");
        assert_eq!((req.mode, req.prompt_text), (Mode::CrossLingual, None));
        // Only parse_body's caller can resolve a voice.
        let refused =
            GenerateRequest::parse(br#"{"text":"Hi.","voice_id":"anna"}"#, LIMITS).expect_err("no store");
        assert_eq!(refused.code, "unknown_voice");

        let code = |body: &str| {
            GenerateRequest::parse_body(body.as_bytes(), LIMITS)
                .expect_err("refused")
                .code
        };
        assert_eq!(
            code(r#"{"text":"Hi.","voice_id":"a","prompt_text":"t"}"#),
            "conflicting_fields"
        );
        assert_eq!(
            code(r#"{"text":"Hi.","voice_id":"a","prompt_audio":"AAAA"}"#),
            "conflicting_fields"
        );
        assert_eq!(
            code(r#"{"text":"Hi.","voice_id":"a","mode":"sft","spk_id":"x"}"#),
            "conflicting_fields"
        );
        assert_eq!(code(r#"{"text":"Hi.","voice_id":"a/b"}"#), "invalid_voice_name");
        assert_eq!(code(r#"{"text":"Hi.","voice_id":""}"#), "invalid_voice_name");
        assert_eq!(code(r#"{"text":"Hi."}"#), "missing_field");
    }

    #[test]
    fn a_name_may_not_look_like_a_voice_id() {
        let id = "a".repeat(64);
        assert!(is_voice_id(&id) && !is_voice_id(&"A".repeat(64)) && !is_voice_id("abc"));
        let good = wav_bytes(16000, 1.0);
        assert_eq!(code(&body(&id, &good, "x")), "invalid_voice_name");
    }
}
