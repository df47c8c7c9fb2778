//! OpenAI's `POST /v1/audio/speech` body, parsed strictly (unknown fields refused) and checked
//! with the same text rules and limits as `/generate` into an [`OpenAiSpeech`], or a
//! [`SpeechInvalid`] naming the field at fault (OpenAI's `param`); then, once the gateway has
//! looked `model` up (a pool) and `voice` up (the voice store, the pool's preset speakers), the
//! fields of our request ([`OpenAiSpeech::into_parts`]) or a [`VoiceRefusal`].

use super::checks::MAX_AUX_TEXT_CHARS;
use super::checks::{check_length, check_text, checked_speed, checked_text, json_error, trimmed};
use super::invalid::InvalidRequest;
use super::parts::{FieldNames, Parts, PromptAudio};
use super::request::RequestLimits;
use super::Mode;
use crate::voices::Voice;
use serde::Deserialize;

/// Longest `voice` (a preset speaker, a voice's name, or a voice id of 64 hex digits).
pub const MAX_VOICE_CHARS: usize = 128;

/// The audio formats `/v1/audio/speech` answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeechFormat {
    /// A RIFF/WAVE file (the default here; OpenAI's default, mp3, is not encoded).
    Wav,
    /// Raw signed 16-bit little-endian mono PCM at 24 kHz, as OpenAI sends `pcm`.
    Pcm,
}

/// How `/v1/audio/speech` streams its answer (OpenAI's `stream_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// The audio bytes as they are produced.
    Audio,
    /// Server-sent events: `speech.audio.delta` with base64 audio, then `speech.audio.done`.
    Sse,
}

/// The sample rate of OpenAI's `pcm` format.
pub const OPENAI_PCM_RATE: u32 = 24_000;

/// A validated `/v1/audio/speech` request. Text fields are trimmed and in NFC.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiSpeech {
    /// The pool's name.
    pub model: String,
    /// The text to speak (at most `max_text_chars` characters).
    pub input: String,
    /// A registered voice's id or name, or a preset speaker of the pool.
    pub voice: String,
    /// Instruct mode's instruction, when given.
    pub instructions: Option<String>,
    pub response_format: SpeechFormat,
    pub speed: f64,
    /// `stream_format`, when given.
    pub stream_format: Option<StreamFormat>,
}

/// A refused `/v1/audio/speech` body, and the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeechInvalid {
    pub error: InvalidRequest,
    /// OpenAI's `param`: the request field at fault, when one is.
    pub param: Option<&'static str>,
}

impl SpeechInvalid {
    fn of(param: &'static str) -> impl FnOnce(InvalidRequest) -> Self {
        move |error| Self {
            error,
            param: Some(param),
        }
    }
}

