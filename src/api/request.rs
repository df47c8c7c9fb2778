//! `POST /generate`: the JSON body, parsed strictly and checked against the limits into a
//! [`GenerateRequest`] that every later stage can trust, or an [`InvalidRequest`] saying what is wrong.

use super::invalid::InvalidRequest;
use super::wav;
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;

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

    fn needs_prompt_audio(self) -> bool {
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    text: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    prompt_audio: Option<String>,
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
    /// Fills the prompt from a registered voice: its sample, and for zero_shot its transcript
    /// (the modes that take no transcript get none, so the cache key equals that of the same
    /// request sent with `prompt_audio`).
    pub fn with_voice(self, prompt_audio: Bytes, prompt_text: &str) -> GenerateRequest {
        let mut req = self.req;
        req.prompt_audio = Some(prompt_audio);
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
        let raw: RawRequest = serde_json::from_slice(body).map_err(|e| json_error(e, "/generate"))?;
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
        let fields = Fields::check(
            &raw.text,
            raw.speed,
            [raw.prompt_text, raw.instruct_text, raw.spk_id],
            limits,
        )?;
        let voice_id = match raw.voice_id {
            Some(v) => Some(check_voice_ref(
                &v,
                mode,
                raw.prompt_audio.is_some(),
                fields.prompt_text.is_some(),
            )?),
            None => None,
        };
        let prompt_audio = match (raw.prompt_audio, mode.needs_prompt_audio()) {
            (Some(b64), true) => Some(decode_prompt_audio(&b64, limits)?),
            (None, true) if voice_id.is_some() => None,
            (None, true) => return Err(missing("prompt_audio", mode)),
            (_, false) => None,
        };
        let mut req = fields.finish(mode, prompt_audio, raw.seed.unwrap_or(0))?;
        req.stream = raw.stream.unwrap_or(false);
        Ok(GenerateBody { req, voice_id })
    }

    /// Builds a request from fields a route other than `/generate` gathered (OpenAI's
    /// `/v1/audio/speech`: `input`, a voice's prompt, `instructions`), with the same checks as
    /// [`GenerateRequest::parse`]. `prompt_audio` must already be a validated WAV (a registered
    /// voice's sample).
    pub fn from_parts(parts: RequestParts, limits: RequestLimits) -> Result<Self, InvalidRequest> {
        let fields = Fields::check(
            &parts.text,
            Some(parts.speed),
            [parts.prompt_text, parts.instruct_text, parts.spk_id],
            limits,
        )?;
        let prompt_audio = match (parts.prompt_audio, parts.mode.needs_prompt_audio()) {
            (Some(audio), true) => Some(audio),
            (None, true) => return Err(missing("prompt_audio", parts.mode)),
            (_, false) => None,
        };
        fields.finish(parts.mode, prompt_audio, parts.seed)
    }
}

/// The fields of a request before validation, as a route other than `/generate` gathers them
/// (see [`GenerateRequest::from_parts`]).
#[derive(Debug, Clone)]
pub struct RequestParts {
    pub mode: Mode,
    pub text: String,
    pub prompt_audio: Option<Bytes>,
    pub prompt_text: Option<String>,
    pub instruct_text: Option<String>,
    pub spk_id: Option<String>,
    pub seed: u64,
    pub speed: f64,
}

/// The text fields and speed of a request, checked (trimmed, NFC, within limits, no
/// forbidden characters); what every way of building a [`GenerateRequest`] shares.
struct Fields {
    text: String,
    speed: f64,
    prompt_text: Option<String>,
    instruct_text: Option<String>,
    spk_id: Option<String>,
}

