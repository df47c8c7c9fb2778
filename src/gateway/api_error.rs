//! The error shape every refusal and failure takes:
//! `{"error":{"code":"text_too_long","message":"...","request_id":"..."}}`, and on OpenAI's
//! routes OpenAI's own (`{"error":{"message","type","param","code"}}`, with the same codes),
//! so that its client libraries report our errors as they report OpenAI's.
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
    /// The request field the error is about, when one is (OpenAI's `param`).
    pub param: Option<&'static str>,
}

/// Which error body a route answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorShape {
    /// `{"error":{"code","message","request_id"}}`: every route of our own API.
    #[default]
    Cosygate,
    /// `{"error":{"message","type","param","code"}}`: OpenAI's routes.
    OpenAi,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
            close: false,
            param: None,
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

    /// The JSON body for this error, in `shape`.
    pub fn to_json_in(&self, shape: ErrorShape, request_id: &str) -> Vec<u8> {
        match shape {
            ErrorShape::Cosygate => self.to_json(request_id),
            ErrorShape::OpenAi => {
                // OpenAI's `type` is the error's class; `code` is the specific reason. As
                // OpenAI's API sends it: `invalid_request_error` for every 4xx, a bad API key
                // included; `requests` for a rate limit on requests; `server_error` for 5xx.
                let kind = match self.status {
                    429 => "requests",
                    400..=499 => "invalid_request_error",
                    _ => "server_error",
                };
                let body = serde_json::json!({"error": {
                    "message": self.message,
                    "type": kind,
                    "param": self.param,
                    "code": self.code,
                    "request_id": request_id,
                }});
                body.to_string().into_bytes()
            }
        }
    }

    /// Names the request field the error is about (OpenAI's `param`).
    pub fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    /// The JSON body for this error in the contract's shape.
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