impl From<InvalidRequest> for SpeechInvalid {
    fn from(error: InvalidRequest) -> Self {
        Self { error, param: None }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpeech {
    model: String,
    input: String,
    voice: RawVoice,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    response_format: Option<String>,
    #[serde(default)]
    speed: Option<f64>,
    #[serde(default)]
    stream_format: Option<String>,
}

/// `voice` as OpenAI's clients send it: a name, or a custom voice object `{"id": "..."}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawVoice {
    Name(String),
    Object(VoiceObject),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VoiceObject {
    id: String,
}

impl OpenAiSpeech {
    /// Parses and validates a `/v1/audio/speech` body; runs once per request, before any pool
    /// or voice is looked up.
    pub fn parse(body: &[u8], limits: RequestLimits) -> Result<Self, SpeechInvalid> {
        if body.trim_ascii_start().first() != Some(&b'{') {
            return Err(InvalidRequest::malformed(
                "invalid_json",
                "the body must be a JSON object: {\"model\": ..., \"input\": ..., \"voice\": ...}",
            )
            .into());
        }
        let mut json = serde_json::Deserializer::from_slice(body);
        let raw: RawSpeech = serde_path_to_error::deserialize(&mut json).map_err(|e| {
            let param = field_of(e.path());
            let error = e.into_inner();
            let param = param.or_else(|| missing_field(&error.to_string()));
            SpeechInvalid {
                error: json_error(error, "/v1/audio/speech"),
                param,
            }
        })?;
        json.end()
            .map_err(|e| SpeechInvalid::from(json_error(e, "/v1/audio/speech")))?;
        let model = raw.model.trim().to_string();
        if model.is_empty() {
            return Err(SpeechInvalid::of("model")(InvalidRequest::malformed(
                "missing_field",
                "`model` is empty: name a pool (GET /v1/models lists them)",
            )));
        }
        let input =
            checked_text("input", &raw.input, limits.max_text_chars).map_err(SpeechInvalid::of("input"))?;
        let voice = match raw.voice {
            RawVoice::Name(name) => name,
            RawVoice::Object(VoiceObject { id }) => id,
        };
        let voice = trimmed(Some(voice)).ok_or_else(|| {
            SpeechInvalid::of("voice")(InvalidRequest::malformed(
                "missing_field",
                "`voice` is empty: name a registered voice (POST /v1/voices) or a preset speaker",
            ))
        })?;
        check_length("voice", &voice, MAX_VOICE_CHARS).map_err(SpeechInvalid::of("voice"))?;
        check_text("voice", &voice, false).map_err(SpeechInvalid::of("voice"))?;
        let instructions = trimmed(raw.instructions);
        if let Some(i) = &instructions {
            check_length("instructions", i, MAX_AUX_TEXT_CHARS).map_err(SpeechInvalid::of("instructions"))?;
            check_text("instructions", i, true).map_err(SpeechInvalid::of("instructions"))?;
        }
        let response_format = match raw.response_format.as_deref() {
            None | Some("wav") => SpeechFormat::Wav,
            Some("pcm") => SpeechFormat::Pcm,
            Some(other) => {
                let shown: String = other.chars().take(16).filter(|c| !c.is_control()).collect();
                return Err(SpeechInvalid::of("response_format")(InvalidRequest::malformed(
                    "unsupported_response_format",
                    format!(
                        "response_format {shown:?} is not available here: use \"wav\" (a WAV file) \
                         or \"pcm\" (raw 16-bit little-endian mono at 24000 Hz)"
                    ),
                )));
            }
        };
        let speed = checked_speed("speed", raw.speed.unwrap_or(1.0)).map_err(SpeechInvalid::of("speed"))?;
        let stream_format = match raw.stream_format.as_deref() {
            None => None,
            Some("audio") => Some(StreamFormat::Audio),
            Some("sse") => Some(StreamFormat::Sse),
            Some(other) => {
                let shown: String = other.chars().take(16).filter(|c| !c.is_control()).collect();
                return Err(SpeechInvalid::of("stream_format")(InvalidRequest::malformed(
                    "unsupported_stream_format",
                    format!(
                        "stream_format {shown:?} is not available here: use \"audio\" (the audio \
                         bytes as they are produced), \"sse\" (OpenAI's speech events) or leave \
                         it out (one complete answer)"
                    ),
                )));
            }
        };
        Ok(Self {
            model,
            input,
            voice,
            instructions,
            response_format,
            speed,
            stream_format,
        })
    }
}

/// Why `voice` (with `instructions`) cannot be synthesized on the chosen pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoiceRefusal {
    /// Neither a registered voice nor one of the pool's preset speakers (`presets`).
    #[error("no voice {voice:?} for pool {pool}")]
    NotFound {
        voice: String,
        pool: String,
        presets: Vec<String>,
    },
    /// `instructions` with a preset speaker: CosyVoice 2 and 3 instruct only a prompt voice.
    #[error("instructions need a registered voice, not preset speaker {voice:?}")]
    InstructionsNeedVoice { voice: String, pool: String },
}

impl OpenAiSpeech {
    /// Our request's fields for this speech: `registered` (the voice store's match for
    /// `voice`) gives zero_shot with its sample and transcript (cross_lingual when it has no
    /// transcript) or instruct with `instructions`; else a name in `presets` (the pool's
    /// `speakers`) gives sft; else [`VoiceRefusal::NotFound`]. Runs once per request, after the
    /// pool is chosen.
    pub fn into_parts(
        self,
        registered: Option<Voice>,
        pool: &str,
        presets: Option<&[String]>,
    ) -> Result<Parts, VoiceRefusal> {
        let mut parts = Parts {
            mode: Mode::Sft,
            text: self.input,
            prompt_audio: None,
            prompt_text: None,
            instruct_text: None,
            spk_id: None,
            seed: 0,
            speed: self.speed,
            stream: false,
            marker_in_text: false,
            names: FieldNames {
                text: "input",
                prompt_audio: "voice",
            },
        };
        let presets = presets.unwrap_or_default();
        if let Some(found) = registered {
            parts.prompt_audio = Some(PromptAudio::Checked(found.prompt_audio));
            match self.instructions {
                Some(instructions) => {
                    parts.mode = Mode::Instruct;
                    parts.instruct_text = Some(instructions);
                }
                None if found.prompt_text.trim().is_empty() => parts.mode = Mode::CrossLingual,
                None => {
                    parts.mode = Mode::ZeroShot;
                    parts.prompt_text = Some(found.prompt_text);
                }
            }
        } else if presets.contains(&self.voice) {
            if self.instructions.is_some() {
                return Err(VoiceRefusal::InstructionsNeedVoice {
                    voice: self.voice,
                    pool: pool.to_string(),
                });
            }
            parts.spk_id = Some(self.voice);
        } else {
            return Err(VoiceRefusal::NotFound {
                voice: self.voice,
                pool: pool.to_string(),
                presets: presets.to_vec(),
            });
        }
        Ok(parts)
    }
}

/// The fields of the request, as OpenAI names them.
const FIELDS: [&str; 7] = [
    "model",
    "input",
    "voice",
    "instructions",
    "response_format",
    "speed",
    "stream_format",
];

/// The request field a JSON error is in (a mistyped value; not an unknown field).
fn field_of(path: &serde_path_to_error::Path) -> Option<&'static str> {
    match path.iter().next() {
        Some(serde_path_to_error::Segment::Map { key }) => FIELDS.into_iter().find(|f| f == key),
        _ => None,
    }
}

/// The field a `missing field `input`` message names.
fn missing_field(msg: &str) -> Option<&'static str> {
    let name = msg.strip_prefix("missing field `")?.split('`').next()?;
    FIELDS.into_iter().find(|f| *f == name)
}

#[cfg(test)]
#[path = "openai_tests.rs"]
mod tests;
