//! FastAPI `Form()` / `File()` semantics: reading a `multipart/form-data` (or urlencoded)
//! body into fields, and FastAPI's answers when fields are missing or of the wrong kind
//! (`422` with `{"detail":[...]}`) or the body cannot be parsed (`400`).
//!
//! Like Starlette, a multipart part with a `filename` is a file (an `UploadFile`), any other
//! part is a string; when a name repeats, the last value wins. The form is always read from
//! the body, GET included (CosyVoice's `client.py` sends GET with an urlencoded body), never
//! from the query string. A string part over [`MAX_PART_SIZE`] is refused with Starlette's
//! 400 as soon as it is seen (file parts and urlencoded bodies have no such limit there).

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};

/// Starlette's `MultiPartParser.max_part_size`: the largest non-file multipart part.
pub const MAX_PART_SIZE: usize = 1024 * 1024;

/// One received form value.
#[derive(Debug, Clone)]
pub enum FormValue {
    Text(String),
    File(Bytes),
}

/// The received form, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct FormData(Vec<(String, FormValue)>);

impl FormData {
    /// The last value sent under `name`.
    pub fn get(&self, name: &str) -> Option<&FormValue> {
        self.0.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Every text field (last value per name), for `/__sim/last`.
    pub fn text_fields(&self) -> serde_json::Map<String, Value> {
        let mut out = serde_json::Map::new();
        for (name, value) in &self.0 {
            if let FormValue::Text(t) = value {
                out.insert(name.clone(), Value::String(t.clone()));
            }
        }
        out
    }
}

/// Reads the form of a request whose body is already in memory. A body that is neither
/// multipart nor urlencoded gives an empty form (FastAPI then reports every field missing).
pub async fn read_form(parts: Parts, body: Bytes) -> Result<FormData, Response> {
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        let req = Request::from_parts(parts, Body::from(body));
        read_multipart(req).await.map_err(|e| match e {
            MultipartError::PartTooLarge => (
                StatusCode::BAD_REQUEST,
                Json(json!({"detail": format!(
                    "Part exceeded maximum size of {}KB.",
                    MAX_PART_SIZE / 1024
                )})),
            )
                .into_response(),
            MultipartError::Parse(e) => {
                log::debug!("multipart body refused: {e}");
                parse_error()
            }
        })
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        // Read from the body whatever the method (axum's `Form` reads a GET's query string).
        Ok(FormData(
            form_urlencoded::parse(&body)
                .map(|(k, v)| (k.into_owned(), FormValue::Text(v.into_owned())))
                .collect(),
        ))
    } else {
        Ok(FormData::default())
    }
}

enum MultipartError {
    PartTooLarge,
    Parse(String),
}

async fn read_multipart(req: Request) -> Result<FormData, MultipartError> {
    let parse = |e: axum::extract::multipart::MultipartError| MultipartError::Parse(e.body_text());
    let mut multipart = Multipart::from_request(req, &())
        .await
        .map_err(|e| MultipartError::Parse(e.body_text()))?;
    let mut out = Vec::new();
    while let Some(mut field) = multipart.next_field().await.map_err(parse)? {
        let name = field.name().unwrap_or_default().to_string();
        let is_file = field.file_name().is_some();
        let mut data = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(parse)? {
            if !is_file && data.len() + chunk.len() > MAX_PART_SIZE {
                return Err(MultipartError::PartTooLarge);
            }
            data.extend_from_slice(&chunk);
        }
        let value = if is_file {
            FormValue::File(data.into())
        } else {
            FormValue::Text(String::from_utf8_lossy(&data).into_owned())
        };
        out.push((name, value));
    }
    Ok(FormData(out))
}

/// What a route expects of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// `str = Form()`
    Text,
    /// `UploadFile = File()`
    File,
}

/// FastAPI's 422: the list of field errors (`{"detail": [...]}`).
#[derive(Debug)]
pub struct Unprocessable(pub Vec<Value>);

impl IntoResponse for Unprocessable {
    fn into_response(self) -> Response {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "detail": self.0 })),
        )
            .into_response()
    }
}

/// Checks the form against a route's signature; on success the values in the order asked.
pub fn validate(form: &FormData, wanted: &[(&str, Want)]) -> Result<Vec<FormValue>, Unprocessable> {
    let mut errors = Vec::new();
    let mut values = Vec::new();
    for &(name, want) in wanted {
        match (form.get(name), want) {
            (None, _) => errors.push(json!({
                "type": "missing", "loc": ["body", name], "msg": "Field required", "input": null
            })),
            (Some(v @ FormValue::Text(_)), Want::Text) | (Some(v @ FormValue::File(_)), Want::File) => {
                values.push(v.clone())
            }
            (Some(FormValue::File(_)), Want::Text) => errors.push(json!({
                "type": "string_type", "loc": ["body", name],
                "msg": "Input should be a valid string", "input": "UploadFile"
            })),
            (Some(FormValue::Text(t)), Want::File) => errors.push(json!({
                "type": "value_error", "loc": ["body", name],
                "msg": "Value error, Expected UploadFile, received: <class 'str'>",
                "input": t, "ctx": {"error": {}}
            })),
        }
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(Unprocessable(errors))
    }
}

/// Starlette's answer to a body it cannot parse as a form.
fn parse_error() -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"detail": "There was an error parsing the body"})),
    )
        .into_response()
}
