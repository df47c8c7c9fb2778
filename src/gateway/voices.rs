//! `POST /v1/voices`, `GET /v1/voices`, `GET /v1/voices/{id}`, `DELETE /v1/voices/{id}`:
//! registering, listing and removing voices (see `crate::voices`), and resolving `voice_id` on
//! `/generate`. A voice belongs to the caller's scope (`Caller::cache_scope`): another scope's
//! voice is answered as if it did not exist. Without a `voices` section every route answers
//! 404 `voices_disabled`.

use super::ApiError;
use super::{Gateway, RequestCtx};
use crate::admission::Caller;
use crate::api::{GenerateBody, GenerateRequest, VoiceRegistration};
use crate::voices::VoiceInfo;
use http::Method;
use pingora::proxy::Session;

/// The refusal of every voice route, and of `voice_id`, when the feature is off.
fn voices_disabled() -> ApiError {
    ApiError::new(
        404,
        "voices_disabled",
        "registered voices are off on this gateway: the operator turns them on with a `voices:` \
         section in the configuration (see the README); until then send `prompt_audio` and \
         `prompt_text` with each request",
    )
}

/// A voice as the API shows it.
fn voice_json(v: &VoiceInfo) -> serde_json::Value {
    let created = jiff::Timestamp::from_millisecond(i64::try_from(v.created_unix_ms).unwrap_or(0))
        .map(|t| format!("{t:.3}"))
        .unwrap_or_default();
    serde_json::json!({
        "voice_id": v.voice_id,
        "name": v.name,
        "prompt_text": v.prompt_text,
        "bytes": v.bytes,
        "seconds": (v.seconds * 1000.0).round() / 1000.0,
        "created": created,
    })
}

impl Gateway {
    /// Any request under `/v1/voices`: dispatches by method and path.
    pub(super) async fn voices_route(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        method: &Method,
        path: &str,
    ) -> Result<(), ApiError> {
        if !self.voices.enabled() {
            return Err(voices_disabled());
        }
        let rest = path.strip_prefix("/v1/voices").unwrap_or_default();
        let one = rest.strip_prefix('/').filter(|id| !id.is_empty());
        match (one, method) {
            (None, &Method::POST) => self.register_voice(session, ctx).await,
            (None, &Method::GET) => {
                let caller = self.voice_caller(session, ctx)?;
                let voices = self.voices.list(&caller.cache_scope()).await;
                let list: Vec<_> = voices.iter().map(voice_json).collect();
                let headers = [("Cache-Control", "no-store".to_string())];
                let body = serde_json::json!({ "voices": list });
                self.write_json(session, ctx, 200, &headers, body).await;
                Ok(())
            }
            (None, _) => Err(super::method_not_allowed("GET, POST")),
            (Some(id), &Method::GET) => {
                let caller = self.voice_caller(session, ctx)?;
                let voices = self.voices.list(&caller.cache_scope()).await;
                let v = voices
                    .iter()
                    .find(|v| v.voice_id == id || v.name == id)
                    .ok_or(crate::voices::VoiceError::NotFound)?;
                let headers = [("Cache-Control", "no-store".to_string())];
                self.write_json(session, ctx, 200, &headers, voice_json(v)).await;
                Ok(())
            }
            (Some(id), &Method::DELETE) => {
                let caller = self.voice_caller(session, ctx)?;
                self.voices.delete(&caller.cache_scope(), id).await?;
                ctx.status = 204;
                if let Err(e) = super::respond::send_no_content(session, &ctx.budget, &ctx.request_id).await {
                    log::info!(
                        "request {}: client went away while answering: {e}",
                        ctx.request_id
                    );
                }
                Ok(())
            }
            (Some(_), _) => Err(super::method_not_allowed("GET, DELETE")),
        }
    }

    /// Identifies the caller of a voice route and checks it may use voices: anonymous callers
    /// only with `voices.allow_anonymous`.
    fn voice_caller(&self, session: &Session, ctx: &mut RequestCtx) -> Result<Caller, ApiError> {
        let caller = self.caller(session, ctx)?;
        self.may_use_voices(&caller)?;
        Ok(caller)
    }

    fn may_use_voices(&self, caller: &Caller) -> Result<(), ApiError> {
        if caller.identity.is_none() && !self.voices.allow_anonymous() {
            return Err(ApiError::new(
                401,
                "voice_token_required",
                "registered voices belong to a tenant: send Authorization: Bearer <token> \
                 (anonymous callers may use voices only when the operator sets \
                 voices.allow_anonymous)",
            )
            .with_header("WWW-Authenticate", "Bearer".to_string()));
        }
        Ok(())
    }

    /// `POST /v1/voices`: the same admission, body limits and prompt checks as `/generate`.
    async fn register_voice(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<(), ApiError> {
        let caller = self.voice_caller(session, ctx)?;
        ctx.budget = self.admission.take_token(&caller).await?;
        super::intake::require_json(session, "the voice")?;
        let limits = self.request_limits();
        let (reg, _held) = self
            .read_parsed(session, ctx, move |raw| {
                Ok(VoiceRegistration::parse(&raw, limits)?)
            })
            .await?;
        let (voice, created) = self.voices.register(&caller.cache_scope(), reg).await?;
        let status = if created { 201 } else { 200 };
        let mut headers = vec![
            ("Location", format!("/v1/voices/{}", voice.voice_id)),
            ("Cache-Control", "no-store".to_string()),
        ];
        headers.extend(ctx.budget.iter().cloned());
        self.write_json(session, ctx, status, &headers, voice_json(&voice))
            .await;
        Ok(())
    }

    /// The request of a `/generate` body: as parsed, or with the prompt of the registered voice
    /// it names (`voice_id`) in the caller's scope (422 `unknown_voice` when there is none).
    pub(super) async fn resolve_voice(
        &self,
        caller: &Caller,
        body: GenerateBody,
    ) -> Result<GenerateRequest, ApiError> {
        let Some(id) = body.voice_id.clone() else {
            return Ok(body.req);
        };
        if !self.voices.enabled() {
            return Err(voices_disabled().with_param("voice_id"));
        }
        self.may_use_voices(caller)?;
        let voice = self
            .voices
            .find(&caller.cache_scope(), &id)
            .await
            .ok_or_else(|| {
                ApiError::unprocessable(
                    "unknown_voice",
                    format!(
                        "no voice {id:?} is registered for you: register it with POST /v1/voices \
                         (GET /v1/voices lists yours), or send prompt_audio and prompt_text"
                    ),
                )
                .with_param("voice_id")
            })?;
        Ok(body.with_voice(&voice.id, voice.prompt_audio, &voice.prompt_text))
    }
}
