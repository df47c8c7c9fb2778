//! CosyVoice's own FastAPI routes on the public side (`/inference_zero_shot`,
//! `/inference_cross_lingual`, `/inference_instruct2`, `/inference_sft`; GET or POST; multipart
//! or urlencoded form), answered as that server answers (200, raw int16 PCM), so a client
//! written for CosyVoice's server works unchanged through the gateway.
//!
//! (Skeleton: answered 404 until the drop-in work lands.)

use super::ApiError;
use super::{Gateway, RequestCtx};
use http::Method;
use pingora::proxy::Session;

#[allow(clippy::unused_async)] // skeleton
impl Gateway {
    /// Any request to `/inference_*`.
    pub(super) async fn cosyvoice_route(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
        _method: &Method,
        path: &str,
    ) -> Result<(), ApiError> {
        Err(ApiError::new(404, "not_found", format!("no route {path}")))
    }
}
