//! `protocol: triton`: CosyVoice's high-throughput runtime (`runtime/triton_trtllm`, model
//! `cosyvoice3`) behind NVIDIA Triton, spoken over KServe v2.
//!
//! Inputs: `reference_wav` FP32 [1,N] (the prompt at 16 kHz, mono, -1..1), `reference_wav_len`
//! INT32 [1,1], `reference_text` BYTES [1,1] (the prompt side: transcript or instruction, with
//! CosyVoice3's `<|endofprompt|>`), `target_text` BYTES [1,1]. Output: `waveform` FP32 [1,S] at
//! 24 kHz, turned here into an int16 WAV at the pool's `sample_rate`.
//!
//! Transports ([`TritonTransport`]): `http` ([`http`]: `POST /v2/models/{model}/infer` with the
//! binary tensor extension; the model must not be decoupled) and `grpc` ([`grpc`]:
//! `ModelStreamInfer`, chunks then an empty final response). Every exchange runs under the
//! attempt's deadline and a byte cap derived from `max_audio_seconds`.

pub mod grpc;
pub mod http;

use super::attempt::AttemptError;
use super::protocol::with_marker;
use crate::api::{wav, GenerateRequest, Mode, END_OF_PROMPT};
use crate::config::{ModelFamily, PoolConf, TritonTransport};
use crate::synth::Refusal;
use bytes::Bytes;
use pingora::connectors::http::Connector;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

/// The rate of the model's `reference_wav` input.
pub const INPUT_RATE: u32 = 16000;
/// The rate of the model's `waveform` output.
pub const OUTPUT_RATE: u32 = 24000;
/// Room for the JSON header, gRPC framing and tensor metadata beside the samples.
const ANSWER_SLACK: usize = 64 * 1024;

/// The system prompt CosyVoice3's own examples put in front of the marker.
const COSYVOICE3_SYSTEM_PROMPT: &str = crate::api::DEFAULT_SYSTEM_PROMPT;

/// One request in Triton's terms, built once per request and reused for every attempt.
#[derive(Debug, Clone)]
pub struct TritonCall {
    pub model: String,
    pub transport: TritonTransport,
    /// The prompt at 16 kHz mono.
    pub reference_wav: Vec<f32>,
    pub reference_text: Option<String>,
    pub target_text: String,
    /// The HTTP body (JSON header, then the tensors) and the JSON header's length.
    http_body: Bytes,
    http_json_len: usize,
}

/// Translates a validated request. `sft` is refused earlier ([`super::precheck`]); a mode
/// without prompt audio, or `speed` other than 1, cannot be expressed and is refused here.
pub fn build(pool: &PoolConf, req: &GenerateRequest) -> Result<TritonCall, Refusal> {
    check(req)?;
    let v3 = pool.model == ModelFamily::Cosyvoice3;
    let (reference_text, target_text) = match req.mode {
        Mode::ZeroShot => (
            Some(with_marker(v3, req.prompt_text.as_deref().unwrap_or(""), false)),
            req.text.clone(),
        ),
        // No transcript: the marker alone on the prompt side.
        Mode::CrossLingual => (
            v3.then(|| format!("{COSYVOICE3_SYSTEM_PROMPT}{END_OF_PROMPT}")),
            req.text.clone(),
        ),
        Mode::Instruct => (
            Some(with_marker(v3, req.instruct_text.as_deref().unwrap_or(""), true)),
            req.text.clone(),
        ),
        Mode::Sft => return Err(sft_refusal("this pool")),
    };
    let audio = req.prompt_audio.as_deref().unwrap_or_default();
    let reference_wav = prompt_samples(audio)?;
    let mut call = TritonCall {
        model: pool.model_name.clone(),
        transport: pool.transport,
        reference_wav,
        reference_text,
        target_text,
        http_body: Bytes::new(),
        http_json_len: 0,
    };
    if call.transport == TritonTransport::Http {
        let (body, json_len) = http::body(&call);
        call.http_body = body;
        call.http_json_len = json_len;
    }
    Ok(call)
}

