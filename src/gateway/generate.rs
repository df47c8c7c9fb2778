//! `POST /generate` and `GET /v1/jobs/{id}`: admission on the headers, then the body and its
//! validation, then the shared synthesis path (`synthesis.rs`). A request that has not started
//! (is still queued for a GPU slot) after the pool's `queue.async_after`, or that asked
//! `Prefer: respond-async`, is answered `202 Accepted` and becomes a job that keeps its place.

use super::intake::require_json;
use super::synthesis::{Answering, AudioFormat, Validated};
use super::ApiError;
use super::{Gateway, RequestCtx};
use crate::api::{GenerateRequest, RequestLimits};
use crate::jobs::{status_of, JobStatus, Phase, Progress};
use parking_lot::Mutex;
use pingora::proxy::Session;
use std::sync::Arc;

impl Gateway {
    /// `POST /generate`.
    pub(super) async fn generate(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<(), ApiError> {
        let caller = self.caller(session, ctx)?;
        let pool = self.header_pool(session, ctx, &caller)?;
        ctx.budget = self.admission.take_token(&caller).await?;
        require_json(session, "the request")?;
        let limits = self.request_limits();
        let (req, held) = self
            .read_parsed(session, ctx, move |raw| {
                Ok(GenerateRequest::parse_body(&raw, limits)?)
            })
            .await?;
        let req = self.resolve_voice(&caller, req).await?;
        // A stream answers as the audio comes; it never becomes a job (`Prefer: respond-async`
        // is a preference, RFC 7240, and is not honoured for streams).
        let answering = Answering {
            format: AudioFormat::Wav,
            stream: req.stream,
            may_defer: !req.stream,
        };
        let validated = Validated { pool, req, held };
        self.synthesize_and_answer(session, ctx, &caller, validated, answering)
            .await
    }

    /// The request limits of `cosygate.limits`.
    pub(super) fn request_limits(&self) -> RequestLimits {
        RequestLimits {
            max_text_chars: self.limits.max_text_chars,
            max_prompt_seconds: self.limits.max_prompt_seconds,
        }
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
                self.send_answer(session, ctx, answer, AudioFormat::Wav).await;
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

    pub(super) async fn send_job_status(
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
