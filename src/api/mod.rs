//! The contract's types: the `/generate` request and its validation, the JSON error shape, and
//! the WAV helpers. Everything below the gateway speaks in these types.

pub mod error;
pub mod request;
pub mod wav;

pub use error::ApiError;
pub use request::{GenerateRequest, Mode, RequestLimits};

/// CosyVoice3's marker between the system prompt and the transcript or instruction.
pub const END_OF_PROMPT: &str = "<|endofprompt|>";
