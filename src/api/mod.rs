//! The contract's types: the `/generate` request and its validation (refusals typed as
//! [`InvalidRequest`]), OpenAI's speech request, CosyVoice's own forms, registered voices, the
//! checks they share (`checks`, `parts`), and the WAV helpers. Everything below the
//! gateway speaks in these types; none of them knows HTTP statuses.

pub mod checks;
pub mod cosyvoice_form;
pub mod invalid;
pub mod openai;
pub mod parts;
pub mod request;
pub mod voice;
pub mod wav;

pub use checks::{MAX_AUX_TEXT_CHARS, MAX_SPK_ID_CHARS};
pub use invalid::{InvalidKind, InvalidRequest};
pub use parts::{FieldNames, Parts, PromptAudio};
pub use request::{GenerateBody, GenerateRequest, Mode, RequestLimits};
pub use voice::VoiceRegistration;

/// CosyVoice3's marker between the system prompt and the transcript or instruction.
pub const END_OF_PROMPT: &str = "<|endofprompt|>";

/// CosyVoice3's usual system prompt, which cosygate puts before [`END_OF_PROMPT`] when a text
/// lacks the marker (`backend::protocol`), and reads back from CosyVoice's own routes
/// (`cosyvoice_form`).
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant.";
