//! The five inference routes of CosyVoice's `runtime/python/fastapi/server.py`, GET or POST
//! with form fields read from the body: Starlette's 400 for a string part over 1 MiB,
//! FastAPI's 422 for a missing field, a 500 when the prompt WAV cannot be loaded (raised
//! before the streaming response starts), and, as the model fails inside the streaming
//! generator, 200 then a cut stream for: an unknown `spk_id` (CosyVoice3 ships no preset
//! speakers), `/inference_instruct` (CosyVoice1 only), CosyVoice3 without `<|endofprompt|>`
//! in `prompt_text + tts_text`, a prompt over 30 s, and every prompt route under
//! `--upstream-bug tensor`. A text with nothing speakable is 200 with an empty body, checked
//! first (upstream splits the text before touching the prompt).

use super::read_body;
use crate::audio::{has_speakable, speaker_voice, ENDOFPROMPT};
use crate::cli::UpstreamBug;
use crate::form::{self, FormValue, Want};
use crate::state::{LastRequest, Prompt, SimState};
use crate::synth::{self, Behaviour, Job};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use cosygate_wav::parse_wav;
use std::sync::Arc;

/// Longest prompt the frontend accepts (`_extract_speech_token`'s assert).
pub const MAX_PROMPT_SECS: f64 = 30.0;

/// One inference route: its path, its `Form()`/`File()` parameters in the server's order, and
/// the field the model receives as its prompt text (CosyVoice3 wants `<|endofprompt|>` in
/// that field followed by `tts_text`).
#[derive(Debug)]
pub struct FastApiRoute {
    pub path: &'static str,
    pub fields: &'static [(&'static str, Want)],
    pub prompt_text_in: Option<&'static str>,
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
        prompt_text_in: None,
    },
    FastApiRoute {
        path: "/inference_zero_shot",
        fields: &[
            ("tts_text", Want::Text),
            ("prompt_text", Want::Text),
            ("prompt_wav", Want::File),
        ],
        prompt_text_in: Some("prompt_text"),
    },
    FastApiRoute {
        path: "/inference_cross_lingual",
        fields: &[("tts_text", Want::Text), ("prompt_wav", Want::File)],
        prompt_text_in: None,
    },
    FastApiRoute {
        path: "/inference_instruct2",
        fields: &[
            ("tts_text", Want::Text),
            ("instruct_text", Want::Text),
            ("prompt_wav", Want::File),
        ],
        prompt_text_in: Some("instruct_text"),
    },
    FastApiRoute {
        path: "/inference_instruct",
        fields: &[
            ("tts_text", Want::Text),
            ("spk_id", Want::Text),
            ("instruct_text", Want::Text),
        ],
        prompt_text_in: None,
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

    let mut prompt = match &form {
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
        Some(FormValue::Text(t)) => t.clone(),
        _ => String::new(),
    };

    // load_wav(prompt_wav.file, 16000) runs before the response starts: errors are a plain 500.
    if let Some(p) = &mut prompt {
        match parse_wav(&p.bytes) {
            Ok(info) if info.sample_rate >= 16000 => p.secs = info.duration_secs(),
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

    let behaviour = model_behaviour(&state, route, &text, prompt.as_ref());
    let job = Job {
        text: text("tts_text"),
        prompt_sha256: match &prompt {
            Some(p) => Some(p.sha256),
            None => Some(speaker_voice(&text("spk_id"))),
        },
        seed: 0,
        speed: 1.0,
    };
    synth::stream_pcm(state, job, behaviour).await
}

/// What the model does with a request that passed FastAPI's checks, in upstream's order: the
/// text is split first (nothing speakable: no segment, 200 with an empty body), then every
/// segment runs the frontend and the model, where the failures below raise inside the stream.
fn model_behaviour(
    state: &SimState,
    route: &FastApiRoute,
    text: &dyn Fn(&str) -> String,
    prompt: Option<&Prompt>,
) -> Behaviour {
    let tts_text = text("tts_text");
    if !has_speakable(&tts_text) {
        log::info!(
            "{}: nothing speakable in tts_text: no segment, empty answer",
            route.path
        );
        return Behaviour::Speak;
    }
    let fail = |why: String| {
        log::warn!("{}: {why}", route.path);
        Behaviour::FailInStream
    };
    if route.path == "/inference_instruct" {
        return fail(format!(
            "{:?} has no inference_instruct (CosyVoice1 only)",
            state.model
        ));
    }
    if route.wants_prompt() && state.upstream_bug == Some(UpstreamBug::Tensor) {
        return fail(
            "frontend given a decoded tensor instead of the prompt file (--upstream-bug tensor)".into(),
        );
    }
    if route.path == "/inference_sft" && !state.has_speaker(&text("spk_id")) {
        return fail(format!("KeyError: {:?} (unknown spk_id)", text("spk_id")));
    }
    if state.model.requires_endofprompt() && route.wants_prompt() {
        let prompt_text = route.prompt_text_in.map(text).unwrap_or_default();
        if !format!("{prompt_text}{tts_text}").contains(ENDOFPROMPT) {
            state.count_missing_endofprompt();
            return fail(format!(
                "AssertionError: no {ENDOFPROMPT} in prompt_text + tts_text"
            ));
        }
    }
    if let Some(p) = prompt {
        if p.secs > MAX_PROMPT_SECS {
            return fail(format!(
                "AssertionError: prompt of {:.1} s: do not support audio longer than 30s",
                p.secs
            ));
        }
    }
    Behaviour::Speak
}
