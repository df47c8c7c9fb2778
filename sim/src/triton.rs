//! The Triton (KServe v2) face of the simulator (`--serve triton`), imitating CosyVoice's
//! `runtime/triton_trtllm` model `cosyvoice3`: inputs `reference_wav` FP32 [1,N],
//! `reference_wav_len` INT32 [1,1], `reference_text` and `target_text` BYTES [1,1] (only
//! `target_text` required); output `waveform` FP32 [1,S] at the sim's sample rate (24 kHz by
//! default). What both transports share lives here: the tensors of a request, the audio (the
//! same deterministic voice as the FastAPI mode, as floats), and the settings. HTTP is in
//! `routes::triton`, gRPC in `triton_grpc`.

use crate::audio::{self, AudioKey};
use crate::state::SimState;
use crate::synth::Job;
use sha2::{Digest, Sha256};

/// The Triton mode's settings.
#[derive(Debug, Clone)]
pub struct TritonConf {
    /// The one model served (`--triton-model`).
    pub model: String,
    /// Whether the model is decoupled (`--decoupled`): HTTP `/infer` answers 501, gRPC
    /// `ModelStreamInfer` streams chunks then an empty final response.
    pub decoupled: bool,
}

/// What Triton says to an HTTP inference on a decoupled model.
pub const DECOUPLED_HTTP_ERROR: &str =
    "HTTP end point doesn't support models with decoupled transaction policy";

/// The tensors of one request, decoded.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub reference_wav: Vec<f32>,
    pub reference_wav_len: Option<i32>,
    pub reference_text: Option<String>,
    pub target_text: Option<String>,
}

impl Inputs {
    /// Checks what the model would: `target_text` present, `reference_wav_len` within the wav.
    pub fn validate(&self) -> Result<&str, String> {
        let text = self
            .target_text
            .as_deref()
            .ok_or("expected input 'target_text' is missing")?;
        if let Some(n) = self.reference_wav_len {
            if usize::try_from(n).map_or(true, |n| n > self.reference_wav.len()) {
                return Err(format!(
                    "reference_wav_len {n} does not fit reference_wav of {} samples",
                    self.reference_wav.len()
                ));
            }
        }
        Ok(text)
    }

    /// The synthesis job: the target text in the voice of the reference wav's digest.
    pub fn job(&self) -> Job {
        let prompt_sha256 = (!self.reference_wav.is_empty()).then(|| {
            let mut h = Sha256::new();
            for s in &self.reference_wav {
                h.update(s.to_le_bytes());
            }
            h.finalize().into()
        });
        Job {
            text: self.target_text.clone().unwrap_or_default(),
            prompt_sha256,
            seed: 0,
            speed: 1.0,
        }
    }

    /// Decodes one tensor given as raw little-endian bytes (BYTES: u32 LE length + bytes).
    pub fn set_raw(&mut self, name: &str, datatype: &str, raw: &[u8]) -> Result<(), String> {
        match (name, datatype) {
            ("reference_wav", "FP32") => {
                if !raw.len().is_multiple_of(4) {
                    return Err("reference_wav: byte size is not a multiple of 4".into());
                }
                self.reference_wav = raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
            }
            ("reference_wav_len", "INT32") => {
                let b: [u8; 4] = raw
                    .get(..4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or("reference_wav_len: expected 4 bytes")?;
                self.reference_wav_len = Some(i32::from_le_bytes(b));
            }
            ("reference_text" | "target_text", "BYTES") => {
                let text = first_bytes_element(raw).ok_or(format!("{name}: malformed BYTES tensor"))?;
                self.set_text(name, text);
            }
            _ => return Err(format!("unexpected input '{name}' of type {datatype}")),
        }
        Ok(())
    }

    pub fn set_text(&mut self, name: &str, text: String) {
        if name == "reference_text" {
            self.reference_text = Some(text);
        } else {
            self.target_text = Some(text);
        }
    }
}

/// The first element of a raw BYTES tensor.
fn first_bytes_element(raw: &[u8]) -> Option<String> {
    let len = u32::from_le_bytes(raw.get(..4)?.try_into().ok()?) as usize;
    let bytes = raw.get(4..4usize.checked_add(len)?)?;
    String::from_utf8(bytes.to_vec()).ok()
}

/// The waveform of `job` in chunks of float samples, one per text segment (as the FastAPI
/// mode streams them), each with its nominal compute seconds: `--first-chunk-ms` of start-up
/// before the first, then `--rtf` × each segment's audio.
pub fn chunks(state: &SimState, job: &Job) -> Vec<(Vec<f32>, f64)> {
    let rate = f64::from(state.sample_rate.max(1));
    audio::segments(&job.text)
        .into_iter()
        .enumerate()
        .map(|(i, segment)| {
            let key = AudioKey {
                text: segment,
                prompt_sha256: job.prompt_sha256,
                seed: job.seed,
                speed: job.speed,
            };
            let samples: Vec<f32> = audio::synthesize(&key, state.sample_rate)
                .chunks_exact(2)
                .map(|p| f32::from(i16::from_le_bytes([p[0], p[1]])) / 32768.0)
                .collect();
            let start = if i == 0 {
                state.timing.first_chunk.as_secs_f64()
            } else {
                0.0
            };
            let work = start + state.timing.rtf * samples.len() as f64 / rate;
            (samples, work)
        })
        .collect()
}

/// Number of waveform samples the sim produces for `target_text` (for tests).
pub fn waveform_len(target_text: &str, sample_rate: u32) -> usize {
    audio::segments(target_text)
        .into_iter()
        .map(|segment| {
            let key = AudioKey {
                text: segment,
                prompt_sha256: None,
                seed: 0,
                speed: 1.0,
            };
            audio::frame_count(&key, sample_rate)
        })
        .sum()
}

/// Serves the Triton mode: HTTP on `listener` (already announced), gRPC on `--grpc-listen`
/// when given (announced on a second stdout line).
pub async fn serve(
    args: crate::cli::Args,
    listener: tokio::net::TcpListener,
    state: std::sync::Arc<SimState>,
) -> std::io::Result<()> {
    use std::io::Write;
    let conf = std::sync::Arc::new(TritonConf {
        model: args.triton_model.clone(),
        decoupled: args.decoupled,
    });
    log::info!(
        "Triton simulator, model {} ({}), {} Hz waveform",
        conf.model,
        if conf.decoupled {
            "decoupled"
        } else {
            "not decoupled"
        },
        state.sample_rate
    );
    let http = axum::serve(
        listener,
        crate::routes::triton::router(state.clone(), conf.clone()),
    );
    let Some(grpc_addr) = args.grpc_listen else {
        return http.await;
    };
    let grpc_listener = tokio::net::TcpListener::bind(grpc_addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {grpc_addr}: {e}")))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "cosyvoice-sim grpc listening on {}",
            grpc_listener.local_addr()?
        )?;
        out.flush()?;
    }
    let grpc = crate::triton_grpc::serve(grpc_listener, state, conf);
    tokio::select! {
        r = http => r,
        r = grpc => r,
    }
}