/// What a Triton pool refuses, decided from the request alone and cheaply (the prompt's header,
/// not its samples), before the cache: `speed`, `sft`, no prompt, a prompt under 16 kHz.
pub fn check(req: &GenerateRequest) -> Result<(), Refusal> {
    if req.speed != 1.0 {
        return Err(Refusal::new(
            "unsupported_parameter",
            "`speed` other than 1.0 is not supported by this pool's backends (CosyVoice's Triton model has no speed input)",
        ));
    }
    if req.mode == Mode::Sft {
        return Err(sft_refusal("this pool"));
    }
    let audio = req.prompt_audio.as_deref().ok_or_else(|| {
        Refusal::new(
            "missing_prompt_audio",
            "this pool's backends (Triton) clone a voice from `prompt_audio`: send a prompt WAV",
        )
    })?;
    let rate = wav::header_info(audio)
        .map_err(|e| {
            Refusal::new(
                "invalid_prompt_audio",
                format!("prompt audio cannot be read: {e}"),
            )
        })?
        .sample_rate;
    if rate < INPUT_RATE {
        return Err(Refusal::new(
            "prompt_sample_rate",
            format!("prompt audio is {rate} Hz; CosyVoice needs at least {INPUT_RATE} Hz"),
        ));
    }
    Ok(())
}

/// The 422 for `sft` on a Triton pool.
pub fn sft_refusal(pool_name: &str) -> Refusal {
    Refusal::new(
        "sft_unavailable",
        format!(
            "pool {pool_name} runs CosyVoice on Triton, which has no preset speakers (sft): use \
             zero_shot, cross_lingual or instruct with prompt audio"
        ),
    )
}

/// The prompt WAV (any rate, int or float samples, any channel count; already validated) as
/// 16 kHz mono floats in -1..1.
fn prompt_samples(audio: &[u8]) -> Result<Vec<f32>, Refusal> {
    let (mono, rate) = wav::mono_f32(audio).map_err(|e| {
        Refusal::new(
            "invalid_prompt_audio",
            format!("prompt audio cannot be read: {e}"),
        )
    })?;
    if rate < INPUT_RATE {
        return Err(Refusal::new(
            "prompt_sample_rate",
            format!("prompt audio is {rate} Hz; CosyVoice needs at least {INPUT_RATE} Hz"),
        ));
    }
    Ok(wav::resample(&mono, rate, INPUT_RATE))
}

/// Most bytes one answer may carry: `max_audio_seconds` of FP32 at 24 kHz plus framing.
pub fn max_answer_bytes(pool: &PoolConf) -> usize {
    let samples = pool.max_audio_seconds * f64::from(OUTPUT_RATE);
    // `as` saturates; the value is checked to be finite and positive at load time.
    ((samples * 4.0).ceil() as usize).saturating_add(ANSWER_SLACK)
}

/// A boxed future, so that a caller's state machine holds only a pointer to it.
pub type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One attempt on one Triton backend, within `deadline`: the pool's WAV, or why not.
///
/// Returned boxed, and built in plain functions: the transports' futures (tonic's above all)
/// are large, and a debug build reserves room for a future in the stack frame of whatever
/// async function creates it, so creating them inline grew every request's poll frames
/// until a Pingora worker thread's stack overflowed.
#[inline(never)]
pub fn attempt<'a>(
    connector: &'a Connector,
    addr: SocketAddr,
    call: &'a TritonCall,
    pool: &'a PoolConf,
    request_id: &'a str,
    deadline: Duration,
) -> Boxed<'a, Result<Bytes, AttemptError>> {
    Box::pin(attempt_within(connector, addr, call, pool, request_id, deadline))
}

/// The transport's exchange, boxed (see [`attempt`]).
#[inline(never)]
fn exchange<'a>(
    connector: &'a Connector,
    addr: SocketAddr,
    call: &'a TritonCall,
    request_id: &'a str,
    cap: usize,
) -> Boxed<'a, Result<Vec<f32>, AttemptError>> {
    match call.transport {
        TritonTransport::Http => Box::pin(http::infer(connector, addr, call, request_id, cap)),
        TritonTransport::Grpc => Box::pin(grpc::stream_infer(addr, call, request_id, cap)),
    }
}

async fn attempt_within(
    connector: &Connector,
    addr: SocketAddr,
    call: &TritonCall,
    pool: &PoolConf,
    request_id: &str,
    deadline: Duration,
) -> Result<Bytes, AttemptError> {
    let started = std::time::Instant::now();
    let cap = max_answer_bytes(pool);
    let exchange = exchange(connector, addr, call, request_id, cap);
    let samples = match tokio::time::timeout(deadline, exchange).await {
        Ok(result) => result?,
        Err(_) => return Err(AttemptError::Timeout(started.elapsed())),
    };
    waveform_to_wav(&samples, pool.sample_rate)
}

