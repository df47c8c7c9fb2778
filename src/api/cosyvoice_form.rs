//! CosyVoice's own FastAPI routes (`/inference_zero_shot`, `/inference_cross_lingual`,
//! `/inference_instruct2`, `/inference_sft`): their form body, multipart/form-data or
//! application/x-www-form-urlencoded, read into the same [`GenerateRequest`] as `/generate`
//! and checked by the same [`GenerateRequest::from_parts`].
//!
//! As upstream's `Form()`/`File()` parameters: every field of the route's signature is
//! required, text fields are plain parts, `prompt_wav` is a file part, and fields the route does
//! not name are ignored (bounded: at most [`MAX_PARTS`] parts). Unlike upstream, a repeated
//! field is refused (Starlette keeps the last one; two values for one field are ambiguous),
//! and a missing field is a 400 `missing_field` naming it (FastAPI's is a 422).
//!
//! CosyVoice3 clients write the model's `<|endofprompt|>` themselves. For a CosyVoice3 pool, a
//! field spelled exactly as cosygate would spell it for the backend (the default system prompt
//! `You are a helpful assistant.` then the marker, before the text or transcript; or around an
//! instruction) is read back to the plain text, so the request shares its cache key with the
//! equivalent `/generate` request and reaches every backend protocol the same way. Any other use
//! of the marker is kept as sent, where the model expects it: `prompt_text`, `instruct_text`, and
//! `tts_text` of cross_lingual and sft.

use super::parts::{FieldNames, Parts, PromptAudio};
use super::{GenerateRequest, InvalidRequest, Mode, RequestLimits, DEFAULT_SYSTEM_PROMPT, END_OF_PROMPT};
use bytes::Bytes;
use futures_util::FutureExt;

/// Most parts (or urlencoded pairs) a form may have: the route's at most three fields and a
/// few a client may add that are ignored.
pub const MAX_PARTS: usize = 16;

/// Largest text part, as CosyVoice's server (Starlette's `max_part_size`, 1 MiB).
pub const MAX_TEXT_PART_BYTES: usize = 1024 * 1024;

/// One of CosyVoice's inference routes that cosygate serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    ZeroShot,
    CrossLingual,
    Instruct2,
    Sft,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    File,
}

impl Route {
    /// The route of a request path (`/inference_zero_shot`, ...); `None` for any other.
    pub fn from_path(path: &str) -> Option<Route> {
        match path {
            "/inference_zero_shot" => Some(Route::ZeroShot),
            "/inference_cross_lingual" => Some(Route::CrossLingual),
            "/inference_instruct2" => Some(Route::Instruct2),
            "/inference_sft" => Some(Route::Sft),
            _ => None,
        }
    }

    /// The synthesis mode the route asks for.
    pub fn mode(self) -> Mode {
        match self {
            Route::ZeroShot => Mode::ZeroShot,
            Route::CrossLingual => Mode::CrossLingual,
            Route::Instruct2 => Mode::Instruct,
            Route::Sft => Mode::Sft,
        }
    }

    /// The route's fields as upstream's signature lists them, every one required.
    fn fields(self) -> &'static [(&'static str, Kind)] {
        match self {
            Route::ZeroShot => &[
                ("tts_text", Kind::Text),
                ("prompt_text", Kind::Text),
                ("prompt_wav", Kind::File),
            ],
            Route::CrossLingual => &[("tts_text", Kind::Text), ("prompt_wav", Kind::File)],
            Route::Instruct2 => &[
                ("tts_text", Kind::Text),
                ("instruct_text", Kind::Text),
                ("prompt_wav", Kind::File),
            ],
            Route::Sft => &[("tts_text", Kind::Text), ("spk_id", Kind::Text)],
        }
    }
}

/// How a form body is encoded, from its `Content-Type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormEncoding {
    Multipart { boundary: String },
    UrlEncoded,
}

