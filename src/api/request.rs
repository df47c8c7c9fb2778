//! `POST /generate`: the JSON body, parsed strictly and checked against the limits into a
//! [`GenerateRequest`] that every later stage can trust, or an [`InvalidRequest`] saying what is wrong.

use super::checks::{decode_base64, json_error, trimmed};
use super::invalid::InvalidRequest;
use super::parts::{FieldNames, Parts, PromptAudio};
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;

/// The synthesis modes of the contract; each maps to one CosyVoice inference route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    ZeroShot,
    CrossLingual,
    Instruct,
    Sft,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::ZeroShot => "zero_shot",
            Mode::CrossLingual => "cross_lingual",
            Mode::Instruct => "instruct",
            Mode::Sft => "sft",
        }
    }

    pub(crate) fn needs_prompt_audio(self) -> bool {
        !matches!(self, Mode::Sft)
    }
}

/// The limits a request is checked against (`cosygate.limits`).
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_text_chars: usize,
    pub max_prompt_seconds: f64,
}

/// A validated synthesis request. Text fields are trimmed and in Unicode NFC; the prompt audio is decoded and
/// known to be a readable WAV within the limits.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub mode: Mode,
    pub text: String,
    pub prompt_audio: Option<Bytes>,
    pub prompt_text: Option<String>,
    pub instruct_text: Option<String>,
    pub spk_id: Option<String>,
    pub seed: u64,
    pub speed: f64,
    /// Send the audio as it is produced (`"stream": true`). How the answer is delivered, not
    /// what it is: not part of the cache key.
    pub stream: bool,
    /// The hex sha256 of `prompt_audio` when it is known already (a registered voice's id,
    /// checked by the voice store), so the cache key does not hash the sample again.
    pub(crate) prompt_sha256: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest<'a> {
    text: String,
    #[serde(default)]
    mode: Option<String>,
    /// Borrowed from the body when it has no JSON escapes (base64 has none, unless an encoder
    /// wrote `\/`): the largest field is not copied before it is decoded.
    #[serde(default, borrow)]
    prompt_audio: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    prompt_text: Option<String>,
    #[serde(default)]
    instruct_text: Option<String>,
    #[serde(default)]
    spk_id: Option<String>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    speed: Option<f64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    voice_id: Option<String>,
}

/// A `/generate` body as parsed: the request, and the registered voice it names instead of
/// `prompt_audio` and `prompt_text`, if any (resolved by the gateway, then [`GenerateBody::with_voice`]).
#[derive(Debug, Clone)]
pub struct GenerateBody {
    /// The request; without prompt audio while `voice_id` is unresolved.
    pub req: GenerateRequest,
    /// A voice id or a voice name (checked: 1-64 characters of `[A-Za-z0-9._-]`).
    pub voice_id: Option<String>,
}

impl GenerateBody {
    /// Fills the prompt from a registered voice (`id`: the sha256 of its sample, as the voice
    /// store checked it): its sample, and for zero_shot its transcript
    /// (the modes that take no transcript get none, so the cache key equals that of the same
    /// request sent with `prompt_audio`).
    pub fn with_voice(self, id: &str, prompt_audio: Bytes, prompt_text: &str) -> GenerateRequest {
        let mut req = self.req;
        req.prompt_audio = Some(prompt_audio);
        req.prompt_sha256 = Some(id.to_string());
        if req.mode == Mode::ZeroShot {
            req.prompt_text = Some(prompt_text.to_string());
        }
        req
    }
}

impl GenerateRequest {
    /// Parses and validates a request body that carries its own prompt; a `voice_id` is
    /// refused here (`unknown_voice`): only [`GenerateRequest::parse_body`]'s caller can resolve it.
    pub fn parse(body: &[u8], limits: RequestLimits) -> Result<Self, InvalidRequest> {
        let parsed = Self::parse_body(body, limits)?;
        if parsed.voice_id.is_some() {
            return Err(InvalidRequest::unprocessable(
                "unknown_voice",
                "`voice_id` cannot be resolved here; send `prompt_audio` and `prompt_text`",
            ));
        }
        Ok(parsed.req)
    }

