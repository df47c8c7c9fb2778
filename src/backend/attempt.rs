//! One attempt against one backend: connect (reusing a pooled connection when there is one),
//! send the request with `Content-Length`, read the whole answer under a deadline and a size
//! cap, and classify what went wrong. A body that ends early is a failure, never a short
//! success; a body past the cap is abandoned unread and its connection closed, never pooled.

use crate::synth::{LiveAudio, PcmFormat};
use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Pooled backend connections are dropped after this idle time: below uvicorn's 5 s keep-alive,
/// so we never write into a connection the backend is closing.
pub const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Time allowed to open a TCP connection to a backend.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Most bytes of a non-200 answer kept (for the log); the rest is not read.
pub const ERROR_BODY_MAX: usize = 8 * 1024;
/// Most informational (1xx) answers skipped before the final one.
const MAX_INFORMATIONAL: usize = 4;

/// A request ready to send to any backend of a pool (built once by `protocol`, reused for every
/// attempt). Defined here, with the attempt that sends it, so `protocol` depends on `attempt`
/// and never the other way round.
#[derive(Debug, Clone, Default)]
pub struct UpstreamRequest {
    pub path: &'static str,
    pub content_type: String,
    pub body: Bytes,
}

/// Why an attempt did not produce audio. Everything but `Rejected` may succeed elsewhere.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptError {
    /// Could not connect or send the request.
    Connect(String),
    /// The deadline passed before the answer was complete.
    Timeout(Duration),
    /// The backend answered 5xx (or another non-200, non-4xx status).
    Status { status: u16, detail: String },
    /// The backend answered 4xx: the request itself is wrong; retrying cannot help.
    Rejected { status: u16, detail: String },
    /// The answer was cut short (connection closed or reset mid-body) after `after` bytes.
    Truncated { after: usize, detail: String },
    /// A complete 200 with no audio at all (CosyVoice's answer to a text it finds nothing to
    /// say in, or a failure inside the stream before the first chunk).
    Empty,
    /// A complete 200 whose body is not acceptable audio.
    BadAudio(String),
    /// The answer grew past what the request can produce (`max_audio_seconds`); the rest was
    /// not read and the connection was closed.
    TooLarge { limit: usize },
    /// The pool's settings do not fit its backends (e.g. a decoupled Triton model asked over
    /// HTTP): the operator must fix the configuration; the message says how.
    Misconfigured(String),
    /// An answer that does not follow the backend's protocol (a `gradio` exchange whose JSON or
    /// event stream is not what the WebUI sends).
    Protocol(String),
}

impl AttemptError {
    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AttemptError::Connect(_) => "connect",
            AttemptError::Timeout(_) => "timeout",
            AttemptError::Status { .. } => "status_5xx",
            AttemptError::Rejected { .. } => "status_4xx",
            AttemptError::Truncated { .. } => "truncated",
            AttemptError::Empty => "empty",
            AttemptError::BadAudio(_) => "bad_audio",
            AttemptError::TooLarge { .. } => "too_large",
            AttemptError::Misconfigured(_) => "misconfigured",
            AttemptError::Protocol(_) => "protocol",
        }
    }

    /// What a client may be told: the kind of failure, never the backend's own words or
    /// addresses (those go to the log with the request id).
    pub fn summary(&self) -> String {
        match self {
            AttemptError::Connect(_) => "the backend could not be reached".into(),
            AttemptError::Status { status, .. } => format!("the backend answered {status}"),
            AttemptError::Rejected { status, .. } => format!("the backend refused the request ({status})"),
            AttemptError::Truncated { after, .. } => format!("the answer was cut short after {after} bytes"),
            AttemptError::BadAudio(_) => "the answer is not valid audio".into(),
            AttemptError::Misconfigured(_) => {
                "the pool is misconfigured for its backends and an operator must fix it (the gateway's log says how)".into()
            }
            AttemptError::Protocol(_) => "the backend's answer does not follow its protocol".into(),
            AttemptError::Timeout(_) | AttemptError::Empty | AttemptError::TooLarge { .. } => {
                self.to_string()
            }
        }
    }
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptError::Connect(e) => write!(f, "cannot reach the backend: {e}"),
            AttemptError::Timeout(d) => write!(f, "no complete answer within {} ms", d.as_millis()),
            AttemptError::Status { status, detail } => write!(f, "backend answered {status}: {detail}"),
            AttemptError::Rejected { status, detail } => {
                write!(f, "backend refused the request ({status}): {detail}")
            }
            AttemptError::Truncated { after, detail } => {
                write!(f, "the answer was cut short after {after} bytes: {detail}")
            }
            AttemptError::Empty => write!(f, "200 with an empty body (synthesis failed inside the stream)"),
            AttemptError::BadAudio(e) => write!(f, "the answer is not valid audio: {e}"),
            AttemptError::TooLarge { limit } => write!(
                f,
                "the answer passed {limit} bytes, more audio than the request can produce (max_audio_seconds)"
            ),
            AttemptError::Misconfigured(m) => write!(f, "configuration error: {m}"),
            AttemptError::Protocol(e) => write!(f, "the answer does not follow the protocol: {e}"),
        }
    }
}

