//! What every route does before its own parsing: identify the caller, choose the pool a
//! request names with `X-Cosygate-Pool` (or the default), insist on a JSON body, and read the
//! body within the limits and parse it (off the worker threads when it is large).

use super::body;
use super::body_budget::Reservation;
use super::synthesis::HEAVY_INPUT;
use super::ApiError;
use super::{Gateway, RequestCtx};
use crate::admission::Caller;
use crate::backend::BackendPool;
use bytes::Bytes;
use pingora::proxy::Session;
use std::sync::Arc;

impl Gateway {
    /// Identifies the caller from the connection and the headers (401 on a bad token) and
    /// notes it for the access log.
    pub(super) fn caller(&self, session: &Session, ctx: &mut RequestCtx) -> Result<Caller, ApiError> {
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

    /// The pool `X-Cosygate-Pool` names (or the default one), when `caller` may use it; an
    /// unknown name lists only the pools the caller's token may use.
    pub(super) fn header_pool(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        caller: &Caller,
    ) -> Result<Arc<BackendPool>, ApiError> {
        let pool_name = session
            .req_header()
            .headers
            .get("X-Cosygate-Pool")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let may_use = caller.identity.as_deref().map(|id| move |p: &str| id.may_use(p));
        let may_use = may_use.as_ref().map(|f| f as &dyn Fn(&str) -> bool);
        let pool = self.pools.pool(pool_name.as_deref(), may_use)?.clone();
        ctx.pool = pool.name.clone();
        self.admission.authorize(caller, &pool.name)?;
        Ok(pool)
    }

    /// Reads the body within `limits.max_body` and `limits.body_timeout` (its bytes reserved
    /// in the bodies budget while the reservation lives) and parses it with `parse`, on the
    /// blocking pool when it is over 1 MiB.
    pub(super) async fn read_parsed<T, F>(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        parse: F,
    ) -> Result<(T, Reservation), ApiError>
    where
        T: Send + 'static,
        F: FnOnce(Bytes) -> Result<T, ApiError> + Send + 'static,
    {
        let (raw, held) = body::read_body(
            session,
            self.limits.max_body.as_usize(),
            self.limits.body_timeout.0,
            &self.bodies,
        )
        .await?;
        ctx.bytes_in = raw.len() as u64;
        let parsed = if raw.len() > HEAVY_INPUT {
            self.off_thread(move || parse(raw)).await?
        } else {
            parse(raw)?
        };
        Ok((parsed, held))
    }
}

/// Refuses a body that is not JSON (`what`: what the body carries, for the message).
pub(super) fn require_json(session: &Session, what: &str) -> Result<(), ApiError> {
    let json = session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|ct| {
            let essence = ct.as_bytes().split(|b| *b == b';').next().unwrap_or_default();
            essence.trim_ascii().eq_ignore_ascii_case(b"application/json")
        });
    if json {
        return Ok(());
    }
    Err(ApiError::new(
        415,
        "unsupported_media_type",
        format!("send {what} as JSON with Content-Type: application/json"),
    )
    .closing())
}
