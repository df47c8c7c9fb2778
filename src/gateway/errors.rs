//! The one place where the typed errors of the layers below become HTTP answers: status, stable
//! code, the message that tells the caller what to do next, and `Retry-After`. Codes are
//! published (the README lists them); change none without changing the contract.

use super::api_error::ApiError;
use crate::admission::AdmissionError;
use crate::api::openai::{SpeechInvalid, VoiceRefusal};
use crate::api::{InvalidKind, InvalidRequest};
use crate::backend::UnknownPool;
use crate::jobs::{JobError, JobFailed};
use crate::synth::{Refusal, SynthError};
use crate::voices::VoiceError;
use std::time::Duration;

/// Seconds a caller is told to wait when no backend is usable (health checks and breakers
/// change on their own schedule; this is a polite retry interval, not a promise).
const NO_BACKEND_RETRY_SECS: u64 = 5;
/// `Retry-After` of a caller over its quota of unfinished jobs, or of a full job store.
const JOBS_RETRY_SECS: u64 = 5;

impl From<InvalidRequest> for ApiError {
    fn from(e: InvalidRequest) -> Self {
        let status = match e.kind {
            InvalidKind::Malformed => 400,
            InvalidKind::Unprocessable => 422,
        };
        ApiError::new(status, e.code, e.message)
    }
}

impl From<SpeechInvalid> for ApiError {
    fn from(e: SpeechInvalid) -> Self {
        let err = ApiError::from(e.error);
        match e.param {
            Some(param) => err.with_param(param),
            None => err,
        }
    }
}

impl From<VoiceRefusal> for ApiError {
    fn from(e: VoiceRefusal) -> Self {
        let shown = super::openai::shown;
        match e {
            VoiceRefusal::NotFound { voice, pool, presets } => {
                let presets = if presets.is_empty() {
                    String::new()
                } else {
                    format!(", or one of model {pool}'s speakers: {}", presets.join(", "))
                };
                ApiError::bad_request(
                    "voice_not_found",
                    format!(
                        "no voice {}: register one with POST /v1/voices and name it by its id or \
                         name{presets}",
                        shown(&voice)
                    ),
                )
                .with_param("voice")
            }
            VoiceRefusal::InstructionsNeedVoice { voice, pool } => ApiError::bad_request(
                "instructions_need_voice",
                format!(
                    "`instructions` need a registered voice (POST /v1/voices); {} is a preset \
                     speaker of model {pool}, which CosyVoice cannot instruct: leave \
                     `instructions` out or register a voice",
                    shown(&voice)
                ),
            )
            .with_param("instructions"),
        }
    }
}

impl From<AdmissionError> for ApiError {
    fn from(e: AdmissionError) -> Self {
        match e {
            AdmissionError::Unauthenticated { code, message } => {
                ApiError::new(401, code, message).with_header("WWW-Authenticate", "Bearer".to_string())
            }
            AdmissionError::ForbiddenPool { token, pool } => ApiError::new(
                403,
                "forbidden_pool",
                format!("token {token} may not use pool {pool}; ask the operator to allow it"),
            ),
            AdmissionError::RateLimited {
                capacity,
                window_secs,
                retry_after_secs,
                budget,
            } => {
                let mut e = ApiError::new(
                    429,
                    "rate_limited",
                    format!(
                        "too many requests: {capacity} per {window_secs} s; the next one is \
                         possible in {retry_after_secs} s"
                    ),
                )
                .with_retry_after(retry_after_secs);
                e.headers.extend(budget);
                e
            }
        }
    }
}