impl Fields {
    /// `aux` is `[prompt_text, instruct_text, spk_id]` as sent.
    fn check(
        text: &str,
        speed: Option<f64>,
        aux: [Option<String>; 3],
        limits: RequestLimits,
    ) -> Result<Self, InvalidRequest> {
        let text = checked_text("text", text, limits.max_text_chars)?;
        let speed = checked_speed("speed", speed.unwrap_or(1.0))?;
        let [prompt_text, instruct_text, spk_id] = aux.map(trimmed);
        for (field, value) in [("prompt_text", &prompt_text), ("instruct_text", &instruct_text)] {
            if let Some(value) = value {
                check_length(field, value, MAX_AUX_TEXT_CHARS)?;
                check_text(field, value, true)?;
            }
        }
        if let Some(spk) = &spk_id {
            check_length("spk_id", spk, MAX_SPK_ID_CHARS)?;
            check_text("spk_id", spk, false)?;
        }
        Ok(Self {
            text,
            speed,
            prompt_text,
            instruct_text,
            spk_id,
        })
    }

    /// Checks what `mode` requires and builds the request.
    fn finish(
        self,
        mode: Mode,
        prompt_audio: Option<Bytes>,
        seed: u64,
    ) -> Result<GenerateRequest, InvalidRequest> {
        if mode == Mode::Instruct && self.instruct_text.is_none() {
            return Err(missing("instruct_text", mode));
        }
        if mode == Mode::Sft && self.spk_id.is_none() {
            return Err(missing("spk_id", mode));
        }
        Ok(GenerateRequest {
            mode,
            text: self.text,
            prompt_audio,
            prompt_text: self.prompt_text,
            instruct_text: self.instruct_text,
            spk_id: self.spk_id,
            seed,
            speed: self.speed,
            stream: false,
        })
    }
}

/// An optional text field trimmed and in NFC; empty counts as absent.
pub fn trimmed(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().nfc().collect::<String>())
        .filter(|s| !s.is_empty())
}

/// The text to speak (`field`: `text`, or OpenAI's `input`), trimmed and in NFC, refused when
/// empty, longer than `max_chars` characters, or carrying forbidden characters.
pub fn checked_text(field: &str, raw: &str, max_chars: usize) -> Result<String, InvalidRequest> {
    let text: String = raw.trim().nfc().collect();
    if text.is_empty() {
        return Err(InvalidRequest::unprocessable(
            "empty_text",
            format!("`{field}` is empty: give the words to speak"),
        ));
    }
    let chars = text.chars().count();
    if chars > max_chars {
        return Err(InvalidRequest::unprocessable(
            "text_too_long",
            format!(
                "`{field}` has {chars} characters; the limit is {max_chars}: split it into several requests"
            ),
        ));
    }
    check_text(field, &text, false)?;
    Ok(text)
}

