//! The front door: cosygate's Pingora `ProxyHttp` implementation and its routes. This is the only
//! module that touches a Pingora `Session`; it reads the request, hands plain values down the
//! path (api → backend), and writes the answer.
//!
//! Every route answers inside `request_filter` (returning `Ok(true)`), because the request body
//! must be read and validated before a backend is chosen, and a body read there is gone for
//! Pingora's own proxy phase beyond its 64 KiB retry buffer (README, "Architecture").

mod body;
mod respond;

use crate::api::{ApiError, GenerateRequest, RequestLimits};
use crate::backend::PoolSet;
use crate::config::LimitsConf;
use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use log::info;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use std::sync::Arc;
use std::time::Instant;

/// Per-request state, created when the request headers arrive.
pub struct RequestCtx {
    pub request_id: String,
    started: Instant,
    status: u16,
    /// `X-Cache` value of the answer, for the access log.
    cache: &'static str,
}

/// The gateway service.
pub struct Gateway {
    pools: Arc<PoolSet>,
    limits: LimitsConf,
}

impl Gateway {
    pub fn new(pools: Arc<PoolSet>, limits: LimitsConf) -> Self {
        Self { pools, limits }
    }

    async fn generate(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<(), ApiError> {
        let content_type = session
            .req_header()
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes().to_vec());
        let is_json = content_type.as_deref().is_some_and(|ct| {
            let essence = ct.split(|b| *b == b';').next().unwrap_or_default();
            essence.trim_ascii().eq_ignore_ascii_case(b"application/json")
        });
        if !is_json {
            return Err(ApiError::new(
                415,
                "unsupported_media_type",
                "send the request as JSON with Content-Type: application/json",
            )
            .closing());
        }
        let pool_name = session
            .req_header()
            .headers
            .get("X-Cosygate-Pool")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let pool = self.pools.pool(pool_name.as_deref())?.clone();
        let raw = body::read_body(session, self.limits.max_body.as_usize()).await?;
        let limits = RequestLimits {
            max_text_chars: self.limits.max_text_chars,
            max_prompt_seconds: self.limits.max_prompt_seconds,
        };
        let req = GenerateRequest::parse(&raw, limits)?;
        let synthesis = self.pools.synthesize(&pool, &req, &raw, &ctx.request_id).await?;
        ctx.cache = "BYPASS";
        let headers = [("X-Cache", ctx.cache.to_string())];
        self.write(session, ctx, 200, "audio/wav", &headers, synthesis.wav)
            .await;
        Ok(())
    }

    async fn health(&self, session: &mut Session, ctx: &mut RequestCtx) {
        let (healthy, total) = self.pools.health_summary();
        let (status, word) = if healthy > 0 {
            (200, "ok")
        } else {
            (503, "unavailable")
        };
        let body = serde_json::json!({"status": word, "backends_healthy": healthy, "backends_total": total});
        let headers = [("Cache-Control", "no-store".to_string())];
        self.write(
            session,
            ctx,
            status,
            "application/json",
            &headers,
            Bytes::from(body.to_string()),
        )
        .await;
    }

    async fn write(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        status: u16,
        content_type: &str,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) {
        ctx.status = status;
        if let Err(e) = respond::send(session, status, content_type, headers, &ctx.request_id, body).await {
            info!(
                "request {}: client went away while answering: {e}",
                ctx.request_id
            );
        }
    }

    async fn fail(&self, session: &mut Session, ctx: &mut RequestCtx, err: ApiError) {
        ctx.status = err.status;
        if let Err(e) = respond::send_error(session, &err, &ctx.request_id).await {
            info!(
                "request {}: client went away while answering: {e}",
                ctx.request_id
            );
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            request_id: format!("{:032x}", rand::random::<u128>()),
            started: Instant::now(),
            status: 0,
            cache: "-",
        }
    }

    /// Runs once the request headers are in: routes the request and answers it completely.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        match (path.as_str(), method) {
            ("/generate", Method::POST) => {
                if let Err(err) = self.generate(session, ctx).await {
                    self.fail(session, ctx, err).await;
                }
            }
            ("/health", Method::GET | Method::HEAD) => self.health(session, ctx).await,
            ("/generate", _) => self.fail(session, ctx, method_not_allowed("POST")).await,
            ("/health", _) => self.fail(session, ctx, method_not_allowed("GET")).await,
            _ => {
                let err = ApiError::new(
                    404,
                    "not_found",
                    format!("no route {path}; the API is POST /generate and GET /health"),
                );
                self.fail(session, ctx, err).await
            }
        }
        Ok(true)
    }

    /// Never reached: every route answers in `request_filter`.
    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        Error::e_explain(
            ErrorType::InternalError,
            "cosygate answers every route in request_filter",
        )
    }

    /// Runs last for every request: one access-log line.
    async fn logging(&self, session: &mut Session, _e: Option<&pingora::Error>, ctx: &mut RequestCtx) {
        let client = session.client_addr().map(|a| a.to_string()).unwrap_or_default();
        let req = session.req_header();
        info!(
            "{} {} {} {} {} {}ms cache={}",
            ctx.request_id,
            client,
            req.method,
            req.uri.path(),
            ctx.status,
            ctx.started.elapsed().as_millis(),
            ctx.cache
        );
    }
}

fn method_not_allowed(allow: &'static str) -> ApiError {
    ApiError::new(405, "method_not_allowed", format!("use {allow} on this path"))
        .with_header("Allow", allow.to_string())
}
