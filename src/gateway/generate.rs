//! `POST /generate` and `GET /v1/jobs/{id}`: admission on the headers, then the body and its
//! validation, then the answer, produced in its own task. A request that has not started (is
//! still queued for a GPU slot) after the pool's `queue.async_after`, or that asked
//! `Prefer: respond-async`, is answered `202 Accepted` and becomes a job that keeps its place.

use super::body;
use super::ApiError;
use super::{Gateway, RequestCtx};
use crate::admission::Caller;
use crate::api::{GenerateRequest, RequestLimits};
use crate::backend::{BackendPool, Prepared};
use crate::jobs::{self, status_of, JobStatus, Phase, Progress};
use crate::synth::{PrecomputedKey, Source, SynthRequest, Synthesized, Trace, Traced};
use log::info;
use parking_lot::Mutex;
use pingora::proxy::Session;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Longest a 202 waits for its job's creation record (disk, Redis) to be written.
const JOB_RECORD_WAIT: Duration = Duration::from_secs(1);

/// Bodies larger than this are validated off the worker threads (`validate_off_thread`).
const HEAVY_BODY: usize = 1024 * 1024;

/// Aborts the production task when the client goes away, unless it became a job.
struct AbortUnlessJob(Option<tokio::task::AbortHandle>);

impl Drop for AbortUnlessJob {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

fn header_has(session: &Session, name: http::HeaderName, token: &[u8]) -> bool {
    session.req_header().headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',' || *b == b';')
            .any(|d| d.trim_ascii().eq_ignore_ascii_case(token))
    })
}

impl Gateway {
    fn caller(&self, session: &Session, ctx: &mut RequestCtx) -> Result<Caller, ApiError> {
        // Never guessed: a request we cannot attribute is refused (the connection guard
        // already closes such connections; this is the second lock).
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
            .ok_or_else(|| {
                ApiError::new(
                    403,
                    "no_client_address",
                    "the gateway cannot tell this connection's address; connect over TCP",
                )
                .closing()
            })?;
        let caller = self.admission.identify(peer, &session.req_header().headers)?;
        ctx.client = Some(caller.ip);
        if let Some(id) = &caller.identity {
            // A configured name, never a client's: the label set stays bounded.
            ctx.tenant = id.tenant.clone().unwrap_or_else(|| id.name.clone());
        }
        Ok(caller)
    }

