//! `POST /generate`: the JSON body, parsed strictly and checked against the limits into a
//! [`GenerateRequest`] that every later stage can trust, or an [`InvalidRequest`] saying what is wrong.

use super::invalid::InvalidRequest;
use super::wav;
use super::END_OF_PROMPT;
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
}

/// A request's fields as a route read them, before validation: what
/// [`GenerateRequest::from_parts`] checks. Every route (`/generate`'s JSON, CosyVoice's own
/// form routes) builds one, so all of them share one set of checks and error codes.
#[derive(Debug, Clone)]
pub struct Parts {
    pub mode: Mode,
    pub text: String,
    /// The prompt WAV file, as the route received it.
    pub prompt_audio: Option<PromptAudio>,
    pub prompt_text: Option<String>,
    pub instruct_text: Option<String>,
    pub spk_id: Option<String>,
    pub seed: u64,
    pub speed: f64,
    /// Send the audio as it is produced (see [`GenerateRequest::stream`]).
    pub stream: bool,
    /// Whether `text` may carry CosyVoice3's `<|endofprompt|>` (CosyVoice's own cross_lingual
    /// and sft routes, where its clients put the system prompt in front of the text). The text
    /// limit then counts only what follows the marker; what precedes it is held to
    /// [`MAX_AUX_TEXT_CHARS`].
    pub marker_in_text: bool,
    /// The names the route's clients know the fields by, for messages.
    pub names: FieldNames,
}

/// Prompt audio as a route received it; decoded and checked by [`GenerateRequest::from_parts`].
#[derive(Debug, Clone)]
pub enum PromptAudio {
    /// Standard base64 of a WAV file (`/generate`).
    Base64(String),
    /// A WAV file's bytes (a form's file part).
    Wav(Bytes),
}

/// What a route calls the fields that messages name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldNames {
    pub text: &'static str,
    pub prompt_audio: &'static str,
}

impl FieldNames {
    /// `/generate`'s names.
    pub const GENERATE: FieldNames = FieldNames {
        text: "text",
        prompt_audio: "prompt_audio",
    };
}

