//! The path every synthesis route shares once it has a caller, a pool and a validated
//! [`GenerateRequest`]: prepare it for the pool's protocol and compute its cache key (off the
//! worker threads when the prompt audio is large), run it in its own production task, wait for
//! the answer or turn it into a `202` job, and write the audio in the route's format.
//!
//! The routes (`/generate`, OpenAI's `/v1/audio/speech`, CosyVoice's `/inference_*`) differ
//! only in how they read the request and in [`Answering`]: the audio format, whether it is
//! streamed, and whether a slow request may become a job.

use super::body_budget::Reservation;
use super::ApiError;
use super::{Gateway, RequestCtx};
use crate::admission::Caller;
use crate::api::GenerateRequest;
use crate::backend::{BackendPool, Prepared};
use crate::jobs::{self, status_of, JobStatus, Phase, Progress};
use crate::synth::{Degraded, PrecomputedKey, Source, SynthRequest, Synthesized, Trace, Traced};
use bytes::Bytes;
use log::info;
use parking_lot::Mutex;
use pingora::proxy::Session;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Longest a 202 waits for its job's creation record (disk, Redis) to be written.
const JOB_RECORD_WAIT: Duration = Duration::from_secs(1);

/// Inputs larger than this are parsed, checked and hashed off the worker threads.
pub(super) const HEAVY_INPUT: usize = 1024 * 1024;

/// The audio format an answer is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AudioFormat {
    /// A RIFF/WAVE file (`Content-Type: audio/wav`), as synthesized.
    Wav,
    /// Raw signed 16-bit little-endian mono PCM at `sample_rate` (CosyVoice's own routes,
    /// OpenAI's `pcm`); audio at another rate or layout is converted.
    Pcm { sample_rate: u32 },
    /// OpenAI's `stream_format: "sse"`: the audio (the WAV, or PCM at `pcm_rate`) in base64
    /// `speech.audio.delta` events, then `speech.audio.done` (see `openai::sse_events`).
    OpenAiSse { pcm_rate: Option<u32> },
}

/// How a route wants its synthesis answered.
#[derive(Debug, Clone, Copy)]
pub(super) struct Answering {
    pub format: AudioFormat,
    /// Send the audio as it is produced (chunked) instead of as one complete body.
    pub stream: bool,
    /// Whether a request still queued after the pool's `async_after`, or one that asked
    /// `Prefer: respond-async`, becomes a `202` job (`/generate` only).
    pub may_defer: bool,
}

/// A validated request for a pool, with the reservation that holds its body's bytes in the
/// bodies budget (kept while the production task holds the request, also as a job).
pub(super) struct Validated {
    pub pool: Arc<BackendPool>,
    pub req: GenerateRequest,
    pub held: Reservation,
}

/// Aborts the production task when the client goes away, unless it became a job.
struct AbortUnlessJob(Option<tokio::task::AbortHandle>);

impl Drop for AbortUnlessJob {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// Whether a request header lists `token` (comma or semicolon separated, any case).
pub(super) fn header_has(session: &Session, name: http::HeaderName, token: &[u8]) -> bool {
    session.req_header().headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',' || *b == b';')
            .any(|d| d.trim_ascii().eq_ignore_ascii_case(token))
    })
}

