//! The one error shape every refusal and failure takes:
//! `{"error":{"code":"text_too_long","message":"...","request_id":"..."}}`.
//!
//! Codes are stable once published (the README lists them); the message tells the caller what
//! to do next.

use serde::Serialize;

/// A refusal or failure, ready to be written to the client.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// Headers the answer carries besides the standard ones (`Retry-After`, `Allow`, ...).
    pub headers: Vec<(&'static str, String)>,
    /// Close the connection after answering (the request body was not read to its end).
    pub close: bool,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
            close: false,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(422, code, message)
    }

    /// Adds `Retry-After: seconds` (429, 503).
    pub fn with_retry_after(self, seconds: u64) -> Self {
        self.with_header("Retry-After", seconds.to_string())
    }

    /// Adds a header to the answer.
    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Marks that the connection must be closed after this answer.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// The JSON body for this error.
    pub fn to_json(&self, request_id: &str) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'a str,
            message: &'a str,
            request_id: &'a str,
        }
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                request_id,
            },
        };
        serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"error\":{\"code\":\"internal\"}}".to_vec())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}
