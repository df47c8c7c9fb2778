//! OpenAI's audio API on the public side: `POST /v1/audio/speech` and `GET /v1/models`, with
//! errors in OpenAI's shape, so OpenAI's client libraries work against cosygate.
//!
//! (Skeleton: answered 404 until the OpenAI work lands.)

use super::ApiError;
use super::{Gateway, RequestCtx};
use http::Method;
use pingora::proxy::Session;

#[allow(clippy::unused_async)] // skeleton
impl Gateway {
    /// Any request under `/v1/audio/` or `/v1/models`.
    pub(super) async fn openai_route(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
        _method: &Method,
        path: &str,
    ) -> Result<(), ApiError> {
        ctx.error_shape = super::ErrorShape::OpenAi;
        Err(ApiError::new(404, "not_found", format!("no route {path}")))
    }
}