impl Gateway {
    /// Runs `work` on tokio's blocking pool, at most `heavy`'s permits at once, so JSON, base64,
    /// WAV checks and hashing of a 10 MB input do not stall the worker threads' other requests.
    pub(super) async fn off_thread<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    {
        let permit = self
            .heavy
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ApiError::new(500, "internal", format!("validation is shut down: {e}")))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| ApiError::new(500, "internal", format!("the validation task failed: {e}")))?
    }

    /// Translates `req` for `pool` and computes its cache key (when there is a cache), off the
    /// worker threads when the prompt audio is large.
    async fn prepare(
        &self,
        pool: &Arc<BackendPool>,
        req: GenerateRequest,
        cache_scope: &str,
    ) -> Result<(GenerateRequest, Prepared, Option<PrecomputedKey>), ApiError> {
        let (pools, pool, cache) = (self.pools.clone(), pool.clone(), self.cache.clone());
        let scope = cache_scope.to_string();
        let heavy = req_is_heavy(&req);
        let work = move || {
            let prepared = pools.prepare(&pool, &req)?;
            let key = cache.map(|c| c.key(&scope, &pool.name, &pool.conf.model_version, &req));
            Ok((req, prepared, key))
        };
        if heavy {
            self.off_thread(work).await
        } else {
            work()
        }
    }

    /// Answers a validated request: runs it in its own production task (which survives the
    /// exchange only as a 202 job), waits for the answer while watching for the client to go
    /// away, and writes it as `answering` says.
    pub(super) async fn synthesize_and_answer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        caller: &Caller,
        validated: Validated,
        answering: Answering,
    ) -> Result<(), ApiError> {
        let Validated { pool, req, held } = validated;
        let cache_scope = caller.cache_scope();
        let (req, prepared, cache_key) = self.prepare(&pool, req, &cache_scope).await?;
        let eta = pool.scheduler.eta(pool.scheduler.queue_len());
        let progress: Progress = Arc::new(Mutex::new(Phase::Pending { eta }));
        let async_after = pool.conf.queue.async_after.0;
        let key_hex = cache_key.as_ref().map(|(key, _)| key.hex());
        let (listen, mut tapped) = if answering.stream {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let request = SynthRequest {
            req,
            prepared,
            cache_key,
            cache_scope,
            no_store: header_has(session, http::header::CACHE_CONTROL, b"no-store"),
            client: caller.owner(),
            request_id: ctx.request_id.clone(),
            listen,
        };
        let respond_async = answering.may_defer
            && header_has(session, http::HeaderName::from_static("prefer"), b"respond-async");
        if respond_async {
            self.jobs.check_quota(&caller.owner())?; // over it, nothing starts
        } else if let Some(hit) = self.memory_hit(&request).await {
            // A hot entry: answered here, without a production task, its timers and its trace.
            drop((request, held));
            count_audio(&pool.name, &hit);
            return self.answer_whole(session, ctx, hit, answering).await;
        }
        let trace = Arc::new(Trace::default());
        ctx.trace = Some(trace.clone());
        let reports = Arc::new(Traced {
            progress: progress.clone(),
            trace,
        });
        let (synthesizer, cell, pool_name) = (self.synthesizer.clone(), progress.clone(), pool.name.clone());
        let mut task = tokio::spawn(async move {
            let _held = held;
            let result = jobs::track(cell, synthesizer.synthesize(request, reports)).await;
            if let Ok(answer) = &result {
                count_audio(&pool_name, answer);
            }
            result
        });
        let mut guard = AbortUnlessJob(Some(task.abort_handle()));
        if !respond_async {
            // Wait for the answer; once async_after has passed, a request still queued becomes
            // a job (checked again every 50 ms: a retry can queue again).
            let deadline = Instant::now() + async_after;
            loop {
                let wake = deadline.max(Instant::now() + Duration::from_millis(50));
                tokio::select! {
                    biased;
                    tap = next_tap(&mut tapped) => {
                        tapped = None;
                        if let Some(tap) = tap {
                            // A streaming request whose synthesis started (or was joined).
                            return self.answer_stream(session, ctx, tap, key_hex, answering.format, &mut task).await;
                        }
                    }
                    result = &mut task => {
                        let answer = result.map_err(|e| ApiError::new(500, "internal", format!("the synthesis task failed: {e}")))??;
                        return self.answer_whole(session, ctx, answer, answering).await;
                    }
                    gone = session.as_downstream_mut().read_body_or_idle(true) => {
                        if let Err(e) = gone {
                            // The client hung up: dropping the guard aborts the task, which
                            // leaves the queue (or releases its slot) at once.
                            ctx.status = 499;
                            info!("request {}: the client went away while waiting: {e}", ctx.request_id);
                            return Ok(());
                        }
                    }
                    _ = tokio::time::sleep_until(wake) => {
                        if answering.may_defer
                            && Instant::now() >= deadline
                            && matches!(status_of(&progress), JobStatus::Queued { .. })
                        {
                            break;
                        }
                    }
                }
            }
        }
        let id = self.jobs.create(&caller.owner(), progress.clone(), task)?;
        guard.0 = None; // the job owns the task now
        self.jobs.recorded(&id, JOB_RECORD_WAIT).await;
        self.send_job_status(session, ctx, 202, &id, &progress).await;
        Ok(())
    }

    /// The memory tier's entry for a request that may use the cache (`None` without a cache,
    /// with `Cache-Control: no-store`, or when memory does not hold it).
    async fn memory_hit(&self, request: &SynthRequest) -> Option<Synthesized> {
        let cache = self.cache.as_ref().filter(|_| !request.no_store)?;
        let (key, _) = request.cache_key.as_ref()?;
        cache.memory_hit(key).await
    }

    /// Writes a whole answer: streamed (in one go, as the route frames a stream) or as one body.
    async fn answer_whole(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        answer: Synthesized,
        answering: Answering,
    ) -> Result<(), ApiError> {
        if answering.stream {
            let head = super::stream::StreamHead {
                headers: answer_headers(ctx, &answer),
            };
            let streamed = self
                .stream_whole(session, ctx, &answer, head, answering.format)
                .await;
            return super::stream::settle(session, ctx, streamed);
        }
        self.send_answer(session, ctx, answer, answering.format).await;
        Ok(())
    }

    /// Writes a synthesized answer in `format`, with `X-Cache`, `X-Cache-Tier`, `Age`,
    /// `X-Degraded` (and `X-Degraded-Reason`) and `X-Cache-Key` as its source says, and notes the source for the access log.
    pub(super) async fn send_answer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        answer: Synthesized,
        format: AudioFormat,
    ) {
        let headers = answer_headers(ctx, &answer);
        ctx.audio_seconds = audio_seconds(&answer.wav);
        match format {
            AudioFormat::Wav => {
                self.write(session, ctx, 200, "audio/wav", &headers, answer.wav)
                    .await;
            }
            AudioFormat::Pcm { sample_rate } => {
                match crate::api::wav::to_pcm16_mono(&answer.wav, sample_rate) {
                    Ok(pcm) => {
                        self.write(session, ctx, 200, PCM_CONTENT_TYPE, &headers, Bytes::from(pcm))
                            .await;
                    }
                    Err(e) => {
                        let err = ApiError::new(
                            500,
                            "internal",
                            format!("the audio could not be converted to PCM: {e}"),
                        );
                        self.fail(session, ctx, err).await;
                    }
                }
            }
            // Always streamed (`openai.rs`); a whole SSE answer goes through `stream_whole`.
            AudioFormat::OpenAiSse { .. } => {
                let head = super::stream::StreamHead { headers };
                let streamed = self.stream_whole(session, ctx, &answer, head, format).await;
                if let Err(err) = super::stream::settle(session, ctx, streamed) {
                    self.fail(session, ctx, err).await;
                }
            }
        }
    }
}

