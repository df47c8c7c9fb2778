//! The two backend protocols: how a validated [`GenerateRequest`] becomes an HTTP request for
//! a pool's backends, and how their answer becomes a checked WAV or a classified failure.
//!
//! - `cosyvoice_fastapi`: CosyVoice's own server. Multipart form to `/inference_*`; the answer
//!   is raw int16 mono PCM with no Content-Type, wrapped here into a WAV at the pool's rate.
//! - `generate_json`: the validated request as our JSON body to `POST /generate`; the answer must already
//!   be a complete WAV.
//! - `gradio`: CosyVoice's WebUI; several exchanges per synthesis, see [`super::gradio`].

use super::attempt::{self, AttemptError, UpstreamRequest};
use super::gradio;
use super::multipart::Form;
use crate::api::{wav, GenerateRequest, Mode, END_OF_PROMPT};
use crate::config::{ModelFamily, PoolConf, Protocol};
use crate::synth::{LiveAudio, PcmFormat, Refusal};
use bytes::Bytes;
use pingora::connectors::http::Connector;
use std::net::SocketAddr;
use std::time::Duration;

/// The system prompt CosyVoice3's own examples put in front of the marker.
const COSYVOICE3_SYSTEM_PROMPT: &str = crate::api::DEFAULT_SYSTEM_PROMPT;

/// Builds the backend request. `generate_json` backends get the validated request
/// re-serialized (never the client's raw bytes), so they see exactly what was checked and what
/// the cache key covers. Refuses what the pool's protocol cannot express.
pub fn build(pool: &PoolConf, req: &GenerateRequest) -> Result<UpstreamRequest, Refusal> {
    match pool.protocol {
        Protocol::GenerateJson => Ok(UpstreamRequest {
            path: "/generate",
            content_type: "application/json".into(),
            body: Bytes::from(req.to_json()),
        }),
        Protocol::CosyvoiceFastapi => {
            check(pool, req)?;
            Ok(build_fastapi(pool.model, req))
        }
        // Sent by `backend::triton` from `Prepared::triton`; nothing to build here.
        Protocol::Triton => Ok(UpstreamRequest::default()),
        Protocol::Gradio => Ok(build_gradio(pool, req)),
    }
}

/// One attempt on `addr` for `pool`'s protocol, within `deadline`: the checked WAV, or why not.
/// CosyVoice's FastAPI server streams raw PCM: its chunks go to `live` as they arrive (the
/// other protocols' audio is published whole when the synthesis ends).
pub async fn run(
    connector: &Connector,
    pool: &PoolConf,
    addr: SocketAddr,
    upstream: &UpstreamRequest,
    request_id: &str,
    deadline: Duration,
    live: Option<&LiveAudio>,
) -> Result<Bytes, AttemptError> {
    let max = pool.max_answer_bytes();
    // Each arm is boxed: an attempt's exchanges make large futures, and held inline they
    // enlarge every future around them (the cache's, the job's); a debug build's 2 MiB worker
    // stack overflowed once the gradio arm was added.
    match pool.protocol {
        Protocol::Gradio => {
            Box::pin(gradio::send(connector, addr, upstream, request_id, deadline, max)).await
        }
        _ => Box::pin(attempt::send(
            connector,
            addr,
            upstream,
            request_id,
            deadline,
            max,
            live.filter(|_| pool.protocol == Protocol::CosyvoiceFastapi)
                .map(|live| {
                    let format = PcmFormat {
                        sample_rate: pool.sample_rate,
                        channels: 1,
                    };
                    (live, format)
                }),
        ))
        .await
        .and_then(|(status, body)| decode(pool, status, body)),
    }
}

/// The WebUI passes its texts to the same `inference_*` calls as the FastAPI server, so they
/// get the same `<|endofprompt|>` placement (`generate_audio` takes `speed`, unlike FastAPI).
fn build_gradio(pool: &PoolConf, req: &GenerateRequest) -> UpstreamRequest {
    let v3 = pool.model == ModelFamily::Cosyvoice3;
    let (tts_text, prompt_text, instruct_text) = match req.mode {
        Mode::ZeroShot => (
            req.text.clone(),
            with_marker(v3, req.prompt_text.as_deref().unwrap_or(""), false),
            String::new(),
        ),
        Mode::Instruct => (
            req.text.clone(),
            String::new(),
            with_marker(v3, req.instruct_text.as_deref().unwrap_or(""), true),
        ),
        Mode::CrossLingual | Mode::Sft => (with_marker(v3, &req.text, false), String::new(), String::new()),
    };
    // Gradio checks the speaker dropdown's value against its choices in every mode: the
    // WebUI's speakers, or `[""]` when the model has none (CosyVoice3 as shipped).
    let sft_speaker = match req.mode {
        Mode::Sft => req.spk_id.clone().unwrap_or_default(),
        _ => pool
            .speakers
            .as_ref()
            .and_then(|s| s.first())
            .cloned()
            .unwrap_or_default(),
    };
    gradio::build(
        req,
        gradio::Texts {
            tts_text,
            sft_speaker,
            prompt_text,
            instruct_text,
        },
    )
}

/// What a pool's protocol refuses, decided from the request alone and cheaply, before the cache
/// (the request is built for the backend only on a miss: [`build`]).
pub fn check(pool: &PoolConf, req: &GenerateRequest) -> Result<(), Refusal> {
    match pool.protocol {
        Protocol::CosyvoiceFastapi if req.speed != 1.0 => Err(Refusal::new(
            "unsupported_parameter",
            "`speed` other than 1.0 is not supported by this pool's backends (CosyVoice's FastAPI server has no speed control)",
        )),
        Protocol::Triton => super::triton::check(req),
        _ => Ok(()),
    }
}

