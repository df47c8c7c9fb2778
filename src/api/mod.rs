//! The contract's types: the `/generate` request and its validation (refusals typed as
//! [`InvalidRequest`]), OpenAI's speech request, and the WAV helpers. Everything below the
//! gateway speaks in these types; none of them knows HTTP statuses.

pub mod invalid;
pub mod openai;
pub mod request;
pub mod voice;
pub mod wav;

pub use invalid::{InvalidKind, InvalidRequest};
pub use request::{GenerateBody, GenerateRequest, Mode, RequestLimits, RequestParts};
pub use voice::VoiceRegistration;

/// CosyVoice3's marker between the system prompt and the transcript or instruction.
pub const END_OF_PROMPT: &str = "<|endofprompt|>";
