//! The table's vocabulary: what a row sends ([`Req`]), what must come back ([`Want`]), the
//! request builders and the prompt audio the rows use, and [`rows`], the whole table in order
//! (its rows are in `rows_json`, `rows_content` and `rows_http`).

use crate::common::sim::test_wav;
use base64::Engine;
use serde_json::{json, Value};

/// The default limits the rows are written against (the gateway runs with no `limits:`).
pub const MAX_TEXT_CHARS: usize = 200;
pub const MAX_BODY: usize = 10 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// The rows
// ---------------------------------------------------------------------------------------------

/// What is sent: an HTTP/1.1 request the harness frames (Host, Content-Length, Connection:
/// close are added), or raw bytes sent exactly as given.
pub enum Req {
    Http {
        method: &'static str,
        path: &'static str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    Raw(Vec<u8>),
}

/// What must come back.
pub enum Want {
    /// 200, `audio/wav`, a valid WAV; the request reached the backend.
    Pass,
    /// A JSON error with this status and code.
    Refuse { status: u16, code: &'static str },
}

pub struct Row {
    pub name: String,
    pub req: Req,
    pub want: Want,
}

pub fn refuse(status: u16, code: &'static str) -> Want {
    Want::Refuse { status, code }
}

/// A POST /generate with `Content-Type: application/json` and these body bytes.
pub fn post(body: impl Into<Vec<u8>>) -> Req {
    post_with("application/json", body)
}

pub fn post_with(content_type: &str, body: impl Into<Vec<u8>>) -> Req {
    Req::Http {
        method: "POST",
        path: "/generate",
        headers: vec![("Content-Type", content_type.to_string())],
        body: body.into(),
    }
}

pub fn post_json(v: Value) -> Req {
    post(serde_json::to_vec(&v).expect("serialize"))
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Overwrites the little-endian u32 at `at`.
pub fn patch_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// Prompt audio the rows share, encoded once.
pub struct Prompts {
    /// 0.25 s at 16 kHz: 8044 bytes, so its base64 ends in `==`.
    pub short: Vec<u8>,
    pub short_b64: String,
}

impl Prompts {
    pub fn new() -> Self {
        let short = test_wav(0.25, 16000);
        let short_b64 = b64(&short);
        Prompts { short, short_b64 }
    }

    /// A zero_shot body with the short prompt and `text`.
    pub fn zero_shot(&self, text: &str) -> Value {
        json!({"text": text, "prompt_text": "A short prompt.", "prompt_audio": self.short_b64})
    }

    /// A zero_shot body with the short prompt, `text` and one more field.
    pub fn zero_shot_with(&self, text: &str, field: &str, value: Value) -> Value {
        let mut v = self.zero_shot(text);
        v[field] = value;
        v
    }

    /// A zero_shot body whose `prompt_audio` is exactly `audio_b64`.
    pub fn with_audio(&self, audio_b64: String) -> Value {
        json!({"text": "Hello there.", "prompt_text": "A short prompt.", "prompt_audio": audio_b64})
    }
}

pub fn bad(code: &'static str) -> Want {
    refuse(400, code)
}

pub fn unproc(code: &'static str) -> Want {
    refuse(422, code)
}

/// Every row, in order.
pub fn rows(p: &Prompts) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut add = |name: &str, req: Req, want: Want| {
        rows.push(Row {
            name: name.to_string(),
            req,
            want,
        })
    };
    crate::rows_json::add_rows(p, &mut add);
    crate::rows_content::add_rows(p, &mut add);
    crate::rows_http::add_rows(p, &mut add);
    rows
}
