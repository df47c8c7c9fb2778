//! One request's way through a pool: a GPU slot, an attempt, and on a retryable failure another
//! attempt on another backend, all under one deadline (`pools.NAME.deadline`) and the pool's
//! retry budget; what happens when no backend could serve is the degradation ladder's
//! (`synth::degrade`), with the fallback voice ([`PoolSet::fallback_voice`]) as its last rung.
//!
//! Whose fault a failure is: a failure that cannot be the request's (connection refused, 5xx,
//! timeout, an endless answer) is blamed on its backend at once (breaker, failure streak,
//! `cosygate_backend_error_count`). A failure that may be the request's own (a 200 whose stream
//! is cut, empty or not audio: how CosyVoice reports an unknown speaker, an unspeakable text or
//! a prompt it cannot use) is held without a verdict while the request is tried elsewhere:
//! - it fails the same way on a second, different backend: the request's fault; nobody is
//!   blamed and it is not retried again;
//! - another backend serves it: the held failures are blamed;
//! - no verdict (retry budget spent, no other backend usable, client gone): blamed only where a
//!   second opinion is never possible (a pool of one backend, or `retry.attempts: 0`), so
//!   failures count there as they always did; otherwise nobody is blamed, so a client cannot
//!   open breakers by exhausting the retry budget.

use super::attempt::AttemptError;
use super::{protocol, triton, BackendPool, Built, PoolSet, Prepared, Synthesis};
use crate::metrics;
use crate::schedule::QueueError;
use crate::synth::{LiveAudio, Report, SynthError};
use bytes::Bytes;
use log::{info, warn};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Why a pool gave no answer.
#[derive(Debug)]
pub enum PoolFailure {
    /// Told to the client as it is: the request's own fault, a refusal, a full queue.
    Final(SynthError),
    /// No backend could serve it (none healthy or breaker-closed, the deadline passed, every
    /// attempt failed): the degradation ladder may answer instead of the error.
    Unserved(SynthError),
}

/// How a failure that may be the request's fault looked, to compare it across backends.
#[derive(Debug, Clone, PartialEq)]
enum Signature {
    /// Cut after this many bytes.
    Cut(usize),
    Empty,
    BadAudio(String),
}

fn signature(e: &AttemptError) -> Option<Signature> {
    match e {
        AttemptError::Truncated { after, .. } => Some(Signature::Cut(*after)),
        AttemptError::Empty => Some(Signature::Empty),
        AttemptError::BadAudio(m) => Some(Signature::BadAudio(m.clone())),
        _ => None,
    }
}

/// Failures held without a verdict (see the module's doc).
struct Held<'a> {
    pool: &'a BackendPool,
    failures: Vec<(SocketAddr, Signature, &'static str)>,
    /// Whether failures still held when the request ends are blamed (no second opinion is
    /// possible in this pool).
    blame_unresolved: bool,
}

impl Held<'_> {
    /// The backend, other than `addr`, that already failed this request the same way.
    fn same_elsewhere(&self, addr: SocketAddr, sig: &Signature) -> Option<SocketAddr> {
        self.failures
            .iter()
            .find(|(a, s, _)| *a != addr && s == sig)
            .map(|(a, _, _)| *a)
    }

    /// The request was at fault: nobody is blamed.
    fn forgive(&mut self) {
        self.failures.clear();
    }

    /// Another backend served the request: every held failure was its backend's fault.
    fn blame(&mut self) {
        for (addr, _, kind) in self.failures.drain(..) {
            self.pool.scheduler.record_failure(addr);
            metrics::BACKEND_ERRORS
                .with_label_values(&[&addr.to_string(), kind])
                .inc();
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.blame_unresolved {
            self.blame();
        } else if !self.failures.is_empty() {
            let addrs: Vec<String> = self.failures.iter().map(|(a, _, _)| a.to_string()).collect();
            info!(
                "pool {}: no second opinion on the failure at {}; no backend blamed",
                self.pool.name,
                addrs.join(", ")
            );
        }
    }
}