impl GenerateRequest {
    /// Parses and validates a `/generate` body (runs on every `/generate` request, off the
    /// worker threads when large).
    pub fn parse(body: &[u8], limits: RequestLimits) -> Result<Self, InvalidRequest> {
        if body.trim_ascii_start().first() != Some(&b'{') {
            return Err(InvalidRequest::malformed(
                "invalid_json",
                "the body must be a JSON object: {\"text\": ...}",
            ));
        }
        let raw: RawRequest = serde_json::from_slice(body).map_err(json_error)?;
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
        Self::from_parts(
            Parts {
                mode,
                text: raw.text,
                prompt_audio: raw.prompt_audio.map(PromptAudio::Base64),
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
        )
    }

    /// Validates a request's fields, whichever route read them: trims and NFC-normalizes the
    /// texts, checks them (length, forbidden characters) and the prompt WAV against `limits`,
    /// and that the mode has what it needs.
    pub fn from_parts(parts: Parts, limits: RequestLimits) -> Result<Self, InvalidRequest> {
        let Parts {
            mode,
            names,
            marker_in_text,
            ..
        } = parts;
        let text: String = parts.text.trim().nfc().collect();
        let (prefix, spoken) = match text.rfind(END_OF_PROMPT) {
            Some(i) if marker_in_text => (&text[..i], text[i + END_OF_PROMPT.len()..].trim()),
            _ => ("", text.as_str()),
        };
        if spoken.is_empty() {
            return Err(InvalidRequest::unprocessable(
                "empty_text",
                format!("`{}` is empty: give the words to speak", names.text),
            ));
        }
        if spoken.len() != text.len() && !spoken.chars().any(char::is_alphanumeric) {
            // The backend's own check (`precheck`) would see the letters of the system prompt.
            return Err(InvalidRequest::unprocessable(
                "nothing_to_speak",
                format!(
                    "`{}` has no letter or digit after {END_OF_PROMPT}, so the model has nothing to say: send words",
                    names.text
                ),
            ));
        }
        let chars = spoken.chars().count();
        if chars > limits.max_text_chars {
            return Err(InvalidRequest::unprocessable(
                "text_too_long",
                format!(
                    "`{}` has {chars} characters; the limit is {}: split it into several requests",
                    names.text, limits.max_text_chars
                ),
            ));
        }
        let prefix_chars = prefix.chars().count();
        if prefix_chars > MAX_AUX_TEXT_CHARS {
            return Err(InvalidRequest::unprocessable(
                "field_too_long",
                format!(
                    "`{}` has {prefix_chars} characters before {END_OF_PROMPT}; the limit is {MAX_AUX_TEXT_CHARS}",
                    names.text
                ),
            ));
        }
        let speed = parts.speed;
        if !(0.5..=2.0).contains(&speed) {
            return Err(InvalidRequest::unprocessable(
                "speed_out_of_range",
                format!("`speed` is {speed}; it must be between 0.5 and 2.0"),
            ));
        }
        let trimmed = |s: Option<String>| {
            s.map(|s| s.trim().nfc().collect::<String>())
                .filter(|s| !s.is_empty())
        };
        let prompt_text = trimmed(parts.prompt_text);
        let instruct_text = trimmed(parts.instruct_text);
        let spk_id = trimmed(parts.spk_id);
        check_text(names.text, &text, marker_in_text)?;
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
        let prompt_audio = match (parts.prompt_audio, mode.needs_prompt_audio()) {
            (Some(PromptAudio::Base64(b64)), true) => Some(check_prompt_audio(
                decode_base64(&b64)?,
                names.prompt_audio,
                limits,
            )?),
            (Some(PromptAudio::Wav(wav)), true) => Some(check_prompt_audio(wav, names.prompt_audio, limits)?),
            (None, true) => return Err(missing(names.prompt_audio, mode)),
            (_, false) => None,
        };
        if mode == Mode::Instruct && instruct_text.is_none() {
            return Err(missing("instruct_text", mode));
        }
        if mode == Mode::Sft && spk_id.is_none() {
            return Err(missing("spk_id", mode));
        }
        Ok(Self {
            mode,
            text,
            prompt_audio,
            prompt_text,
            instruct_text,
            spk_id,
            seed: parts.seed,
            speed,
            stream: parts.stream,
        })
    }
}

/// Longest `prompt_text` or `instruct_text`, in characters.
pub const MAX_AUX_TEXT_CHARS: usize = 1000;
/// Longest `spk_id`, in characters.
pub const MAX_SPK_ID_CHARS: usize = 64;

fn check_length(field: &str, value: &str, max: usize) -> Result<(), InvalidRequest> {
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
        value.replace(END_OF_PROMPT, "")
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

/// Maps serde_json's failures to stable codes.
fn json_error(e: serde_json::Error) -> InvalidRequest {
    use serde_json::error::Category;
    let msg = e.to_string();
    match e.classify() {
        Category::Data if msg.starts_with("unknown field") => InvalidRequest::malformed(
            "unknown_field",
            format!("{msg}; see the README for the fields of /generate"),
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
fn decode_base64(b64: &str) -> Result<Vec<u8>, InvalidRequest> {
    let compact: String = b64.chars().filter(|c| *c != '\n' && *c != '\r').collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| {
            InvalidRequest::malformed(
                "invalid_base64",
                format!("`prompt_audio` is not standard base64 with padding: {e}"),
            )
        })
}

/// Checks that prompt audio (the field `field`) is a readable WAV within the limits.
fn check_prompt_audio(
    bytes: impl Into<Bytes>,
    field: &str,
    limits: RequestLimits,
) -> Result<Bytes, InvalidRequest> {
    let bytes: Bytes = bytes.into();
    let info = wav::parse_wav(&bytes).map_err(|e| {
        InvalidRequest::malformed(
            "invalid_prompt_audio",
            format!("`{field}` is not a usable WAV file: {e}"),
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
    Ok(bytes)
}