impl From<SynthError> for ApiError {
    fn from(e: SynthError) -> Self {
        match e {
            SynthError::QueueFull { pool, retry_after } => {
                let secs = whole_seconds(retry_after);
                ApiError::new(
                    503,
                    "queue_full",
                    format!("pool {pool} is busy and its queue is full; try again in {secs} s"),
                )
                .with_retry_after(secs)
            }
            SynthError::QueueTimeout { pool, waited } => ApiError::new(
                503,
                "queue_timeout",
                format!(
                    "pool {pool} had no free backend for {:.1} s; try again later or send fewer \
                     requests at once",
                    waited.as_secs_f64()
                ),
            )
            .with_retry_after(whole_seconds(waited)),
            SynthError::NoBackend { pool } => ApiError::new(
                503,
                "no_backend_available",
                format!(
                    "no backend of pool {pool} is available right now (unhealthy or failing); \
                     try again shortly"
                ),
            )
            .with_retry_after(NO_BACKEND_RETRY_SECS),
            SynthError::Deadline { pool, deadline } => ApiError::new(
                504,
                "deadline_exceeded",
                format!(
                    "the request did not finish within pool {pool}'s deadline of {} s (queueing \
                     and every attempt together); try again later, or with a shorter text",
                    deadline.as_secs_f64()
                ),
            ),
            SynthError::Rejected { status } => {
                // A backend's 4xx, in our words: its body may carry internals and stays in the log.
                let (ours, next) = match status {
                    400 | 413 | 422 => (422, "check the request's fields and prompt audio"),
                    _ => (502, "this is a gateway configuration problem; tell the operator"),
                };
                ApiError::new(
                    ours,
                    "backend_rejected",
                    format!(
                        "the backend refused this request (status {status}); {next}. Its answer \
                         is logged under this request id"
                    ),
                )
            }
            SynthError::NoAudio => ApiError::unprocessable(
                "no_audio_produced",
                "the model produced no audio for this request on two backends; the text may have \
                 nothing it can speak: send words",
            ),
            SynthError::RequestFault { summary } => ApiError::new(
                502,
                "synthesis_failed",
                format!(
                    "this request failed the same way on two backends ({summary}), so it is the \
                     request that the model cannot synthesize: check spk_id, the text and the \
                     prompt audio; retrying it unchanged will not help"
                ),
            ),
            SynthError::BackendTimeout { summary } => ApiError::new(
                504,
                "backend_timeout",
                format!(
                    "the synthesis did not finish in time ({summary}); try again, or with a shorter text"
                ),
            ),
            SynthError::BackendFailed { summary } => ApiError::new(
                502,
                "backend_failed",
                format!("the synthesis failed ({summary}); try again"),
            ),
            SynthError::FallbackFailed(why) => ApiError::new(
                502,
                "fallback_failed",
                format!("no backend could serve and the fallback voice failed: {why}"),
            ),
            SynthError::Internal(why) => ApiError::new(500, "internal", why),
        }
    }
}

impl From<VoiceError> for ApiError {
    fn from(e: VoiceError) -> Self {
        match e {
            VoiceError::NameTaken { name, by } => ApiError::new(
                409,
                "voice_name_taken",
                format!(
                    "the name {name:?} belongs to your voice {by}; choose another name, or remove \
                     that voice first with DELETE /v1/voices/{by}"
                ),
            )
            .with_param("name"),
            VoiceError::TooMany { max_count } => ApiError::new(
                409,
                "voice_quota_exceeded",
                format!(
                    "you have {max_count} voices, the most allowed (voices.max_per_tenant); make \
                     room with DELETE /v1/voices/{{id}} (GET /v1/voices lists them)"
                ),
            ),
            VoiceError::TooLarge {
                max_bytes,
                used,
                adding,
            } => ApiError::new(
                409,
                "voice_quota_exceeded",
                format!(
                    "your voices hold {used} bytes and this sample has {adding}; the limit is \
                     {max_bytes} bytes (voices.max_bytes_per_tenant): make room with DELETE \
                     /v1/voices/{{id}}, or send a shorter sample (3 to 10 s works best)"
                ),
            ),
            VoiceError::NotFound => ApiError::new(
                404,
                "voice_not_found",
                "no such voice is registered for you; GET /v1/voices lists yours",
            ),
            VoiceError::SharedUnavailable => ApiError::new(
                503,
                "voice_store_unavailable",
                "the voice store shared by all instances (Redis) did not answer, so the voice \
                 cannot be removed everywhere; try again shortly",
            )
            .with_retry_after(NO_BACKEND_RETRY_SECS),
            VoiceError::Storage(why) => ApiError::new(
                500,
                "voice_storage_failed",
                format!("the voice could not be stored ({why}); try again, or tell the operator"),
            ),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        ApiError::unprocessable(r.code, r.message)
    }
}

impl From<UnknownPool> for ApiError {
    fn from(e: UnknownPool) -> Self {
        ApiError::new(404, "unknown_pool", e.message)
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::QuotaReached { held } => ApiError::new(
                429,
                "too_many_jobs",
                format!(
                    "you already have {held} unfinished jobs (the limit per caller); fetch their \
                     results from /v1/jobs/{{id}} before starting more"
                ),
            )
            .with_retry_after(JOBS_RETRY_SECS),
            JobError::StoreFull => ApiError::new(
                503,
                "too_many_jobs",
                "too many jobs are pending; try again shortly",
            )
            .with_retry_after(JOBS_RETRY_SECS),
        }
    }
}

