//! The deep health probe (`health.synthesize_every`): a liveness check (`/docs` answering 200)
//! says nothing about the GPU path, so this sends every backend of the pool a tiny synthesis
//! and checks the audio that comes back. A backend that fails it is marked in the pool's
//! [`DeepHealth`](super::pool::DeepHealth): the scheduler gives it no traffic and the supervisor
//! sees it unhealthy (and restarts it, with `restart:`), until a probe passes again. Failing
//! backends are probed every `health.interval`, the others every `synthesize_every`.
//!
//! The probe goes around the queue (it takes no GPU slot): it is one short sentence, and a
//! backend too busy to answer it within `health.timeout` + the pool's `timeout` is not healthy.

use super::{BackendPool, PoolSet};
use crate::api::{wav, GenerateRequest, Mode, END_OF_PROMPT};
use crate::config::ModelFamily;
use crate::metrics;
use async_trait::async_trait;
use bytes::Bytes;
use log::{info, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the probe says.
const PROBE_TEXT: &str = "Hello.";

/// The background service probing one pool.
pub struct DeepProbe {
    pools: Arc<PoolSet>,
    pool: Arc<BackendPool>,
    every: Duration,
}

impl DeepProbe {
    /// None when the pool has no `health.synthesize_every`.
    pub fn new(pools: &Arc<PoolSet>, pool: &Arc<BackendPool>) -> Option<Self> {
        let every = pool.conf.health.synthesize_every?.0;
        Some(Self {
            pools: pools.clone(),
            pool: pool.clone(),
            every,
        })
    }

    /// One probe of `addr`: Ok, or why it failed.
    async fn probe(&self, addr: SocketAddr, request: &GenerateRequest) -> Result<(), String> {
        let prepared = self
            .pools
            .prepare(&self.pool, request)
            .map_err(|r| format!("the probe request is refused by the pool: {r}"))?;
        let limit = self.pool.conf.timeout.0;
        let id = format!("deep-probe-{:016x}", rand::random::<u64>());
        let wav = self
            .pools
            .attempt(&prepared, addr, &id, limit, None)
            .await
            .map_err(|e| e.to_string())?;
        let info = wav::parse_wav(&wav).map_err(|e| e.to_string())?;
        if info.frames == 0 {
            return Err("the audio is empty".into());
        }
        Ok(())
    }
}

#[async_trait]
impl BackgroundService for DeepProbe {
    /// Runs for the life of the server; returns on shutdown.
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let request = probe_request(&self.pool);
        let tick = self.pool.conf.health.interval.0;
        let mut last: HashMap<SocketAddr, Instant> = HashMap::new();
        let mut interval = tokio::time::interval(tick);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.changed() => return,
            }
            for b in &self.pool.conf.backends.0 {
                let addr = b.addr;
                let failing = self.pool.deep.failing(addr);
                let due = last
                    .get(&addr)
                    .is_none_or(|t| t.elapsed() >= if failing { tick } else { self.every });
                if !due {
                    continue;
                }
                last.insert(addr, Instant::now());
                let verdict = self.probe(addr, &request).await;
                let label = [addr.to_string()];
                let result = if verdict.is_ok() { "ok" } else { "failed" };
                metrics::DEEP_PROBES
                    .with_label_values(&[label[0].as_str(), result])
                    .inc();
                let changed = self.pool.deep.record(addr, verdict.is_ok());
                match verdict {
                    Err(e) if changed => warn!(
                        "pool {} backend {addr} answers its health check but cannot synthesize ({e}); no traffic until a deep probe passes",
                        self.pool.name
                    ),
                    Ok(()) if changed => info!("pool {} backend {addr} synthesizes again", self.pool.name),
                    _ => {}
                }
            }
        }
    }
}

/// A tiny zero-shot request with a one-second tone as the prompt (and the marker CosyVoice3
/// needs): a prompt route, because that is where servers break while `/docs` stays green
/// (upstream `server.py`'s decoded-tensor bug cuts every prompt route, never `sft`).
fn probe_request(pool: &BackendPool) -> GenerateRequest {
    let prompt_text = match pool.conf.model {
        ModelFamily::Cosyvoice3 => format!("You are a helpful assistant.{END_OF_PROMPT}Hello there."),
        ModelFamily::Cosyvoice2 => "Hello there.".to_string(),
    };
    GenerateRequest {
        mode: Mode::ZeroShot,
        text: PROBE_TEXT.to_string(),
        prompt_audio: Some(Bytes::from(tone_wav())),
        prompt_text: Some(prompt_text),
        instruct_text: None,
        spk_id: None,
        seed: 0,
        speed: 1.0,
        stream: false,
        prompt_sha256: None,
    }
}

/// One second of a 220 Hz tone at 16 kHz, as a WAV.
fn tone_wav() -> Vec<u8> {
    let pcm: Vec<u8> = (0..16_000)
        .flat_map(|i| {
            let t = f64::from(i) / 16_000.0;
            (((t * 220.0 * std::f64::consts::TAU).sin() * 8000.0) as i16).to_le_bytes()
        })
        .collect();
    wav::pcm16_to_wav(&pcm, 16_000).unwrap_or_default()
}
