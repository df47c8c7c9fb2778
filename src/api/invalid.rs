//! Why a request body was refused before anything ran: a stable code, a message that tells the
//! caller what to fix, and whether the body was malformed (not JSON, an unknown or mistyped
//! field, forbidden characters) or well formed but not processable (too long, audio that is too
//! short-sampled or too long). The gateway's edge turns it into 400 or 422.

/// Whether the body could not be read as a request at all, or was read and is out of bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidKind {
    /// The body is not a request of the contract's shape (400).
    Malformed,
    /// The body is a request, but one the gateway will not run (422).
    Unprocessable,
}

/// A refused request body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct InvalidRequest {
    pub kind: InvalidKind,
    /// The stable code the README lists (`text_too_long`, `invalid_json`, ...).
    pub code: &'static str,
    pub message: String,
}

impl InvalidRequest {
    pub fn malformed(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: InvalidKind::Malformed,
            code,
            message: message.into(),
        }
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: InvalidKind::Unprocessable,
            code,
            message: message.into(),
        }
    }
}