/// A speaking rate within 0.5..=2.0 (what CosyVoice's speed control supports).
pub fn checked_speed(field: &str, speed: f64) -> Result<f64, InvalidRequest> {
    if !(0.5..=2.0).contains(&speed) {
        return Err(InvalidRequest::unprocessable(
            "speed_out_of_range",
            format!("`{field}` is {speed}; it must be between 0.5 and 2.0"),
        ));
    }
    Ok(speed)
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

/// Longest `prompt_text` or `instruct_text`, in characters.
pub const MAX_AUX_TEXT_CHARS: usize = 1000;
/// Longest `spk_id`, in characters.
pub const MAX_SPK_ID_CHARS: usize = 64;

/// Refuses a text field longer than `max` characters (422 `field_too_long`).
pub fn check_length(field: &str, value: &str, max: usize) -> Result<(), InvalidRequest> {
    let chars = value.chars().count();
    if chars > max {
        return Err(InvalidRequest::unprocessable(
            "field_too_long",
            format!("`{field}` has {chars} characters; the limit is {max}"),
        ));
    }
    Ok(())
}

/// The injection rule for text that reaches the model. Refused: control characters other than
/// newline and tab; Unicode bidirectional overrides and isolates (U+202A..U+202E,
/// U+2066..U+2069), which make text read differently from what it says; markup the backend or
/// a page showing the text would interpret: `<` followed by a letter, `/`, `!` or `?` (HTML,
/// XML, SSML tags, comments); and CosyVoice control tokens `<|...|>`, except `<|endofprompt|>`
/// where the model expects it (`allow_end_of_prompt`: prompt_text, instruct_text).
/// CosyVoice's bracketed cues such as `[breath]` and `[laughter]` are allowed.
pub fn check_text(field: &str, value: &str, allow_end_of_prompt: bool) -> Result<(), InvalidRequest> {
    let refuse = |what: String| {
        Err(InvalidRequest::malformed(
            "forbidden_characters",
            format!("`{field}` contains {what}; send plain text (see the README's injection rule)"),
        ))
    };
    if let Some(c) = value.chars().find(|c| {
        (c.is_control() && *c != '\n' && *c != '\t')
            || ('\u{202A}'..='\u{202E}').contains(c)
            || ('\u{2066}'..='\u{2069}').contains(c)
    }) {
        return refuse(format!("the control character U+{:04X}", u32::from(c)));
    }
    let stripped = if allow_end_of_prompt {
        value.replace(crate::api::END_OF_PROMPT, "")
    } else {
        value.to_string()
    };
    if stripped.contains("<|") || stripped.contains("|>") {
        return refuse("a CosyVoice control token (<|...|>)".into());
    }
    let bytes = stripped.as_bytes();
    if let Some(i) = bytes
        .windows(2)
        .position(|w| w[0] == b'<' && (w[1].is_ascii_alphabetic() || matches!(w[1], b'/' | b'!' | b'?')))
    {
        let tag: String = stripped[i..].chars().take(12).collect();
        return refuse(format!("markup ({tag:?}...)"));
    }
    Ok(())
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

fn missing(field: &str, mode: Mode) -> InvalidRequest {
    InvalidRequest::malformed(
        "missing_field",
        format!("`{field}` is required for mode {}", mode.as_str()),
    )
}

/// Maps serde_json's failures to stable codes (`route` names whose fields the README lists).
pub fn json_error(e: serde_json::Error, route: &str) -> InvalidRequest {
    use serde_json::error::Category;
    let msg = e.to_string();
    match e.classify() {
        Category::Data if msg.starts_with("unknown field") => InvalidRequest::malformed(
            "unknown_field",
            format!("{msg}; see the README for the fields of {route}"),
        ),
        Category::Data if msg.starts_with("missing field") => InvalidRequest::malformed("missing_field", msg),
        Category::Data if msg.starts_with("duplicate field") => {
            InvalidRequest::malformed("duplicate_field", msg)
        }
        Category::Data => InvalidRequest::malformed("invalid_field", msg),
        Category::Syntax | Category::Eof | Category::Io => {
            InvalidRequest::malformed("invalid_json", format!("the body is not valid JSON: {msg}"))
        }
    }
}

/// Decodes standard base64 (padding required). Line breaks from MIME-style wrapping are
/// ignored; any other whitespace or alphabet is refused.
pub(super) fn decode_prompt_audio(b64: &str, limits: RequestLimits) -> Result<Bytes, InvalidRequest> {
    let compact: String = b64.chars().filter(|c| *c != '\n' && *c != '\r').collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| {
            InvalidRequest::malformed(
                "invalid_base64",
                format!("`prompt_audio` is not standard base64 with padding: {e}"),
            )
        })?;
    let info = wav::parse_wav(&bytes).map_err(|e| {
        InvalidRequest::malformed(
            "invalid_prompt_audio",
            format!("`prompt_audio` is not a usable WAV file: {e}"),
        )
    })?;
    if info.sample_rate < 16000 {
        return Err(InvalidRequest::unprocessable(
            "sample_rate_too_low",
            format!(
                "prompt audio is sampled at {} Hz; CosyVoice needs at least 16000 Hz",
                info.sample_rate
            ),
        ));
    }
    if info.duration_secs() > limits.max_prompt_seconds {
        return Err(InvalidRequest::unprocessable(
            "prompt_too_long",
            format!(
                "prompt audio lasts {:.2} s; the limit is {} s (3 to 10 s of clean speech works best)",
                info.duration_secs(),
                limits.max_prompt_seconds
            ),
        ));
    }
    Ok(Bytes::from(bytes))
}
