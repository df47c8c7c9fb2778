//! OpenAI's audio API on the public side: `POST /v1/audio/speech`, `GET /v1/models` and
//! `GET /v1/models/{id}`, with every error in OpenAI's shape, so OpenAI's client libraries work
//! against cosygate. A model is a pool; a voice is a registered voice (zero_shot, or instruct
//! with `instructions`) or one of the pool's preset `speakers` (sft). The synthesis itself is
//! the shared path (`synthesis.rs`), with the same admission, cache, queue and limits as
//! `/generate`.

use super::intake::require_json;
use super::synthesis::{Answering, AudioFormat, Validated};
use super::{method_not_allowed, ApiError, ErrorShape};
use super::{Gateway, RequestCtx};
use crate::admission::Caller;
use crate::api::openai::{OpenAiSpeech, SpeechFormat, StreamFormat, OPENAI_PCM_RATE};
use crate::api::GenerateRequest;
use crate::backend::BackendPool;
use http::Method;
use pingora::proxy::Session;
use std::sync::Arc;

const SPEECH: &str = "/v1/audio/speech";
const MODELS: &str = "/v1/models";

impl Gateway {
    /// Any request under `/v1/audio/` or `/v1/models`: routes it, answering errors in
    /// OpenAI's shape.
    pub(super) async fn openai_route(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        method: &Method,
        path: &str,
    ) -> Result<(), ApiError> {
        ctx.error_shape = ErrorShape::OpenAi;
        let model = path.strip_prefix(MODELS).and_then(|rest| rest.strip_prefix('/'));
        match (path, method) {
            (SPEECH, &Method::POST) => self.speech(session, ctx).await,
            (SPEECH, _) => Err(method_not_allowed("POST")),
            (MODELS, &Method::GET | &Method::HEAD) => self.models(session, ctx, None).await,
            (_, &Method::GET | &Method::HEAD) if model.is_some() => self.models(session, ctx, model).await,
            _ if path == MODELS || model.is_some() => Err(method_not_allowed("GET, HEAD")),
            _ => Err(ApiError::new(
                404,
                "not_found",
                format!(
                    "no route {}; OpenAI's routes here are POST {SPEECH}, GET {MODELS} and GET \
                     {MODELS}/{{model}}",
                    shown(path)
                ),
            )),
        }
    }

    /// `POST /v1/audio/speech`: admission on the headers, then the body, then the pool
    /// (`model`) and the voice, then the shared synthesis path.
    async fn speech(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<(), ApiError> {
        let caller = self.caller(session, ctx)?;
        ctx.budget = self.admission.take_token(&caller).await?;
        require_json(session, "the request")?;
        let limits = self.request_limits();
        let (speech, held) = self
            .read_parsed(session, ctx, move |raw| Ok(OpenAiSpeech::parse(&raw, limits)?))
            .await?;
        let pool = self.model_pool(&caller, &speech.model)?;
        ctx.pool = pool.name.clone();
        self.admission.authorize(&caller, &pool.name)?;
        let answering = Answering {
            format: match (speech.stream_format, speech.response_format) {
                (Some(StreamFormat::Sse), format) => AudioFormat::OpenAiSse {
                    pcm_rate: (format == SpeechFormat::Pcm).then_some(OPENAI_PCM_RATE),
                },
                (_, SpeechFormat::Wav) => AudioFormat::Wav,
                (_, SpeechFormat::Pcm) => AudioFormat::Pcm {
                    sample_rate: OPENAI_PCM_RATE,
                },
            },
            // `audio`: raw bytes as they are produced; `sse`: events as the audio is produced.
            stream: speech.stream_format.is_some(),
            // OpenAI's clients wait for the audio; they do not poll jobs.
            may_defer: false,
        };
        let req = self.speech_request(&caller, &pool, speech).await?;
        let validated = Validated { pool, req, held };
        self.synthesize_and_answer(session, ctx, &caller, validated, answering)
            .await
            .map_err(with_param)
    }

    /// The pool `model` names, when the caller may use it; 404 `model_not_found` otherwise
    /// (as OpenAI answers a model that does not exist or that the key may not use).
    fn model_pool(&self, caller: &Caller, model: &str) -> Result<Arc<BackendPool>, ApiError> {
        let not_found = || {
            ApiError::new(
                404,
                "model_not_found",
                format!(
                    "the model {} does not exist or you do not have access to it; GET {MODELS} \
                     lists the models (pools) you may use",
                    shown(model)
                ),
            )
            .with_param("model")
        };
        let pool = self.pools.pool(Some(model), None).map_err(|_| not_found())?;
        if !may_use(caller, &pool.name) {
            return Err(not_found());
        }
        Ok(pool.clone())
    }

    /// Turns OpenAI's request into ours: `voice` looked up in the voice store (in the caller's
    /// scope), then among the pool's preset speakers (see [`OpenAiSpeech::into_parts`]).
    async fn speech_request(
        &self,
        caller: &Caller,
        pool: &BackendPool,
        speech: OpenAiSpeech,
    ) -> Result<GenerateRequest, ApiError> {
        let registered = self.voices.find(&caller.cache_scope(), &speech.voice).await;
        let known_sha256 = registered.as_ref().map(|v| v.id.clone());
        let parts = speech.into_parts(registered, &pool.name, pool.conf.speakers.as_deref())?;
        let mut req = GenerateRequest::from_parts(parts, self.request_limits())
            .map_err(|e| with_param(ApiError::from(e)))?;
        // A registered voice's id is its sample's sha256 (checked by the store): not hashed again.
        req.prompt_sha256 = known_sha256;
        Ok(req)
    }

    /// `GET /v1/models` (every pool the caller may use) or `GET /v1/models/{id}` (one, or 404
    /// `model_not_found`). Identifies the caller; takes no rate-limit token (nothing is
    /// synthesized).
    async fn models(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        id: Option<&str>,
    ) -> Result<(), ApiError> {
        let caller = self.caller(session, ctx)?;
        let created = self
            .started_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let model = |name: &str| serde_json::json!({"id": name, "object": "model", "created": created, "owned_by": "cosygate"});
        let body = match id {
            Some(id) => {
                let pool = self.model_pool(&caller, id)?;
                model(&pool.name)
            }
            None => {
                let data: Vec<_> = self
                    .pools
                    .pools()
                    .filter(|p| may_use(&caller, &p.name))
                    .map(|p| model(&p.name))
                    .collect();
                serde_json::json!({"object": "list", "data": data})
            }
        };
        let headers = [("Cache-Control", "no-store".to_string())];
        self.write_json(session, ctx, 200, &headers, body).await;
        Ok(())
    }
}

/// Whether the caller may use the pool (an anonymous caller may use every pool).
fn may_use(caller: &Caller, pool: &str) -> bool {
    caller.identity.as_ref().is_none_or(|id| id.may_use(pool))
}

/// Names the request field a refusal after parsing is about (OpenAI's `param`), from its code.
fn with_param(err: ApiError) -> ApiError {
    if err.param.is_some() {
        return err;
    }
    let param = match err.code {
        "empty_text" | "text_too_long" | "nothing_to_speak" => "input",
        "speed_out_of_range" | "unsupported_parameter" => "speed",
        "unknown_speaker" | "sft_unavailable" | "missing_prompt_text" | "prompt_too_long" => "voice",
        _ => return err,
    };
    err.with_param(param)
}

/// A client-sent name as it may appear in a message: at most 64 characters, no controls, quoted.
pub(super) fn shown(s: &str) -> String {
    let s: String = s.chars().take(64).filter(|c| !c.is_control()).collect();
    format!("{s:?}")
}
