//! One attempt against one backend: connect (reusing a pooled connection when there is one),
//! send the request with `Content-Length`, read the whole answer under a deadline and a size
//! cap, and classify what went wrong. A body that ends early is a failure, never a short
//! success; a body past the cap is abandoned unread and its connection closed, never pooled.

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
        }
    }
}

/// Sends `req` to `addr` and returns the status and the complete body, all within `deadline`.
/// A 200 body may have at most `max_bytes` (past it: [`AttemptError::TooLarge`], read no
/// further); of any other answer at most [`ERROR_BODY_MAX`] bytes are read and kept.
pub async fn send(
    connector: &Connector,
    addr: SocketAddr,
    req: &UpstreamRequest,
    request_id: &str,
    deadline: Duration,
    max_bytes: usize,
) -> Result<(u16, Bytes), AttemptError> {
    let started = Instant::now();
    let exchange = exchange(connector, addr, req, request_id, max_bytes);
    match tokio::time::timeout(deadline, exchange).await {
        Ok(result) => result,
        Err(_) => Err(AttemptError::Timeout(started.elapsed())),
    }
}

async fn exchange(
    connector: &Connector,
    addr: SocketAddr,
    req: &UpstreamRequest,
    request_id: &str,
    max_bytes: usize,
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
        let header = request_header(addr, req, request_id)?;
        let sent: pingora::Result<()> = async {
            session.write_request_header(header).await?;
            session.write_request_body(req.body.clone(), true).await?;
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
        if status == 200 && declared.is_some_and(|n| n > max_bytes as u64) {
            // Dropping the session closes the connection: nothing more is read.
            return Err(AttemptError::TooLarge { limit: max_bytes });
        }
        let mut body = BytesMut::new();
        loop {
            match session.read_response_body().await {
                Ok(Some(chunk)) if status != 200 => {
                    let room = ERROR_BODY_MAX.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if chunk.len() > room {
                        // An error answer too long to care about: keep its start, close.
                        return Ok((status, body.freeze()));
                    }
                }
                Ok(Some(chunk)) => {
                    if body.len().saturating_add(chunk.len()) > max_bytes {
                        return Err(AttemptError::TooLarge { limit: max_bytes });
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(AttemptError::Truncated {
                        after: body.len(),
                        detail: e.to_string(),
                    })
                }
            }
        }
        connector
            .release_http_session(session, &peer, Some(UPSTREAM_IDLE_TIMEOUT))
            .await;
        return Ok((status, body.freeze()));
    }
    Err(AttemptError::Connect(
        "every pooled connection to the backend was closed".into(),
    ))
}

fn request_header(
    addr: SocketAddr,
    req: &UpstreamRequest,
    request_id: &str,
) -> Result<Box<RequestHeader>, AttemptError> {
    let build = || -> pingora::Result<RequestHeader> {
        let mut h = RequestHeader::build("POST", req.path.as_bytes(), Some(5))?;
        h.insert_header("Host", addr.to_string())?;
        h.insert_header("Content-Type", req.content_type.as_str())?;
        h.insert_header("Content-Length", req.body.len().to_string())?;
        h.insert_header("X-Request-Id", request_id)?;
        h.insert_header("User-Agent", concat!("cosygate/", env!("CARGO_PKG_VERSION")))?;
        Ok(h)
    };
    build()
        .map(Box::new)
        .map_err(|e| AttemptError::Connect(format!("cannot build the request: {e}")))
}
