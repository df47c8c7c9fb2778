//! One validation for every route: a request's fields as a route read them ([`Parts`]: from
//! `/generate`'s JSON, OpenAI's speech request, CosyVoice's own forms) become a
//! [`GenerateRequest`] through [`GenerateRequest::from_parts`], with one set of checks and
//! error codes.

use super::checks::{self, check_length, check_prompt_audio, check_text, decode_base64, missing};
use super::checks::{MAX_AUX_TEXT_CHARS, MAX_SPK_ID_CHARS};
use super::invalid::InvalidRequest;
use super::request::{GenerateRequest, Mode, RequestLimits};
use super::END_OF_PROMPT;
use bytes::Bytes;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptAudio {
    /// Standard base64 of a WAV file (`/generate`).
    Base64(String),
    /// A WAV file's bytes (a form's file part).
    Wav(Bytes),
    /// A WAV checked already (a registered voice's sample).
    Checked(Bytes),
    /// A registered voice the gateway resolves after parsing (`/generate`'s `voice_id`).
    Pending,
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
        let text = checks::nfc_trimmed(&parts.text);
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
        let trimmed = checks::trimmed;
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
            (Some(PromptAudio::Checked(wav)), true) => Some(wav),
            (Some(PromptAudio::Pending), true) => None,
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
            prompt_sha256: None,
        })
    }
}
