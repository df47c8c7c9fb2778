//! The four inference routes of CosyVoice's `runtime/python/fastapi/server.py`, GET or POST
//! with form fields: FastAPI's 422 for a missing field, a 500 when the prompt WAV cannot be
//! loaded (raised before the streaming response starts), CosyVoice3's hang without
//! `<|endofprompt|>`, and a cut stream for an unknown `spk_id`.

use super::read_body;
use crate::audio::{speaker_voice, ENDOFPROMPT};
use crate::form::{self, FormValue, Want};
use crate::state::{LastRequest, Prompt, SimState};
use crate::synth::{self, Behaviour, Job};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use cosygate_wav::parse_wav;
use std::sync::Arc;

/// One inference route: its path, its `Form()`/`File()` parameters in the server's order, and
/// the field in which CosyVoice3 needs `<|endofprompt|>`.
#[derive(Debug)]
pub struct FastApiRoute {
    pub path: &'static str,
    pub fields: &'static [(&'static str, Want)],
    pub endofprompt_in: Option<&'static str>,
}

impl FastApiRoute {
    fn wants_prompt(&self) -> bool {
        self.fields.iter().any(|(_, w)| *w == Want::File)
    }
}

pub static ROUTES: &[FastApiRoute] = &[
    FastApiRoute {
        path: "/inference_sft",
        fields: &[("tts_text", Want::Text), ("spk_id", Want::Text)],
        endofprompt_in: None,
    },
    FastApiRoute {
        path: "/inference_zero_shot",
        fields: &[
            ("tts_text", Want::Text),
            ("prompt_text", Want::Text),
            ("prompt_wav", Want::File),
        ],
        endofprompt_in: Some("prompt_text"),
    },
    FastApiRoute {
        path: "/inference_cross_lingual",
        fields: &[("tts_text", Want::Text), ("prompt_wav", Want::File)],
        endofprompt_in: Some("tts_text"),
    },
    FastApiRoute {
        path: "/inference_instruct2",
        fields: &[
            ("tts_text", Want::Text),
            ("instruct_text", Want::Text),
            ("prompt_wav", Want::File),
        ],
        endofprompt_in: Some("instruct_text"),
    },
];

/// Handles one inference request (seed 0, speed 1.0, as the FastAPI server has no such fields).
pub async fn inference(state: Arc<SimState>, route: &'static FastApiRoute, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let method = parts.method.to_string();
    let body = match read_body(&parts.headers, body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let body_len = body.len();
    let headers = parts.headers.clone();
    let form = form::read_form(parts, body).await;

    let prompt = match &form {
        Ok(f) if route.wants_prompt() => match f.get("prompt_wav") {
            Some(FormValue::File(bytes)) => Some(Prompt::new(bytes.clone())),
            _ => None,
        },
        _ => None,
    };
    let mut last = LastRequest::new(route.path, &method, body_len)
        .with_prompt(prompt.as_ref())
        .with_request_id(&headers);
    if let Ok(f) = &form {
        last.fields = f.text_fields();
    }
    state.received(last);

    let form = match form {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    if let Err(unprocessable) = form::validate(&form, route.fields) {
        return unprocessable.into_response();
    }
    let text = |name: &str| match form.get(name) {
        Some(FormValue::Text(t)) => t.as_str(),
        _ => "",
    };

    // load_wav(prompt_wav.file, 16000) runs before the response starts: errors are a plain 500.
    if let Some(p) = &prompt {
        match parse_wav(&p.bytes) {
            Ok(info) if info.sample_rate >= 16000 => {}
            Ok(info) => {
                log::warn!(
                    "{}: AssertionError: wav sample rate {} must be greater than 16000",
                    route.path,
                    info.sample_rate
                );
                return synth::internal_error();
            }
            Err(e) => {
                log::warn!("{}: prompt_wav cannot be loaded: {e}", route.path);
                return synth::internal_error();
            }
        }
    }

    let mut behaviour = Behaviour::Speak;
    if route.path == "/inference_sft" && !state.has_speaker(text("spk_id")) {
        log::warn!("/inference_sft: KeyError: {:?} (unknown spk_id)", text("spk_id"));
        behaviour = Behaviour::FailInStream;
    }
    if let Some(field) = route.endofprompt_in {
        if state.model.requires_endofprompt() && !text(field).contains(ENDOFPROMPT) {
            log::warn!(
                "{}: no {ENDOFPROMPT} in {field}: the model will never finish",
                route.path
            );
            state.count_missing_endofprompt();
            behaviour = Behaviour::HangInStream;
        }
    }

    let job = Job {
        text: text("tts_text").to_string(),
        prompt_sha256: match &prompt {
            Some(p) => Some(p.sha256),
            None => Some(speaker_voice(text("spk_id"))),
        },
        seed: 0,
        speed: 1.0,
    };
    synth::stream_pcm(state, job, behaviour).await
}