fn build_fastapi(model: ModelFamily, req: &GenerateRequest) -> UpstreamRequest {
    let v3 = model == ModelFamily::Cosyvoice3;
    let mut form = Form::new();
    let path = match req.mode {
        Mode::ZeroShot => {
            // `precheck` refuses zero_shot without a transcript before this runs.
            let prompt_text = req.prompt_text.as_deref().unwrap_or("");
            form.text("tts_text", &req.text)
                .text("prompt_text", &with_marker(v3, prompt_text, false));
            "/inference_zero_shot"
        }
        Mode::CrossLingual => {
            form.text("tts_text", &with_marker(v3, &req.text, false));
            "/inference_cross_lingual"
        }
        Mode::Instruct => {
            let instruct = req.instruct_text.as_deref().unwrap_or("");
            form.text("tts_text", &req.text)
                .text("instruct_text", &with_marker(v3, instruct, true));
            "/inference_instruct2"
        }
        Mode::Sft => {
            // No prompt text here, so the marker goes in front of the text, as for
            // cross_lingual: the model's `<|endofprompt|>` check spans prompt and text.
            form.text("tts_text", &with_marker(v3, &req.text, false))
                .text("spk_id", req.spk_id.as_deref().unwrap_or(""));
            "/inference_sft"
        }
    };
    if let Some(audio) = &req.prompt_audio {
        form.file("prompt_wav", "prompt.wav", "audio/wav", audio);
    }
    let (content_type, body) = form.finish();
    UpstreamRequest {
        path,
        content_type,
        body,
    }
}

/// CosyVoice3 needs `<|endofprompt|>`: a text without it gets the model's usual system prompt
/// in front (`System prompt.<|endofprompt|>text`), or, for an instruction, the marker after it
/// (`System prompt. instruction<|endofprompt|>`). Other models get the text unchanged.
pub(crate) fn with_marker(v3: bool, text: &str, instruction: bool) -> String {
    if !v3 || text.contains(END_OF_PROMPT) {
        return text.to_string();
    }
    if instruction {
        format!("{COSYVOICE3_SYSTEM_PROMPT} {text}{END_OF_PROMPT}")
    } else {
        format!("{COSYVOICE3_SYSTEM_PROMPT}{END_OF_PROMPT}{text}")
    }
}

/// Turns a complete backend answer (status and whole body) into a WAV, or says why not.
pub fn decode(pool: &PoolConf, status: u16, body: Bytes) -> Result<Bytes, AttemptError> {
    match status {
        200 => {}
        400..=499 => {
            return Err(AttemptError::Rejected {
                status,
                detail: snippet(&body),
            })
        }
        _ => {
            return Err(AttemptError::Status {
                status,
                detail: snippet(&body),
            })
        }
    }
    if body.is_empty() {
        return Err(AttemptError::Empty);
    }
    match pool.protocol {
        Protocol::CosyvoiceFastapi => wav::pcm16_to_wav(&body, pool.sample_rate)
            .map(Bytes::from)
            .map_err(|e| AttemptError::BadAudio(e.to_string())),
        Protocol::GenerateJson | Protocol::Gradio => match wav::parse_wav(&body) {
            Ok(_) => Ok(body),
            Err(e) => Err(AttemptError::BadAudio(e.to_string())),
        },
        // Decoded by `backend::triton` (its answers carry tensors, not audio).
        Protocol::Triton => Err(AttemptError::BadAudio(
            "a Triton answer is decoded by backend::triton".into(),
        )),
    }
}

/// The start of an error body, for messages and logs.
fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(300)]);
    s.chars().filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosyvoice3_gets_its_prompt_marker_once() {
        assert_eq!(
            with_marker(true, "hello", false),
            "You are a helpful assistant.<|endofprompt|>hello"
        );
        assert_eq!(
            with_marker(true, "Speak slowly.", true),
            "You are a helpful assistant. Speak slowly.<|endofprompt|>"
        );
        assert_eq!(with_marker(true, "x<|endofprompt|>y", false), "x<|endofprompt|>y");
        assert_eq!(with_marker(false, "hello", false), "hello");
    }

    #[test]
    fn no_cosyvoice3_request_reaches_a_backend_without_the_marker() {
        use base64::Engine;
        let pool: PoolConf =
            serde_yaml::from_str("protocol: cosyvoice_fastapi\nbackends: [ { addr: 127.0.0.1:1 } ]\n")
                .expect("pool");
        let wav = wav::pcm16_to_wav(&[0u8; 3200], 16000).expect("wav");
        let b64 = base64::engine::general_purpose::STANDARD.encode(wav);
        let limits = crate::api::RequestLimits {
            max_text_chars: 200,
            max_prompt_seconds: 30.0,
        };
        for body in [
            format!(r#"{{"text":"Hi.","prompt_audio":"{b64}","prompt_text":"A prompt."}}"#),
            format!(r#"{{"text":"Hi.","mode":"cross_lingual","prompt_audio":"{b64}"}}"#),
            format!(r#"{{"text":"Hi.","mode":"instruct","prompt_audio":"{b64}","instruct_text":"Slowly."}}"#),
            r#"{"text":"Hi.","mode":"sft","spk_id":"A"}"#.to_string(),
        ] {
            let req = GenerateRequest::parse(body.as_bytes(), limits).expect("valid");
            let up = build(&pool, &req).expect("builds");
            let text = String::from_utf8_lossy(&up.body);
            assert_eq!(text.matches(END_OF_PROMPT).count(), 1, "{}: {text:.300}", up.path);
        }
    }
}