impl FormEncoding {
    /// Reads a request's `Content-Type`: `Ok(None)` when it is not a form type at all (the
    /// caller answers 415), an error for a multipart type without a usable boundary.
    pub fn from_content_type(content_type: &str) -> Result<Option<FormEncoding>, InvalidRequest> {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Ok(Some(FormEncoding::UrlEncoded));
        }
        if !essence.eq_ignore_ascii_case("multipart/form-data") {
            return Ok(None);
        }
        multer::parse_boundary(content_type)
            .map(|boundary| Some(FormEncoding::Multipart { boundary }))
            .map_err(|e| {
                InvalidRequest::malformed(
                    "invalid_form",
                    format!("the multipart Content-Type has no usable boundary ({e}); let the HTTP client build the form"),
                )
            })
    }
}

/// One received form value.
enum Value {
    Text(String),
    File(Bytes),
}

/// Reads a whole form body for `route` into a validated request (runs once per request to
/// CosyVoice's routes, off the worker threads when the body is large). `cosyvoice3`: the pool
/// serves CosyVoice3, whose marker spelling is read back to plain text (see the module doc).
pub fn parse(
    route: Route,
    encoding: &FormEncoding,
    body: Bytes,
    limits: RequestLimits,
    cosyvoice3: bool,
) -> Result<GenerateRequest, InvalidRequest> {
    let received = match encoding {
        FormEncoding::UrlEncoded => read_urlencoded(&body)?,
        FormEncoding::Multipart { boundary } => read_multipart(body, boundary)?,
    };
    let mut fields: [Option<Value>; 3] = [None, None, None];
    let wanted = route.fields();
    for (name, value) in received {
        // Fields the route does not name are ignored, as FastAPI does.
        let Some(i) = wanted.iter().position(|(n, _)| *n == name) else {
            continue;
        };
        if fields[i].is_some() {
            return Err(InvalidRequest::malformed(
                "duplicate_field",
                format!("the form has `{name}` more than once; send each field once"),
            ));
        }
        fields[i] = Some(value);
    }
    let mut parts = Parts {
        mode: route.mode(),
        text: String::new(),
        prompt_audio: None,
        prompt_text: None,
        instruct_text: None,
        spk_id: None,
        seed: 0,
        speed: 1.0,
        // CosyVoice's server streams every answer.
        stream: true,
        marker_in_text: matches!(route, Route::CrossLingual | Route::Sft),
        names: FieldNames {
            text: "tts_text",
            prompt_audio: "prompt_wav",
        },
    };
    for (&(name, kind), value) in wanted.iter().zip(fields) {
        let value = value.ok_or_else(|| {
            InvalidRequest::malformed(
                "missing_field",
                format!(
                    "`{name}` is required by {}: add it to the form",
                    route_path(route)
                ),
            )
        })?;
        match (kind, value) {
            (Kind::File, Value::File(bytes)) => parts.prompt_audio = Some(PromptAudio::Wav(bytes)),
            (Kind::Text, Value::Text(text)) => {
                let slot = match name {
                    "tts_text" => &mut parts.text,
                    "prompt_text" => parts.prompt_text.insert(String::new()),
                    "instruct_text" => parts.instruct_text.insert(String::new()),
                    _ => parts.spk_id.insert(String::new()),
                };
                *slot = text;
            }
            (Kind::File, Value::Text(_)) => {
                return Err(InvalidRequest::malformed(
                    "invalid_field",
                    format!(
                        "`{name}` must be a file part of a multipart/form-data body (curl: -F {name}=@prompt.wav)"
                    ),
                ))
            }
            (Kind::Text, Value::File(_)) => {
                return Err(InvalidRequest::malformed(
                    "invalid_field",
                    format!("`{name}` must be a plain form field, not a file part"),
                ))
            }
        }
    }
    if cosyvoice3 {
        read_back_default_marker(&mut parts);
    }
    GenerateRequest::from_parts(parts, limits)
}

fn route_path(route: Route) -> &'static str {
    match route {
        Route::ZeroShot => "/inference_zero_shot",
        Route::CrossLingual => "/inference_cross_lingual",
        Route::Instruct2 => "/inference_instruct2",
        Route::Sft => "/inference_sft",
    }
}