/// The type of raw PCM answers (RFC 2586 would say `audio/L16`, but clients of CosyVoice's
/// server and of OpenAI's `pcm` read the bytes whatever the type says).
pub(super) const PCM_CONTENT_TYPE: &str = "application/octet-stream";

/// The next tap of a streaming request (None: none will come, the answer is whole); pends
/// forever for a request that is not streaming.
async fn next_tap(
    rx: &mut Option<tokio::sync::oneshot::Receiver<crate::synth::Tap>>,
) -> Option<crate::synth::Tap> {
    match rx {
        Some(rx) => rx.await.ok(),
        None => std::future::pending().await,
    }
}

/// The cache headers of an answer (and the access log's note of them), with the budget.
pub(super) fn answer_headers(ctx: &mut RequestCtx, answer: &Synthesized) -> Vec<(&'static str, String)> {
    let mut headers = Vec::new();
    let tier = match answer.source {
        Source::Tier(tier) => Some(tier),
        Source::InFlight => Some("inflight"),
        Source::Backend(_) | Source::Fallback => None,
    };
    ctx.cache = match (answer.key, tier) {
        (None, _) => "BYPASS",
        (Some(_), None) => "MISS",
        (Some(_), Some(tier)) => {
            ctx.tier = tier;
            headers.push(("X-Cache-Tier", tier.to_string()));
            headers.push(("Age", answer.age_secs().to_string()));
            "HIT"
        }
    };
    headers.insert(0, ("X-Cache", ctx.cache.to_string()));
    ctx.degraded = answer.degradation();
    if let Some(degraded) = ctx.degraded {
        headers.push(("X-Degraded", degraded.kind().to_string()));
        if matches!(degraded, Degraded::Approximate { .. }) {
            headers.push(("X-Degraded-Reason", degraded.reason().to_string()));
        }
    }
    if let Some(key) = answer.key {
        headers.push(("X-Cache-Key", key.hex()));
    }
    headers.extend(ctx.budget.iter().cloned());
    headers
}

fn req_is_heavy(req: &GenerateRequest) -> bool {
    req.prompt_audio.as_ref().is_some_and(|a| a.len() > HEAVY_INPUT)
}

/// Seconds of audio in a WAV answer, from its header (every answer was checked whole when it
/// left its backend or the cache; 0 for one that cannot be read).
pub(super) fn audio_seconds(wav: &[u8]) -> f64 {
    crate::api::wav::header_info(wav).map_or(0.0, |info| info.duration_secs())
}

/// Counts an answer's audio in `cosygate_audio_seconds_total` once, when it is produced (a 202
/// job's result is not counted again when fetched).
fn count_audio(pool: &str, answer: &Synthesized) {
    let source = match answer.source {
        Source::Backend(_) => "backend",
        Source::Fallback => "fallback",
        // Cached, or joined to another request's synthesis: GPU time saved either way.
        Source::Tier(_) | Source::InFlight => "cache",
    };
    crate::metrics::AUDIO_SECONDS
        .with_label_values(&[pool, source])
        .inc_by(audio_seconds(&answer.wav));
}