impl PoolSet {
    /// Synthesizes a prepared request: waits for a GPU slot on a healthy, breaker-closed backend
    /// (fairly across `client`s), sends it, and retries a retryable failure on another backend
    /// up to `retry.attempts` times while the pool's retry budget allows, all within the pool's
    /// request deadline. When no backend can serve, or every attempt failed, the failure is
    /// [`PoolFailure::Unserved`]: the caller's degradation ladder (`synth::degrade`) may still
    /// answer it. Runs in the request's production task; may block only on the queue and the
    /// backend.
    pub async fn synthesize(
        &self,
        prepared: &Prepared,
        client: &str,
        request_id: &str,
        progress: &dyn Report,
        live: &LiveAudio,
    ) -> Result<Synthesis, PoolFailure> {
        let Prepared { pool, .. } = prepared;
        let conf = &pool.conf;
        let deadline = Instant::now() + conf.request_deadline();
        pool.retry_budget.record_request();
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut held = Held {
            pool,
            failures: Vec::new(),
            // No second opinion is ever possible: failures count as they always did.
            blame_unresolved: conf.backends.0.len() < 2 || conf.retry.attempts == 0,
        };
        let mut last: Option<SynthError> = None;
        for attempt in 0..=conf.retry.attempts {
            if attempt > 0 {
                if !pool.retry_budget.try_retry() {
                    metrics::RETRY_BUDGET_EXHAUSTED
                        .with_label_values(&[&pool.name])
                        .inc();
                    warn!(
                        "request {request_id}: pool {}: retry budget spent; not retrying",
                        pool.name
                    );
                    break;
                }
                metrics::RETRIES.with_label_values(&[&pool.name]).inc();
            }
            let ticket = match pool.scheduler.ticket(client, tried.clone()) {
                Ok(t) => t,
                Err(QueueError::NoBackend) => break,
                Err(e) => return Err(PoolFailure::Final(queue_error(pool, e))),
            };
            progress.queued(Arc::new(ticket.position_probe()));
            let queued_at = Instant::now();
            let slot = match ticket.slot_until(deadline).await {
                Ok(slot) => slot,
                Err(QueueError::Timeout { .. }) if Instant::now() >= deadline => {
                    last = Some(deadline_error(pool));
                    break;
                }
                Err(e) => return Err(PoolFailure::Final(queue_error(pool, e))),
            };
            let waited = queued_at.elapsed();
            metrics::QUEUE_WAIT
                .with_label_values(&[&pool.name])
                .observe(waited.as_secs_f64() * 1000.0);
            progress.waited(waited);
            progress.running();
            let addr = slot.addr();
            progress.attempt(addr);
            let sent_at = Instant::now();
            let remaining = deadline.saturating_duration_since(Instant::now());
            let limit = conf.timeout.0.min(remaining);
            live.retake();
            let outcome = self.attempt(prepared, addr, request_id, limit, Some(live)).await;
            let e = match outcome {
                Ok(wav) => {
                    metrics::BACKEND_DURATION
                        .with_label_values(&[&pool.name])
                        .observe(sent_at.elapsed().as_secs_f64() * 1000.0);
                    slot.succeeded();
                    held.blame();
                    return Ok(Synthesis {
                        wav,
                        backend: Some(addr),
                        degraded: false,
                        cacheable: true,
                    });
                }
                Err(e) => e,
            };
            warn!("request {request_id}: pool {} backend {addr}: {e}", pool.name);
            match &e {
                AttemptError::Rejected { status, .. } => {
                    // The backend is fine; the request is not. Never retried; its body stays
                    // in the log (above), never in the answer.
                    slot.succeeded();
                    return Err(PoolFailure::Final(SynthError::Rejected { status: *status }));
                }
                AttemptError::Misconfigured(m) => {
                    // Every backend of the pool would answer the same: not retried, nobody
                    // blamed; the operator's fix is in the log.
                    log::error!("pool {}: {m}", pool.name);
                    slot.succeeded();
                    return Err(PoolFailure::Final(SynthError::BackendFailed {
                        summary: e.summary(),
                    }));
                }
                AttemptError::Timeout(_) if limit < conf.timeout.0 => {
                    // Cut by the request's deadline, not by the pool's timeout: no verdict.
                    slot.inconclusive();
                    last = Some(deadline_error(pool));
                    break;
                }
                _ => {}
            }
            match signature(&e) {
                Some(sig) => {
                    slot.inconclusive();
                    if let Some(other) = held.same_elsewhere(addr, &sig) {
                        held.forgive();
                        metrics::REQUEST_FAULTS.with_label_values(&[&pool.name]).inc();
                        warn!(
                            "request {request_id}: pool {}: backends {other} and {addr} failed it the same way; \
                             the request's fault, no backend blamed, not retried",
                            pool.name
                        );
                        return Err(PoolFailure::Final(request_fault_error(&e)));
                    }
                    held.failures.push((addr, sig, e.kind()));
                }
                None => {
                    slot.failed();
                    metrics::BACKEND_ERRORS
                        .with_label_values(&[&addr.to_string(), e.kind()])
                        .inc();
                }
            }
            tried.push(addr);
            last = Some(attempt_error(&e));
            if matches!(e, AttemptError::Timeout(_)) && !conf.retry.on_timeout {
                break;
            }
        }
        drop(held);
        Err(PoolFailure::Unserved(
            last.unwrap_or_else(|| queue_error(pool, QueueError::NoBackend)),
        ))
    }

