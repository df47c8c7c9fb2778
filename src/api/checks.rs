//! The checks every way of building a request shares (`/generate`'s JSON, OpenAI's speech
//! request, CosyVoice's own forms, voice registration): text rules (length, the injection
//! rule), the speed range, prompt audio (base64, a usable WAV within the limits), and stable
//! codes for serde_json's failures. Each refusal is an [`InvalidRequest`] with the field's name.

use super::invalid::InvalidRequest;
use super::request::{Mode, RequestLimits};
use super::{wav, END_OF_PROMPT};
use base64::Engine;
use bytes::Bytes;
use unicode_normalization::UnicodeNormalization;

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

/// `s` trimmed and in NFC. Text that is NFC already (the quick check says so for almost all
/// of it) is copied as it is, not rebuilt character by character.
pub fn nfc_trimmed(s: &str) -> String {
    let s = s.trim();
    match unicode_normalization::is_nfc_quick(s.chars()) {
        unicode_normalization::IsNormalized::Yes => s.to_owned(),
        _ => s.nfc().collect(),
    }
}

/// An optional text field trimmed and in NFC; empty counts as absent.
pub fn trimmed(s: Option<String>) -> Option<String> {
    s.map(|s| nfc_trimmed(&s)).filter(|s| !s.is_empty())
}

/// The text to speak (`field`: `text`, or OpenAI's `input`), trimmed and in NFC, refused when
/// empty, longer than `max_chars` characters, or carrying forbidden characters.
pub fn checked_text(field: &str, raw: &str, max_chars: usize) -> Result<String, InvalidRequest> {
    let text = nfc_trimmed(raw);
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

pub(super) fn missing(field: &str, mode: Mode) -> InvalidRequest {
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

/// Decodes standard base64 prompt audio and checks it is a usable WAV within the limits.
pub fn decode_prompt_audio(b64: &str, limits: RequestLimits) -> Result<Bytes, InvalidRequest> {
    check_prompt_audio(decode_base64(b64)?, "prompt_audio", limits)
}

/// Decodes standard base64 (padding required). Line breaks from MIME-style wrapping are
/// ignored; any other whitespace or alphabet is refused.
pub fn decode_base64(b64: &str) -> Result<Vec<u8>, InvalidRequest> {
    let raw = b64.as_bytes();
    let line_break = |b: &u8| *b == b'\n' || *b == b'\r';
    let decoded = if memchr::memchr2(b'\n', b'\r', raw).is_some() {
        let compact: Vec<u8> = raw.iter().copied().filter(|b| !line_break(b)).collect();
        base64::engine::general_purpose::STANDARD.decode(compact)
    } else {
        base64::engine::general_purpose::STANDARD.decode(raw)
    };
    decoded.map_err(|e| {
        InvalidRequest::malformed(
            "invalid_base64",
            format!("`prompt_audio` is not standard base64 with padding: {e}"),
        )
    })
}

/// Checks that prompt audio (the field `field`) is a readable WAV within the limits.
pub fn check_prompt_audio(
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