    /// `POST /generate`.
    pub(super) async fn generate(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<(), ApiError> {
        let caller = self.caller(session, ctx)?;
        let pool_name = session
            .req_header()
            .headers
            .get("X-Cosygate-Pool")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let may_use = caller.identity.as_deref().map(|id| move |p: &str| id.may_use(p));
        let may_use = may_use.as_ref().map(|f| f as &dyn Fn(&str) -> bool);
        let pool = self.pools.pool(pool_name.as_deref(), may_use)?.clone();
        ctx.pool = pool.name.clone();
        self.admission.authorize(&caller, &pool.name)?;
        ctx.budget = self.admission.take_token(&caller).await?;
        if !header_is_json(session) {
            return Err(ApiError::new(
                415,
                "unsupported_media_type",
                "send the request as JSON with Content-Type: application/json",
            )
            .closing());
        }
        let (raw, held) = body::read_body(
            session,
            self.limits.max_body.as_usize(),
            self.limits.body_timeout.0,
            &self.bodies,
        )
        .await?;
        ctx.bytes_in = raw.len() as u64;
        let limits = RequestLimits {
            max_text_chars: self.limits.max_text_chars,
            max_prompt_seconds: self.limits.max_prompt_seconds,
        };
        let cache_scope = caller.cache_scope();
        let (req, prepared, cache_key) = if raw.len() > HEAVY_BODY {
            self.validate_off_thread(raw, limits, &pool, &cache_scope).await?
        } else {
            let req = GenerateRequest::parse(&raw, limits)?;
            let prepared = self.pools.prepare(&pool, &req)?;
            (req, prepared, None)
        };
        let eta = pool.scheduler.eta(pool.scheduler.queue_len());
        let progress: Progress = Arc::new(Mutex::new(Phase::Pending { eta }));
        let async_after = pool.conf.queue.async_after.0;
        let request = SynthRequest {
            req,
            prepared,
            cache_key,
            cache_scope,
            no_store: header_has(session, http::header::CACHE_CONTROL, b"no-store"),
            client: caller.owner(),
            request_id: ctx.request_id.clone(),
        };
        let respond_async = header_has(session, http::HeaderName::from_static("prefer"), b"respond-async");
        if respond_async {
            self.jobs.check_quota(&caller.owner())?; // over it, nothing starts
        }
        // The body's bytes stay reserved while the task holds the request (also as a job).
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
                    result = &mut task => {
                        let answer = result.map_err(|e| ApiError::new(500, "internal", format!("the synthesis task failed: {e}")))??;
                        self.send_answer(session, ctx, answer).await;
                        return Ok(());
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
                        if Instant::now() >= deadline && matches!(status_of(&progress), JobStatus::Queued { .. }) {
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

    /// Parses and validates a large body, prepares its backend request and computes its cache
    /// key on tokio's blocking pool, at most `heavy`'s permits at once, so JSON, base64, WAV
    /// checks and hashing of a 10 MB body do not stall the worker threads' other requests.
    async fn validate_off_thread(
        &self,
        raw: bytes::Bytes,
        limits: RequestLimits,
        pool: &Arc<BackendPool>,
        cache_scope: &str,
    ) -> Result<(GenerateRequest, Prepared, Option<PrecomputedKey>), ApiError> {
        let permit = self
            .heavy
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ApiError::new(500, "internal", format!("validation is shut down: {e}")))?;
        let (pools, pool, cache) = (self.pools.clone(), pool.clone(), self.cache.clone());
        let scope = cache_scope.to_string();
        let work = move || {
            let _permit = permit;
            let req = GenerateRequest::parse(&raw, limits)?;
            drop(raw);
            let prepared = pools.prepare(&pool, &req)?;
            let key = cache.map(|c| {
                let key = c.key(&scope, &pool.name, &pool.conf.model_version, &req);
                (key, crate::cache::key::describe(&pool.name, &req))
            });
            Ok((req, prepared, key))
        };
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| ApiError::new(500, "internal", format!("the validation task failed: {e}")))?
    }

    /// `GET /v1/jobs/{id}`: 202 while queued or running, the answer when done, 404 otherwise.
    pub(super) async fn job(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        id: &str,
    ) -> Result<(), ApiError> {
        let caller = self.caller(session, ctx)?;
        let not_found = || {
            ApiError::new(
                404,
                "job_not_found",
                "no such job (unknown, expired, or not yours); results are kept for a limited time",
            )
        };
        let status = self.jobs.find(id, &caller.owner()).await.ok_or_else(not_found)?;
        match status {
            JobStatus::Done(Ok(answer)) => {
                self.send_answer(session, ctx, answer).await;
                Ok(())
            }
            JobStatus::Done(Err(e)) => Err(e.into()),
            JobStatus::Queued { .. } | JobStatus::Running => {
                // A job of another process (recorded before an upgrade) is running there.
                let progress = self
                    .jobs
                    .progress(id)
                    .unwrap_or_else(|| Arc::new(Mutex::new(Phase::Running)));
                self.send_job_status(session, ctx, 202, id, &progress).await;
                Ok(())
            }
        }
    }

    /// Writes a synthesized answer: the WAV with `X-Cache`, `X-Cache-Tier`, `Age`,
    /// `X-Degraded` and `X-Cache-Key` as its source says, and notes the source for the access log.
    async fn send_answer(&self, session: &mut Session, ctx: &mut RequestCtx, answer: Synthesized) {
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
        if answer.degraded {
            headers.push(("X-Degraded", "fallback".to_string()));
        }
        if let Some(key) = answer.key {
            headers.push(("X-Cache-Key", key.hex()));
        }
        ctx.audio_seconds = audio_seconds(&answer.wav);
        headers.extend(ctx.budget.iter().cloned());
        self.write(session, ctx, 200, "audio/wav", &headers, answer.wav)
            .await;
    }

    async fn send_job_status(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        status: u16,
        id: &str,
        progress: &Progress,
    ) {
        let (word, position, eta) = match status_of(progress) {
            JobStatus::Queued { position, eta } => ("queued", position, eta.as_secs_f64().ceil() as u64),
            _ => ("running", 0, 0),
        };
        let body =
            serde_json::json!({"job_id": id, "status": word, "position": position, "eta_seconds": eta});
        let mut headers = vec![
            ("Location", format!("/v1/jobs/{id}")),
            ("Retry-After", eta.clamp(1, 60).to_string()),
            ("Cache-Control", "no-store".to_string()),
        ];
        headers.extend(ctx.budget.iter().cloned());
        self.write_json(session, ctx, status, &headers, body).await;
    }
}

/// Seconds of audio in a WAV answer, from its header (every answer was checked whole when it
/// left its backend or the cache; 0 for one that cannot be read).
fn audio_seconds(wav: &[u8]) -> f64 {
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

fn header_is_json(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|ct| {
            let essence = ct.as_bytes().split(|b| *b == b';').next().unwrap_or_default();
            essence.trim_ascii().eq_ignore_ascii_case(b"application/json")
        })
}
