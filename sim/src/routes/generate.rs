//! `POST /generate`, the JSON form of the contract: the same synthesis answered as one
//! complete `audio/wav` with Content-Length after the whole synthesis time. No
//! `<|endofprompt|>` requirement here. Errors are the contract's JSON shape.

use super::read_body;
use crate::audio::{duration_secs, speaker_voice, spoken_text};
use crate::state::{LastRequest, Prompt, SimState};
use crate::synth::{self, Job};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use cosygate_wav::parse_wav;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Longest answer `/generate` builds (at speed 1.0), about 165 MiB of 24 kHz PCM.
const MAX_AUDIO_SECS: f64 = 3600.0;

/// A refused request, answered as `{"error":{"code","message"}}`.
#[derive(Debug)]
struct Refused {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        status,
        code,
        message: message.into(),
    }
}

fn bad(code: &'static str, message: impl Into<String>) -> Refused {
    error(StatusCode::BAD_REQUEST, code, message)
}

/// The prompt audio as sent: absent, not base64, or decoded.
enum PromptAudio {
    Absent,
    NotBase64(String),
    Decoded(Prompt),
}

fn decode_prompt(obj: &Map<String, Value>) -> PromptAudio {
    match obj.get("prompt_audio") {
        None | Some(Value::Null) => PromptAudio::Absent,
        Some(Value::String(s)) => match base64::engine::general_purpose::STANDARD.decode(s) {
            Ok(bytes) => PromptAudio::Decoded(Prompt::new(bytes.into())),
            Err(e) => PromptAudio::NotBase64(format!("prompt_audio is not base64: {e}")),
        },
        Some(_) => PromptAudio::NotBase64("prompt_audio must be a base64 string".into()),
    }
}

pub async fn generate(State(state): State<Arc<SimState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match read_body(&parts.headers, body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let parsed: Option<Map<String, Value>> = match serde_json::from_slice(&body) {
        Ok(Value::Object(obj)) => Some(obj),
        _ => None,
    };
    let prompt = parsed.as_ref().map_or(PromptAudio::Absent, decode_prompt);
    let decoded = match &prompt {
        PromptAudio::Decoded(p) => Some(p),
        _ => None,
    };
    let mut last = LastRequest::new("/generate", parts.method.as_str(), body.len())
        .with_prompt(decoded)
        .with_request_id(&parts.headers);
    if let Some(obj) = &parsed {
        last.fields = obj
            .iter()
            .filter(|(k, v)| k.as_str() != "prompt_audio" && (v.is_string() || v.is_number()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
    }
    state.received(last);

    let Some(obj) = parsed else {
        return bad("bad_json", "the body must be a JSON object").into_response();
    };
    match check(&obj, prompt, &state) {
        Ok(job) => synth::complete_wav(state, job).await,
        Err(refused) => refused.into_response(),
    }
}

/// Validates the request into a job.
fn check(obj: &Map<String, Value>, prompt: PromptAudio, state: &SimState) -> Result<Job, Refused> {
    let string = |name: &str| -> Result<Option<&str>, Refused> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(bad("bad_field", format!("{name} must be a string"))),
        }
    };
    let text = string("text")?.ok_or_else(|| bad("missing_field", "text is required"))?;
    // The answer is built whole in memory: bound it.
    if duration_secs(spoken_text(text), 1.0) > MAX_AUDIO_SECS {
        return Err(bad(
            "text_too_long",
            format!("text over {MAX_AUDIO_SECS} s of audio"),
        ));
    }
    let mode = string("mode")?.unwrap_or("zero_shot");
    if !matches!(mode, "zero_shot" | "cross_lingual" | "instruct" | "sft") {
        return Err(bad("bad_mode", format!("unknown mode {mode:?}")));
    }
    let seed = match obj.get("seed") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| bad("bad_field", "seed must be an unsigned integer"))?,
    };
    let speed = match obj.get("speed") {
        None | Some(Value::Null) => 1.0,
        Some(v) => v
            .as_f64()
            .ok_or_else(|| bad("bad_field", "speed must be a number"))?,
    };
    if !(0.5..=2.0).contains(&speed) {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "speed_out_of_range",
            "speed must be within 0.5..=2.0",
        ));
    }

    let voice = if mode == "sft" {
        let spk = string("spk_id")?.ok_or_else(|| bad("missing_field", "spk_id is required for sft"))?;
        if !state.has_speaker(spk) {
            return Err(bad("unknown_speaker", format!("unknown spk_id {spk:?}")));
        }
        speaker_voice(spk)
    } else {
        if mode == "instruct" && string("instruct_text")?.is_none() {
            return Err(bad("missing_field", "instruct_text is required for instruct"));
        }
        let p = match prompt {
            PromptAudio::Absent => {
                return Err(bad(
                    "missing_field",
                    format!("prompt_audio is required for {mode}"),
                ))
            }
            PromptAudio::NotBase64(msg) => return Err(bad("bad_base64", msg)),
            PromptAudio::Decoded(p) => p,
        };
        if let Err(e) = parse_wav(&p.bytes) {
            return Err(bad(
                "bad_prompt_audio",
                format!("prompt_audio is not a valid WAV: {e}"),
            ));
        }
        p.sha256
    };
    Ok(Job {
        text: text.to_string(),
        prompt_sha256: Some(voice),
        seed,
        speed,
    })
}