/// Sends `req` to `addr` and returns the status and the complete body, all within `deadline`.
/// A 200 body may have at most `max_bytes` (past it: [`AttemptError::TooLarge`], read no
/// further); of any other answer at most [`ERROR_BODY_MAX`] bytes are read and kept. With a
/// `tap`, a 200 body's chunks are also pushed to that live audio (as PCM of that format) as
/// they arrive.
pub async fn send(
    connector: &Connector,
    addr: SocketAddr,
    req: &UpstreamRequest,
    request_id: &str,
    deadline: Duration,
    max_bytes: usize,
    tap: Option<(&LiveAudio, PcmFormat)>,
) -> Result<(u16, Bytes), AttemptError> {
    let started = Instant::now();
    let exchange = Exchange {
        method: "POST",
        path: req.path,
        content_type: Some(&req.content_type),
        body: req.body.clone(),
        headers: &[],
    };
    let mut sink = Collect::new(max_bytes);
    sink.tap = tap;
    let call = exchange_into(connector, addr, &exchange, request_id, max_bytes, &mut sink);
    match tokio::time::timeout(deadline, call).await {
        Ok(Ok((200, _))) => match sink.tap {
            // The body went to the live audio only (one copy in memory, not two).
            Some((live, _)) => Ok((200, live.current_take())),
            None => Ok((200, sink.body.freeze())),
        },
        Ok(result) => result,
        Err(_) => Err(AttemptError::Timeout(started.elapsed())),
    }
}

/// One HTTP request to a backend, for protocols that need several per synthesis (`gradio`):
/// the method, a path that may be built per request, and a body (`POST`) or none (`GET`).
#[derive(Debug, Clone)]
pub struct Exchange<'a> {
    pub method: &'static str,
    pub path: &'a str,
    /// With a body (`POST`): its type; `Content-Length` is always sent then.
    pub content_type: Option<&'a str>,
    pub body: Bytes,
    /// Headers the protocol adds (Triton's `Inference-Header-Content-Length`).
    pub headers: &'a [(&'static str, String)],
}

/// Where the body of a 200 answer goes, chunk by chunk, as it arrives.
pub trait BodySink {
    /// Takes the next chunk. `Ok(true)`: nothing more is needed (the rest is not read and the
    /// connection is closed, never pooled); an error ends the exchange with it.
    fn take(&mut self, chunk: &[u8]) -> Result<bool, AttemptError>;

    /// Sees the final answer's header first (a protocol may need one of its fields).
    fn header(&mut self, _header: &pingora::http::ResponseHeader) {}
}

/// Keeps a whole body, at most `max` bytes ([`AttemptError::TooLarge`] past it); with a
/// `tap`, the chunks go to that live audio instead (the body is then its current take).
#[derive(Debug)]
pub struct Collect<'a> {
    pub body: BytesMut,
    len: usize,
    max: usize,
    tap: Option<(&'a LiveAudio, PcmFormat)>,
}

impl Collect<'_> {
    pub fn new(max: usize) -> Self {
        Self {
            body: BytesMut::new(),
            len: 0,
            max,
            tap: None,
        }
    }
}

impl BodySink for Collect<'_> {
    fn take(&mut self, chunk: &[u8]) -> Result<bool, AttemptError> {
        if self.len.saturating_add(chunk.len()) > self.max {
            return Err(AttemptError::TooLarge { limit: self.max });
        }
        self.len += chunk.len();
        match self.tap {
            Some((live, format)) => live.push(format, Bytes::copy_from_slice(chunk)),
            None => self.body.extend_from_slice(chunk),
        }
        Ok(false)
    }
}

