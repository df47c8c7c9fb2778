//! The front door: cosygate's Pingora `ProxyHttp` implementation and its routes. This is the only
//! module that touches a Pingora `Session`; it reads the request, hands plain values down the
//! path (api → backend), and writes the answer.
//!
//! Every route answers inside `request_filter` (returning `Ok(true)`), because the request body
//! must be read and validated before a backend is chosen, and a body read there is gone for
//! Pingora's own proxy phase beyond its 64 KiB retry buffer (README, "Architecture").

mod access_log;
mod api_error;
mod body;
mod body_budget;
mod conn_cap;
mod conn_guard;
mod cosyvoice_routes;
mod errors;
mod generate;
mod intake;
mod openai;
mod respond;
mod stream;
mod synthesis;
mod voices;

pub use access_log::TARGET as ACCESS_LOG_TARGET;
pub use api_error::{ApiError, ErrorShape};
pub use conn_guard::{check_header_limits, ConnectionGuard, PendingHeaders};

use crate::admission::Admission;
use crate::backend::PoolSet;
use crate::cache::Cache;
use crate::config::LimitsConf;
use crate::drain::{InFlight, RequestInFlight};
use crate::jobs::Jobs;
use crate::synth::{Synthesizer, Trace};
use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use log::{info, warn};
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
    /// The tier a hit came from (`memory`, `disk`, `redis`, `inflight`), for the access log.
    tier: &'static str,
    /// The client's address as admission resolved it (peer, or X-Forwarded-For via a trusted proxy).
    client: Option<std::net::IpAddr>,
    /// The error code of a refusal, for the access log.
    code: &'static str,
    /// Rate-limit budget headers, sent with every answer once a token was taken.
    budget: Vec<(&'static str, String)>,
    /// A refusal found in `early_request_filter`, answered first thing in `request_filter`.
    early_error: Option<ApiError>,
    /// A streamed answer that could not be completed: the exchange ends without its final
    /// chunk (see `stream.rs`).
    cut: bool,
    /// How the answer is degraded, if it is (`X-Degraded`; the access log's `degraded`).
    degraded: Option<crate::synth::Degraded>,
    /// The error body this route answers with (OpenAI's routes: OpenAI's shape).
    error_shape: ErrorShape,
    /// The tenant label (`anonymous` until a token says otherwise), for the access log.
    tenant: String,
    /// The pool chosen, for the access log and `cosygate_requests_total`.
    pool: String,
    /// Attempts, backend and queue wait of the synthesis, when one ran for this request.
    trace: Option<Arc<Trace>>,
    /// Request-body bytes read, answer-body bytes written, seconds of audio answered.
    bytes_in: u64,
    bytes_out: u64,
    audio_seconds: f64,
    /// Counts the request as in flight (the drain, `cosygate_concurrent_requests`) while it
    /// lives.
    _in_flight: RequestInFlight,
}

/// The gateway service.
pub struct Gateway {
    admission: Arc<Admission>,
    cache: Option<Arc<Cache>>,
    pools: Arc<PoolSet>,
    /// The layers below the edge that answer a validated request.
    synthesizer: Synthesizer,
    jobs: Arc<Jobs>,
    /// Registered voices (`/v1/voices`, `voice_id`, OpenAI's `voice`).
    voices: Arc<crate::voices::VoiceStore>,
    limits: LimitsConf,
    /// Where the connection guard waits for request headers (see `conn_guard`).
    pending_headers: Arc<PendingHeaders>,
    /// Request-body bytes held at once (`limits.max_bodies_in_flight`).
    bodies: Arc<body_budget::BodyBudget>,
    /// Bounds the large-input work (JSON, base64, WAV checks, hashing of bodies over 1 MiB)
    /// run off the worker threads at once.
    heavy: Arc<tokio::sync::Semaphore>,
    /// Work in flight, which a shutdown waits for.
    in_flight: Arc<InFlight>,
    /// When this process's gateway was built (OpenAI's `created` of each model).
    started_at: std::time::SystemTime,
}