    /// Parses and validates a `/generate` body, which may name a registered voice (`voice_id`)
    /// instead of carrying `prompt_audio` and `prompt_text`.
    pub fn parse_body(body: &[u8], limits: RequestLimits) -> Result<GenerateBody, InvalidRequest> {
        if body.trim_ascii_start().first() != Some(&b'{') {
            return Err(InvalidRequest::malformed(
                "invalid_json",
                "the body must be a JSON object: {\"text\": ...}",
            ));
        }
        let raw: RawRequest<'_> = serde_json::from_slice(body).map_err(|e| json_error(e, "/generate"))?;
        let mode = match raw.mode.as_deref() {
            None => Mode::ZeroShot,
            Some("zero_shot") => Mode::ZeroShot,
            Some("cross_lingual") => Mode::CrossLingual,
            Some("instruct") => Mode::Instruct,
            Some("sft") => Mode::Sft,
            Some(other) => {
                return Err(InvalidRequest::malformed(
                    "invalid_mode",
                    format!("mode {other:?} is not one of zero_shot, cross_lingual, instruct, sft"),
                ))
            }
        };
        let voice_id = match raw.voice_id {
            Some(v) => Some(check_voice_ref(
                &v,
                mode,
                raw.prompt_audio.is_some(),
                trimmed(raw.prompt_text.clone()).is_some(),
            )?),
            None => None,
        };
        let prompt_audio = match (&voice_id, raw.prompt_audio) {
            (Some(_), _) => Some(PromptAudio::Pending),
            // Decoded here, from the borrowed text; checked as a WAV by `from_parts`.
            (None, Some(b64)) if mode.needs_prompt_audio() => {
                Some(PromptAudio::Wav(Bytes::from(decode_base64(&b64)?)))
            }
            (None, _) => None,
        };
        let req = Self::from_parts(
            Parts {
                mode,
                text: raw.text,
                prompt_audio,
                prompt_text: raw.prompt_text,
                instruct_text: raw.instruct_text,
                spk_id: raw.spk_id,
                seed: raw.seed.unwrap_or(0),
                speed: raw.speed.unwrap_or(1.0),
                stream: raw.stream.unwrap_or(false),
                marker_in_text: false,
                names: FieldNames::GENERATE,
            },
            limits,
        )?;
        Ok(GenerateBody { req, voice_id })
    }
}

/// Checks a `voice_id` (a voice id or name) and that nothing else supplies the prompt.
fn check_voice_ref(
    value: &str,
    mode: Mode,
    has_audio: bool,
    has_text: bool,
) -> Result<String, InvalidRequest> {
    if has_audio || has_text {
        return Err(InvalidRequest::malformed(
            "conflicting_fields",
            "`voice_id` supplies the prompt: send it without `prompt_audio` and `prompt_text`",
        ));
    }
    if !mode.needs_prompt_audio() {
        return Err(InvalidRequest::malformed(
            "conflicting_fields",
            "mode sft speaks a preset speaker (`spk_id`) and takes no `voice_id`",
        ));
    }
    let value = value.trim();
    super::voice::check_name("voice_id", value)?;
    Ok(value.to_string())
}

impl GenerateRequest {
    /// The validated request as the JSON body of `POST /generate` (for `generate_json`
    /// backends): trimmed, NFC text and the prompt audio re-encoded as plain standard base64.
    pub fn to_json(&self) -> Vec<u8> {
        let body = serde_json::json!({
            "text": self.text,
            "mode": self.mode.as_str(),
            "prompt_audio": self.prompt_audio.as_ref().map(|a| base64::engine::general_purpose::STANDARD.encode(a)),
            "prompt_text": self.prompt_text,
            "instruct_text": self.instruct_text,
            "spk_id": self.spk_id,
            "seed": self.seed,
            "speed": self.speed,
        });
        let mut map = body.as_object().cloned().unwrap_or_default();
        map.retain(|_, v| !v.is_null());
        serde_json::to_vec(&map).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const LIMITS: RequestLimits = RequestLimits {
        max_text_chars: 200,
        max_prompt_seconds: 30.0,
    };

    #[test]
    fn prompt_audio_reads_the_same_borrowed_escaped_or_wrapped() {
        // Samples whose base64 holds '/' (0xFF bytes), which some JSON encoders escape as "\/".
        let wav = crate::api::wav::pcm16_to_wav(&[0xFF; 32000], 16000).expect("wav");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&wav);
        assert!(b64.contains('/'));
        let body =
            |audio: &str| format!(r#"{{"text":"Hi.","prompt_text":"A prompt.","prompt_audio":"{audio}"}}"#);
        let plain = GenerateRequest::parse(body(&b64).as_bytes(), LIMITS).expect("plain");
        let escaped =
            GenerateRequest::parse(body(&b64.replace('/', "\\/")).as_bytes(), LIMITS).expect("escaped");
        let wrapped: String = b64
            .as_bytes()
            .chunks(76)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect::<Vec<_>>()
            .join("\\r\\n");
        let wrapped = GenerateRequest::parse(body(&wrapped).as_bytes(), LIMITS).expect("wrapped");
        for req in [&plain, &escaped, &wrapped] {
            assert_eq!(req.prompt_audio.as_deref(), Some(&wav[..]));
        }
    }
}
