//! The contract's types: the `/generate` request and its validation (refusals typed as
//! [`InvalidRequest`]), and the WAV helpers. Everything below the gateway speaks in these types;
//! none of them knows HTTP statuses.

pub mod cosyvoice_form;
pub mod invalid;
pub mod request;
pub mod wav;

pub use invalid::{InvalidKind, InvalidRequest};
pub use request::{FieldNames, GenerateRequest, Mode, Parts, PromptAudio, RequestLimits};

/// CosyVoice3's marker between the system prompt and the transcript or instruction.
pub const END_OF_PROMPT: &str = "<|endofprompt|>";

/// CosyVoice3's usual system prompt, which cosygate puts before [`END_OF_PROMPT`] when a text
/// lacks the marker (`backend::protocol`), and reads back from CosyVoice's own routes
/// (`cosyvoice_form`).
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant.";