    /// The fallback voice's answer to a request its pool could not serve (None when no
    /// `fallback:` is configured). Its audio replaces whatever `live` had.
    pub async fn fallback_voice(
        &self,
        prepared: &Prepared,
        request_id: &str,
        live: &LiveAudio,
    ) -> Option<Result<Synthesis, SynthError>> {
        let fallback = self.fallback.as_ref()?;
        live.retake();
        let wav = match fallback.speak(&prepared.text).await {
            Ok(wav) => wav,
            Err(e) => return Some(Err(e)),
        };
        warn!(
            "request {request_id}: pool {} could not serve; answered with the fallback voice",
            prepared.pool.name
        );
        Some(Ok(Synthesis {
            wav,
            backend: None,
            degraded: true,
            cacheable: fallback.cacheable,
        }))
    }
}

impl PoolSet {
    /// One attempt of a prepared request on the backend `addr` within `limit`: the request in
    /// the pool's protocol, the answer decoded into a checked WAV; a backend that streams its
    /// audio pushes it to `live` as it arrives. The synthesis above and the deep health probe
    /// (`deep_probe.rs`, without `live`) both go through here.
    #[inline(never)]
    pub fn attempt<'a>(
        &'a self,
        prepared: &'a Prepared,
        addr: SocketAddr,
        request_id: &'a str,
        limit: Duration,
        live: Option<&'a LiveAudio>,
    ) -> triton::Boxed<'a, Result<Bytes, AttemptError>> {
        Box::pin(async move {
            let conf = &prepared.pool.conf;
            match prepared.built().await {
                Ok(Built::Triton(call)) => {
                    triton::attempt(&self.connector, addr, call, conf, request_id, limit).await
                }
                Ok(Built::Http(upstream)) => {
                    Box::pin(protocol::run(
                        &self.connector,
                        conf,
                        addr,
                        upstream,
                        request_id,
                        limit,
                        live,
                    ))
                    .await
                }
                // Checked in `prepare`; the build repeats the checks, so this is a request the
                // backends' protocol cannot carry after all: the request's fault, not retried.
                Err(refusal) => Err(AttemptError::Rejected {
                    status: 422,
                    detail: refusal.to_string(),
                }),
            }
        })
    }
}

/// The scheduler's refusal, with the pool it concerns.
fn queue_error(pool: &BackendPool, e: QueueError) -> SynthError {
    let pool = pool.name.clone();
    match e {
        QueueError::Full { retry_after } => SynthError::QueueFull { pool, retry_after },
        QueueError::Timeout { waited } => SynthError::QueueTimeout { pool, waited },
        QueueError::NoBackend => SynthError::NoBackend { pool },
    }
}

/// The request's deadline passed (queueing and attempts together).
fn deadline_error(pool: &BackendPool) -> SynthError {
    SynthError::Deadline {
        pool: pool.name.clone(),
        deadline: pool.conf.request_deadline(),
    }
}

/// The request failed the same way on two backends.
fn request_fault_error(e: &AttemptError) -> SynthError {
    match e {
        AttemptError::Empty => SynthError::NoAudio,
        _ => SynthError::RequestFault { summary: e.summary() },
    }
}

/// What the client is told when the last attempt failed.
fn attempt_error(e: &AttemptError) -> SynthError {
    match e {
        AttemptError::Timeout(_) => SynthError::BackendTimeout { summary: e.summary() },
        _ => SynthError::BackendFailed { summary: e.summary() },
    }
}