impl From<JobFailed> for ApiError {
    fn from(e: JobFailed) -> Self {
        match e {
            JobFailed::Synth(e) => e.into(),
            JobFailed::Expired { id, keep } => ApiError::new(
                404,
                "job_expired",
                format!(
                    "job {id} finished, but its result was dropped early to keep the job store \
                     within jobs.max_bytes (results are kept for up to {} s, less when the store \
                     is full); send the request again",
                    keep.as_secs()
                ),
            ),
            JobFailed::Died => ApiError::new(
                500,
                "internal",
                "the synthesis task ended without an answer; please report it",
            ),
        }
    }
}

/// `d` rounded up to whole seconds, at least 1 (for `Retry-After`).
fn whole_seconds(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry_after(e: &ApiError) -> Option<&str> {
        e.headers
            .iter()
            .find(|(n, _)| *n == "Retry-After")
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn queue_codes_and_retry_after() {
        let pool = || "main".to_string();
        let full = ApiError::from(SynthError::QueueFull {
            pool: pool(),
            retry_after: Duration::from_millis(2100),
        });
        assert_eq!((full.status, full.code), (503, "queue_full"));
        assert_eq!(retry_after(&full), Some("3"));
        assert!(full.message.contains("main"));

        let timeout = ApiError::from(SynthError::QueueTimeout {
            pool: pool(),
            waited: Duration::from_millis(10),
        });
        assert_eq!((timeout.status, timeout.code), (503, "queue_timeout"));
        assert_eq!(retry_after(&timeout), Some("1"));

        let none = ApiError::from(SynthError::NoBackend { pool: pool() });
        assert_eq!((none.status, none.code), (503, "no_backend_available"));
        assert_eq!(retry_after(&none), Some("5"));
    }

    #[test]
    fn job_refusals_say_what_to_do_next() {
        let quota = ApiError::from(JobError::QuotaReached { held: 32 });
        assert_eq!((quota.status, quota.code), (429, "too_many_jobs"));
        assert_eq!(retry_after(&quota), Some("5"));
        assert!(quota.message.contains("32 unfinished"), "{}", quota.message);
        let full = ApiError::from(JobError::StoreFull);
        assert_eq!((full.status, full.code), (503, "too_many_jobs"));
        let expired = ApiError::from(JobFailed::Expired {
            id: "j1".into(),
            keep: Duration::from_secs(600),
        });
        assert_eq!((expired.status, expired.code), (404, "job_expired"));
        assert!(expired.message.contains("max_bytes"), "{}", expired.message);
        let died = ApiError::from(JobFailed::Died);
        assert_eq!((died.status, died.code), (500, "internal"));
    }

    #[test]
    fn admission_and_validation_refusals_keep_their_statuses() {
        let malformed = ApiError::from(InvalidRequest::malformed("invalid_json", "x"));
        assert_eq!((malformed.status, malformed.code), (400, "invalid_json"));
        let long = ApiError::from(InvalidRequest::unprocessable("text_too_long", "x"));
        assert_eq!(long.status, 422);
        let unauth = ApiError::from(AdmissionError::Unauthenticated {
            code: "missing_token",
            message: "send a token",
        });
        assert_eq!(unauth.status, 401);
        assert!(unauth
            .headers
            .contains(&("WWW-Authenticate", "Bearer".to_string())));
        let limited = ApiError::from(AdmissionError::RateLimited {
            capacity: 10,
            window_secs: 60,
            retry_after_secs: 6,
            budget: vec![("RateLimit", "\"ip\";r=0;t=6".to_string())],
        });
        assert_eq!((limited.status, limited.code), (429, "rate_limited"));
        assert_eq!(retry_after(&limited), Some("6"));
        assert!(limited.headers.iter().any(|(n, _)| *n == "RateLimit"));
    }

    #[test]
    fn whole_seconds_rounds_up_and_is_at_least_one() {
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_secs(2)), 2);
        assert_eq!(whole_seconds(Duration::from_millis(2001)), 3);
    }
}
