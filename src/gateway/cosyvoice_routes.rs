//! CosyVoice's own FastAPI routes on the public side (`/inference_zero_shot`,
//! `/inference_cross_lingual`, `/inference_instruct2`, `/inference_sft`; GET or POST; multipart
//! or urlencoded form), answered as that server answers (200, raw int16 mono PCM at the pool's
//! `sample_rate`), so a client written for CosyVoice's server works unchanged through the
//! gateway. Admission, cache, queue, retries and fallback are those of `/generate`; refusals
//! are real statuses with our JSON error body (upstream answers many failures 200 and then
//! cuts the stream, which its clients cannot tell from a short answer).

use super::synthesis::{Answering, AudioFormat, Validated};
use super::ApiError;
use super::{Gateway, RequestCtx};
use crate::api::cosyvoice_form::{self, FormEncoding, Route};
use crate::config::ModelFamily;
use http::Method;
use pingora::proxy::Session;

impl Gateway {
    /// Any request whose path starts with `/inference_`: routes it, admits it as `/generate`
    /// does, reads and validates its form, and answers the synthesis as raw PCM.
    pub(super) async fn cosyvoice_route(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        method: &Method,
        path: &str,
    ) -> Result<(), ApiError> {
        let Some(route) = Route::from_path(path) else {
            return Err(unknown_route(path));
        };
        if method != Method::GET && method != Method::POST {
            return Err(ApiError::new(
                405,
                "method_not_allowed",
                "use POST (or GET, as CosyVoice's own client does) with the form in the body",
            )
            .with_header("Allow", "GET, POST".to_string())
            .closing());
        }
        let caller = self.caller(session, ctx)?;
        let pool = self.header_pool(session, ctx, &caller)?;
        ctx.budget = self.admission.take_token(&caller).await?;
        let content_type = session
            .req_header()
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let encoding = FormEncoding::from_content_type(&content_type)
            .map_err(|e| ApiError::from(e).closing())?
            .ok_or_else(|| {
                ApiError::new(
                    415,
                    "unsupported_media_type",
                    "send the fields in the body as multipart/form-data (needed for prompt_wav) or \
                     application/x-www-form-urlencoded; the query string is not read, as on CosyVoice's server",
                )
                .closing()
            })?;
        let limits = self.request_limits();
        let v3 = pool.conf.model == ModelFamily::Cosyvoice3;
        let (req, held) = self
            .read_parsed(session, ctx, move |raw| {
                Ok(cosyvoice_form::parse(route, &encoding, raw, limits, v3)?)
            })
            .await?;
        let answering = Answering {
            format: AudioFormat::Pcm {
                sample_rate: pool.conf.sample_rate,
            },
            stream: true,
            may_defer: false,
        };
        let validated = Validated { pool, req, held };
        self.synthesize_and_answer(session, ctx, &caller, validated, answering)
            .await
    }
}

/// `/inference_instruct` (CosyVoice1's instruct, by preset speaker) is named; any other path
/// is unknown.
fn unknown_route(path: &str) -> ApiError {
    if path == "/inference_instruct" {
        return ApiError::new(
            400,
            "unsupported_route",
            "/inference_instruct is CosyVoice1's (a preset speaker and an instruction) and fails on \
             CosyVoice2 and 3: use /inference_instruct2 with tts_text, instruct_text and prompt_wav",
        )
        .closing();
    }
    ApiError::new(
        404,
        "not_found",
        format!(
            "no route {path}; CosyVoice's routes here are /inference_zero_shot, \
             /inference_cross_lingual, /inference_instruct2 and /inference_sft"
        ),
    )
    .closing()
}