/// `You are a helpful assistant.<|endofprompt|>Text` → `Text`, and `You are a helpful
/// assistant. Instruction<|endofprompt|>` → `Instruction`: exactly the spellings
/// `backend::protocol::with_marker` gives back, and no other.
fn read_back_default_marker(parts: &mut Parts) {
    let plain = |s: &str| !s.is_empty() && s == s.trim() && !s.contains(END_OF_PROMPT);
    let prefixed = |s: &str| -> Option<String> {
        let rest = s
            .trim()
            .strip_prefix(DEFAULT_SYSTEM_PROMPT)?
            .strip_prefix(END_OF_PROMPT)?;
        plain(rest).then(|| rest.to_string())
    };
    let instruction = |s: &str| -> Option<String> {
        let rest = s
            .trim()
            .strip_prefix(DEFAULT_SYSTEM_PROMPT)?
            .strip_prefix(' ')?
            .strip_suffix(END_OF_PROMPT)?;
        plain(rest).then(|| rest.to_string())
    };
    if parts.marker_in_text {
        if let Some(text) = prefixed(&parts.text) {
            parts.text = text;
        }
    }
    if let Some(text) = parts.prompt_text.as_deref().and_then(prefixed) {
        parts.prompt_text = Some(text);
    }
    if let Some(text) = parts.instruct_text.as_deref().and_then(instruction) {
        parts.instruct_text = Some(text);
    }
}

fn too_many_parts() -> InvalidRequest {
    InvalidRequest::malformed(
        "too_many_fields",
        format!("the form has more than {MAX_PARTS} fields; send only the route's own"),
    )
}

fn not_utf8(name: &str) -> InvalidRequest {
    InvalidRequest::malformed("invalid_field", format!("`{name}` is not valid UTF-8 text"))
}

/// `a=1&b=2`, `+` for a space, percent-escapes decoded; names and values must be UTF-8.
fn read_urlencoded(body: &[u8]) -> Result<Vec<(String, Value)>, InvalidRequest> {
    let decode = |raw: &[u8]| -> Option<String> {
        let spaced: Vec<u8> = raw.iter().map(|b| if *b == b'+' { b' ' } else { *b }).collect();
        percent_encoding::percent_decode(&spaced)
            .decode_utf8()
            .ok()
            .map(std::borrow::Cow::into_owned)
    };
    let mut out = Vec::new();
    for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        if out.len() == MAX_PARTS {
            return Err(too_many_parts());
        }
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        let name = decode(name).ok_or_else(|| not_utf8("a field name"))?;
        if value.len() > MAX_TEXT_PART_BYTES {
            return Err(part_too_large(&name));
        }
        let value = decode(value).ok_or_else(|| not_utf8(&name))?;
        out.push((name, Value::Text(value)));
    }
    Ok(out)
}

fn part_too_large(name: &str) -> InvalidRequest {
    InvalidRequest::malformed(
        "part_too_large",
        format!(
            "the form field `{name}` is over {} KiB (CosyVoice's limit for a text part)",
            MAX_TEXT_PART_BYTES / 1024
        ),
    )
}

/// A multipart body already in memory. multer is asynchronous, but over a body that is all
/// there it never waits, so it is driven to completion in one poll (here, or on the blocking
/// pool for a large body).
fn read_multipart(body: Bytes, boundary: &str) -> Result<Vec<(String, Value)>, InvalidRequest> {
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let read = async move {
        let mut out = Vec::new();
        while let Some(field) = multipart.next_field().await.map_err(form_error)? {
            if out.len() == MAX_PARTS {
                return Err(too_many_parts());
            }
            let name = field.name().unwrap_or_default().to_string();
            let is_file = field.file_name().is_some();
            let data = field.bytes().await.map_err(form_error)?;
            let value = if is_file {
                Value::File(data)
            } else {
                if data.len() > MAX_TEXT_PART_BYTES {
                    return Err(part_too_large(&name));
                }
                Value::Text(String::from_utf8(data.to_vec()).map_err(|_| not_utf8(&name))?)
            };
            out.push((name, value));
        }
        Ok(out)
    };
    read.now_or_never().unwrap_or_else(|| {
        Err(InvalidRequest::malformed(
            "invalid_form",
            "the multipart body could not be read whole",
        ))
    })
}

fn form_error(e: multer::Error) -> InvalidRequest {
    InvalidRequest::malformed(
        "invalid_form",
        format!("the multipart/form-data body cannot be read ({e}); let the HTTP client build the form"),
    )
}

#[cfg(test)]
#[path = "cosyvoice_form_tests.rs"]
mod tests;
