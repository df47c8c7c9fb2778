//! `POST /v1/voices`, `GET /v1/voices`, `DELETE /v1/voices/{id}`: registering, listing and
//! removing voices (see `crate::voices`).
//!
//! (Skeleton: answered 404 until the voices work lands.)

use super::ApiError;
use super::{Gateway, RequestCtx};
use http::Method;
use pingora::proxy::Session;

#[allow(clippy::unused_async)] // skeleton
impl Gateway {
    /// Any request under `/v1/voices`.
    pub(super) async fn voices_route(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
        _method: &Method,
        path: &str,
    ) -> Result<(), ApiError> {
        Err(ApiError::new(404, "not_found", format!("no route {path}")))
    }
}