impl Gateway {
    pub fn new(
        admission: Arc<Admission>,
        cache: Option<Arc<Cache>>,
        pools: Arc<PoolSet>,
        jobs: Arc<Jobs>,
        limits: LimitsConf,
        pending_headers: Arc<PendingHeaders>,
        in_flight: Arc<InFlight>,
    ) -> Self {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            admission,
            synthesizer: Synthesizer::new(cache.clone(), pools.clone()),
            cache,
            pools,
            jobs,
            voices: Arc::default(),
            bodies: body_budget::BodyBudget::new(limits.max_bodies_in_flight.as_usize()),
            limits,
            pending_headers,
            heavy: Arc::new(tokio::sync::Semaphore::new(threads)),
            in_flight,
            started_at: std::time::SystemTime::now(),
        }
    }

    /// Registered voices (`voices:`); the default store is disabled. Runs once at start.
    pub fn with_voices(mut self, voices: Arc<crate::voices::VoiceStore>) -> Self {
        self.voices = voices;
        self
    }

    async fn health(&self, session: &mut Session, ctx: &mut RequestCtx) {
        let (healthy, total) = self.pools.health_summary();
        let (status, word) = if healthy > 0 || self.pools.has_fallback() {
            (200, "ok")
        } else {
            (503, "unavailable")
        };
        let body = serde_json::json!({"status": word, "backends_healthy": healthy, "backends_total": total});
        let headers = [("Cache-Control", "no-store".to_string())];
        self.write_json(session, ctx, status, &headers, body).await;
    }

    /// Writes a JSON answer (health, job status).
    async fn write_json(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        status: u16,
        headers: &[(&'static str, String)],
        body: serde_json::Value,
    ) {
        let body = Bytes::from(body.to_string());
        self.write(session, ctx, status, "application/json", headers, body)
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
        ctx.bytes_out = body.len() as u64;
        if let Err(e) = respond::send(session, status, content_type, headers, &ctx.request_id, body).await {
            info!(
                "request {}: client went away while answering: {e}",
                ctx.request_id
            );
        }
    }

    /// Answers an error; refusals (4xx) are counted by code, and injection attempts logged.
    async fn fail(&self, session: &mut Session, ctx: &mut RequestCtx, mut err: ApiError) {
        ctx.status = err.status;
        ctx.code = err.code;
        if err.status < 500 {
            crate::metrics::REJECTED.with_label_values(&[err.code]).inc();
        }
        if err.code == "forbidden_characters" {
            let client = ctx.client.map(|c| c.to_string()).unwrap_or_default();
            warn!(
                "request {} from {client}: refused as an injection attempt: {}",
                ctx.request_id, err.message
            );
        }
        err.headers.extend(ctx.budget.iter().cloned());
        match respond::send_error(session, &err, ctx.error_shape, &ctx.request_id).await {
            Ok(len) => ctx.bytes_out = len as u64,
            Err(e) => info!(
                "request {}: client went away while answering: {e}",
                ctx.request_id
            ),
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
            cache: "",
            tier: "",
            client: None,
            code: "",
            budget: Vec::new(),
            early_error: None,
            error_shape: ErrorShape::Cosygate,
            cut: false,
            degraded: None,
            tenant: "anonymous".to_string(),
            pool: String::new(),
            trace: None,
            bytes_in: 0,
            bytes_out: 0,
            audio_seconds: 0.0,
            _in_flight: self.in_flight.request(),
        }
    }

    /// Runs right after the request headers are parsed: lifts the connection guard's header
    /// deadline and checks the header caps; a refusal is kept for `request_filter` to answer.
    async fn early_request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
            self.pending_headers.headers_received(*client);
        }
        let asked = session.req_header().headers.get("x-request-id");
        if let Some(id) = asked.and_then(|v| access_log::client_request_id(v.as_bytes())) {
            ctx.request_id = id;
        }
        if let Err(err) = check_header_limits(session.req_header(), &self.limits) {
            ctx.early_error = Some(err);
        }
        Ok(())
    }

    /// Runs once the request headers are in: routes the request and answers it completely.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if let Some(err) = ctx.early_error.take() {
            self.fail(session, ctx, err).await;
            return Ok(true);
        }
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        match (path.as_str(), method) {
            ("/generate", Method::POST) => {
                if let Err(err) = self.generate(session, ctx).await {
                    self.fail(session, ctx, err).await;
                }
            }
            ("/health", Method::GET | Method::HEAD) => self.health(session, ctx).await,
            (p, Method::GET) if p.starts_with("/v1/jobs/") => {
                let id = p.trim_start_matches("/v1/jobs/").to_string();
                if let Err(err) = self.job(session, ctx, &id).await {
                    self.fail(session, ctx, err).await;
                }
            }
            (p, _) if p.starts_with("/v1/jobs/") => self.fail(session, ctx, method_not_allowed("GET")).await,
            (p, m) if p == "/v1/voices" || p.starts_with("/v1/voices/") => {
                if let Err(err) = self.voices_route(session, ctx, &m, p).await {
                    self.fail(session, ctx, err).await;
                }
            }
            (p, m) if p.starts_with("/v1/audio/") || p == "/v1/models" || p.starts_with("/v1/models/") => {
                if let Err(err) = self.openai_route(session, ctx, &m, p).await {
                    self.fail(session, ctx, err).await;
                }
            }
            (p, m) if p.starts_with("/inference_") => {
                if let Err(err) = self.cosyvoice_route(session, ctx, &m, p).await {
                    self.fail(session, ctx, err).await;
                }
            }
            ("/generate", _) => self.fail(session, ctx, method_not_allowed("POST")).await,
            ("/health", _) => self.fail(session, ctx, method_not_allowed("GET")).await,
            _ => {
                let err = ApiError::new(
                    404,
                    "not_found",
                    format!(
                        "no route {path}; the API is POST /generate, GET /v1/jobs/{{id}}, /v1/voices, \
                         POST /v1/audio/speech, GET /v1/models, CosyVoice's /inference_* and GET /health \
                         (see the README)"
                    ),
                );
                self.fail(session, ctx, err).await
            }
        }
        if ctx.cut {
            // A streamed answer that cannot be completed: end the exchange with an error so
            // that Pingora does not write the terminating chunk (see `fail_to_proxy`).
            return Error::e_explain(
                ErrorType::Custom("stream_cut"),
                "the streamed audio was cut; the body is left unterminated",
            );
        }
        Ok(true)
    }

    /// Runs when a phase returned an error: the only one cosygate returns is a cut stream,
    /// whose headers and part of whose body are already sent, so nothing more is written and
    /// the connection is closed.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &pingora::Error,
        ctx: &mut RequestCtx,
    ) -> pingora::proxy::FailToProxy {
        // Otherwise as Pingora's default: the error's status, nothing on a dead connection.
        let code = match (ctx.cut, e.etype(), e.esource()) {
            (true, _, _) => 0,
            (_, ErrorType::HTTPStatus(code), _) => *code,
            (
                _,
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
                ErrorSource::Downstream,
            ) => 0,
            (_, _, ErrorSource::Downstream) => 400,
            (_, _, ErrorSource::Upstream) => 502,
            _ => 500,
        };
        if code > 0 {
            if let Err(e) = session.respond_error(code).await {
                info!("request {}: cannot answer the error: {e}", ctx.request_id);
            }
            ctx.status = code;
        }
        pingora::proxy::FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// A cut stream is logged once, by the stream itself, and in the access log.
    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, _e: &pingora::Error) -> bool {
        ctx.cut
    }

    /// Never reached: every route answers in `request_filter`.
    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        Error::e_explain(
            ErrorType::InternalError,
            "cosygate answers every route in request_filter",
        )
    }

    /// Runs last for every request, also one that failed or was cut: one access-log line
    /// and the request's metrics.
    async fn logging(&self, session: &mut Session, _e: Option<&pingora::Error>, ctx: &mut RequestCtx) {
        let req = session.req_header();
        let trace = ctx.trace.as_deref();
        access_log::AccessRecord {
            time: access_log::now_rfc3339(),
            request_id: &ctx.request_id,
            client_ip: ctx.client,
            peer: session.client_addr().map(|a| a.to_string()).unwrap_or_default(),
            tenant: &ctx.tenant,
            method: req.method.as_str(),
            route: access_log::route(req.uri.path()),
            status: ctx.status,
            error: ctx.code,
            cache: ctx.cache,
            cache_tier: ctx.tier,
            degraded: ctx.degraded.map_or("", |d| d.reason()),
            pool: &ctx.pool,
            backend: trace
                .and_then(Trace::backend)
                .map(|a| a.to_string())
                .unwrap_or_default(),
            attempts: trace.map_or(0, Trace::attempts),
            queue_wait_ms: trace.map_or(0, |t| t.queue_wait().as_millis() as u64),
            total_ms: ctx.started.elapsed().as_millis() as u64,
            audio_seconds: ctx.audio_seconds,
            bytes_in: ctx.bytes_in,
            bytes_out: ctx.bytes_out,
        }
        .emit();
    }
}

fn method_not_allowed(allow: &'static str) -> ApiError {
    ApiError::new(405, "method_not_allowed", format!("use {allow} on this path"))
        .with_header("Allow", allow.to_string())
}