/// 24 kHz float samples as an int16 WAV at `rate`.
fn waveform_to_wav(samples: &[f32], rate: u32) -> Result<Bytes, AttemptError> {
    if samples.is_empty() {
        return Err(AttemptError::Empty);
    }
    if samples.iter().any(|s| !s.is_finite()) {
        return Err(AttemptError::BadAudio(
            "the waveform holds NaN or infinite samples".into(),
        ));
    }
    let at_rate = wav::resample(samples, OUTPUT_RATE, rate);
    let pcm: Vec<u8> = at_rate
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes())
        .collect();
    wav::pcm16_to_wav(&pcm, rate)
        .map(Bytes::from)
        .map_err(|e| AttemptError::BadAudio(e.to_string()))
}

/// Little-endian FP32 bytes as samples (a trailing partial sample is an error).
fn fp32_samples(bytes: &[u8]) -> Result<Vec<f32>, AttemptError> {
    if !bytes.len().is_multiple_of(4) {
        return Err(AttemptError::BadAudio(format!(
            "FP32 tensor of {} bytes is not a whole number of samples",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// One BYTES element in Triton's raw layout: u32 LE length, then the bytes.
fn bytes_element(text: &str) -> Vec<u8> {
    let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(4 + text.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(extra: &str) -> PoolConf {
        serde_yaml::from_str(&format!(
            "protocol: triton\n{extra}backends: [ {{ addr: 127.0.0.1:1 }} ]\n"
        ))
        .expect("pool yaml")
    }

    #[test]
    fn prompts_of_any_rate_and_format_become_16k_mono_floats() {
        use hound::{SampleFormat, WavSpec, WavWriter};
        // 1 s stereo 48 kHz float, and 1 s 24 kHz int16.
        let mut c = std::io::Cursor::new(Vec::new());
        let spec = WavSpec {
            channels: 2,
            sample_rate: 48000,
            bits_per_sample: 32,
            sample_format: SampleFormat::Float,
        };
        let mut w = WavWriter::new(&mut c, spec).expect("writer");
        for _ in 0..48000 {
            w.write_sample(0.25f32).expect("sample");
            w.write_sample(0.75f32).expect("sample");
        }
        w.finalize().expect("finalize");
        let s = prompt_samples(c.get_ref()).expect("float prompt");
        assert_eq!(s.len(), 16000);
        assert!((s[8000] - 0.5).abs() < 1e-3, "mixed down: {}", s[8000]);
        let pcm: Vec<u8> = (0..24000).flat_map(|_| (-16384i16).to_le_bytes()).collect();
        let s = prompt_samples(&wav::pcm16_to_wav(&pcm, 24000).expect("wav")).expect("int prompt");
        assert_eq!(s.len(), 16000);
        assert!((s[8000] + 0.5).abs() < 1e-3, "scaled: {}", s[8000]);
        let low = wav::pcm16_to_wav(&[0u8; 1600], 8000).expect("wav");
        assert_eq!(
            prompt_samples(&low).err().map(|r| r.code),
            Some("prompt_sample_rate")
        );
    }

    #[test]
    fn options_default_to_http_and_cosyvoice3() {
        let p = pool("");
        assert_eq!(
            (p.transport, p.model_name.as_str()),
            (TritonTransport::Http, "cosyvoice3")
        );
        assert_eq!(p.health_path(), "/v2/health/ready");
        let g = pool("transport: grpc\nmodel_name: tts\n");
        assert_eq!(
            (g.transport, g.model_name.as_str()),
            (TritonTransport::Grpc, "tts")
        );
    }

    #[test]
    fn waveforms_become_int16_wavs_at_the_pool_rate() {
        let wav24 = waveform_to_wav(&vec![0.5; 2400], 24000).expect("wav");
        let info = wav::parse_wav(&wav24).expect("valid");
        assert_eq!((info.sample_rate, info.frames), (24000, 2400));
        let wav22 = waveform_to_wav(&vec![0.5; 2400], 22050).expect("wav");
        assert_eq!(wav::parse_wav(&wav22).expect("valid").frames, 2205);
        assert_eq!(waveform_to_wav(&[], 24000), Err(AttemptError::Empty));
        assert!(matches!(
            waveform_to_wav(&[f32::NAN], 24000),
            Err(AttemptError::BadAudio(_))
        ));
    }
}