/// Sends `ex` to `addr` (no deadline here: the caller puts one around it). A 200 answer's
/// body goes to `sink` (a declared `Content-Length` over `max_declared` is refused unread) and
/// `(200, empty)` is returned; of any other answer at most [`ERROR_BODY_MAX`] bytes are read
/// and returned with its status. A connection is pooled again only after a whole answer.
pub async fn exchange_into(
    connector: &Connector,
    addr: SocketAddr,
    ex: &Exchange<'_>,
    request_id: &str,
    max_declared: usize,
    sink: &mut (dyn BodySink + Send),
) -> Result<(u16, Bytes), AttemptError> {
    let mut peer = HttpPeer::new(addr, false, String::new());
    peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
    peer.options.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
    // A pooled connection the backend has just closed fails on first use; that is no fault of
    // the backend, so such failures are retried on a fresh connection (bounded: the pool holds
    // few idle connections per backend and each failed one is dropped).
    for _ in 0..4 {
        let (mut session, reused) = connector
            .get_http_session(&peer)
            .await
            .map_err(|e| AttemptError::Connect(e.to_string()))?;
        let header = request_header(addr, ex, request_id)?;
        let sent: pingora::Result<()> = async {
            session.write_request_header(header).await?;
            if ex.content_type.is_some() {
                session.write_request_body(ex.body.clone(), true).await?;
            }
            session.finish_request_body().await?;
            session.read_response_header().await?;
            // 1xx answers (100 Continue, 103 Early Hints) precede the real one; reading the
            // body of one makes Pingora's client panic (found by fuzzing), so skip a few.
            for _ in 0..MAX_INFORMATIONAL {
                if !session
                    .response_header()
                    .is_some_and(|h| h.status.is_informational())
                {
                    break;
                }
                session.read_response_header().await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = sent {
            if reused {
                continue;
            }
            return Err(AttemptError::Connect(e.to_string()));
        }
        let status = session.response_header().map(|h| h.status.as_u16()).unwrap_or(0);
        if let Some(header) = session.response_header() {
            sink.header(header);
        }
        if status < 200 {
            return Err(AttemptError::Status {
                status,
                detail: "no final answer after several informational (1xx) ones".into(),
            });
        }
        let declared = session
            .response_header()
            .and_then(|h| h.headers.get(http::header::CONTENT_LENGTH))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if status == 200 && declared.is_some_and(|n| n > max_declared as u64) {
            // Dropping the session closes the connection: nothing more is read.
            return Err(AttemptError::TooLarge { limit: max_declared });
        }
        let mut error_body = BytesMut::new();
        let mut read = 0usize;
        loop {
            match session.read_response_body().await {
                Ok(Some(chunk)) if status != 200 => {
                    let room = ERROR_BODY_MAX.saturating_sub(error_body.len());
                    error_body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if chunk.len() > room {
                        // An error answer too long to care about: keep its start, close.
                        return Ok((status, error_body.freeze()));
                    }
                }
                Ok(Some(chunk)) => {
                    read = read.saturating_add(chunk.len());
                    if sink.take(&chunk)? {
                        // The sink has what it needs: close rather than read the rest.
                        return Ok((status, Bytes::new()));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(AttemptError::Truncated {
                        after: if status == 200 { read } else { error_body.len() },
                        detail: e.to_string(),
                    })
                }
            }
        }
        connector
            .release_http_session(session, &peer, Some(UPSTREAM_IDLE_TIMEOUT))
            .await;
        return Ok((status, error_body.freeze()));
    }
    Err(AttemptError::Connect(
        "every pooled connection to the backend was closed".into(),
    ))
}

fn request_header(
    addr: SocketAddr,
    ex: &Exchange<'_>,
    request_id: &str,
) -> Result<Box<RequestHeader>, AttemptError> {
    let build = || -> pingora::Result<RequestHeader> {
        let mut h = RequestHeader::build(ex.method, ex.path.as_bytes(), Some(6 + ex.headers.len()))?;
        h.insert_header("Host", addr.to_string())?;
        if let Some(content_type) = ex.content_type {
            h.insert_header("Content-Type", content_type)?;
            h.insert_header("Content-Length", ex.body.len().to_string())?;
        }
        for (name, value) in ex.headers {
            h.insert_header(*name, value.as_str())?;
        }
        h.insert_header("X-Request-Id", request_id)?;
        h.insert_header("User-Agent", concat!("cosygate/", env!("CARGO_PKG_VERSION")))?;
        Ok(h)
    };
    build()
        .map(Box::new)
        .map_err(|e| AttemptError::Connect(format!("cannot build the request: {e}")))
}
