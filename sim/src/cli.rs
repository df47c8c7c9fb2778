//! Command-line flags of `cosyvoice-sim`: what the simulated GPU, model and server look like.

use clap::{Parser, ValueEnum};
use std::net::SocketAddr;

/// A simulated CosyVoice3 FastAPI backend (`runtime/python/fastapi/server.py`) for tests,
/// benchmarks and demos: same routes and wire format, deterministic audio, a latency and GPU
/// capacity model, and injectable faults (`/__sim/*`).
#[derive(Debug, Clone, Parser)]
#[command(name = "cosyvoice-sim", version)]
pub struct Args {
    /// Address to listen on; port 0 picks a free port (the chosen one is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:50000")]
    pub listen: SocketAddr,

    /// GPU capacity: how many syntheses run at full speed at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub slots: u32,

    /// Real-time factor: synthesis seconds per second of audio.
    #[arg(long, default_value_t = 0.1, value_parser = parse_non_negative)]
    pub rtf: f64,

    /// Start-up work of every synthesis, in milliseconds (frontend, prompt features). The first
    /// chunk goes out after this plus the synthesis of the whole first segment (`--rtf` × its
    /// audio seconds); each next chunk after its own segment's synthesis.
    #[arg(long, default_value_t = 200)]
    pub first_chunk_ms: u64,

    /// Sample rate of the PCM produced (Hz).
    #[arg(long, default_value_t = 24000, value_parser = clap::value_parser!(u32).range(1000..=384000))]
    pub sample_rate: u32,

    /// What happens over capacity (more requests in flight than --slots).
    #[arg(long, value_enum, default_value_t = Overload::Slow)]
    pub overload: Overload,

    /// Which model to imitate (CosyVoice3 insists on `<|endofprompt|>`).
    #[arg(long, value_enum, default_value_t = ModelKind::Cosyvoice3)]
    pub model: ModelKind,

    /// Preset speakers for `sft`, comma-separated (e.g. `中文女,英文男`). Default: none for
    /// CosyVoice3 (as shipped: `sft` answers 200 then cuts), CosyVoice2's seven presets for
    /// `--model cosyvoice2`.
    #[arg(long, value_delimiter = ',')]
    pub speakers: Option<Vec<String>>,

    /// Reproduce a known bug of upstream's `server.py`. `tensor`: the route hands the frontend
    /// an already-decoded prompt tensor, which the current frontend cannot load, so
    /// zero_shot, cross_lingual and instruct2 answer 200 then cut, on every model (CosyVoice
    /// issues #1794, #1805).
    #[arg(long, value_enum)]
    pub upstream_bug: Option<UpstreamBug>,

    /// Also answer `GET /health` with `{"status":"ok"}`, as a `generate_json` backend does.
    /// CosyVoice's FastAPI server has no such route (only `/docs` and `/openapi.json`), so
    /// without this flag `/health` is FastAPI's 404.
    #[arg(long)]
    pub json_health: bool,

    /// Which server to imitate: CosyVoice's FastAPI server (with `/generate`), its Gradio
    /// WebUI (`webui.py`), or Triton (KServe v2) serving CosyVoice's `runtime/triton_trtllm`
    /// model.
    #[arg(long, value_enum, default_value_t = Serve::Fastapi)]
    pub serve: Serve,

    /// `--serve triton`: the model is decoupled (HTTP `/infer` answers 501; gRPC streams
    /// chunks, then an empty final response).
    #[arg(long)]
    pub decoupled: bool,

    /// `--serve triton`: also serve KServe v2 gRPC on this address (a second stdout line
    /// announces it: `cosyvoice-sim grpc listening on IP:PORT`).
    #[arg(long)]
    pub grpc_listen: Option<SocketAddr>,

    /// `--serve triton`: the model's name.
    #[arg(long, default_value = "cosyvoice3")]
    pub triton_model: String,
}

/// Bugs of upstream's server that the sim can reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UpstreamBug {
    /// Prompt routes fail inside the stream (a decoded tensor given to the frontend).
    Tensor,
}

/// The server imitated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Serve {
    /// CosyVoice's `runtime/python/fastapi/server.py` (plus `/generate`).
    Fastapi,
    /// `webui.py` (Gradio 5.4): upload, `/call/generate_audio`, event streams, audio files.
    Gradio,
    /// Triton + TensorRT-LLM (`runtime/triton_trtllm`), KServe v2 over HTTP (and gRPC).
    Triton,
}

/// Behaviour over capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Overload {
    /// Everyone slows down by the factor inflight/slots.
    Slow,
    /// The process dies like a CUDA out-of-memory would.
    Oom,
}

/// The model generation imitated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelKind {
    Cosyvoice3,
    Cosyvoice2,
}

impl ModelKind {
    /// Whether the model fails when `<|endofprompt|>` is missing from the prompt side and
    /// the text (CosyVoice3 asserts it over `prompt_text + tts_text`).
    pub fn requires_endofprompt(self) -> bool {
        matches!(self, ModelKind::Cosyvoice3)
    }
}

fn parse_non_negative(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err("must be a finite number >= 0".into())
    }
}
