//! Edge defences against slow, greedy and idle clients: a cap on open connections per client
//! (`conn_cap`), a total deadline on each request's headers, caps on the header block's size, and
//! an HTTP/1 keep-alive loop that holds almost nothing while a connection is idle.
//!
//! Pingora 0.9.1 gives a client 60 s per read while it sends headers but no total deadline (with
//! h2c on, its HTTP/2 preface check waits for 24 bytes with no timeout at all), takes up to 1 MiB
//! of headers, and has no per-IP connection cap, so one client can hold many connections open
//! for minutes. `ConnectionGuard` wraps the `HttpProxy` as the listening service's `ServerApp`
//! and drives the HTTP/1 keep-alive loop itself, racing each request's headers against
//! `limits.header_timeout`; `Gateway::early_request_filter` tells it through `PendingHeaders`
//! when they are in. HTTP/2 connections get only the per-IP cap: they multiplex, and a deadline
//! on the connection would cut its live streams (Pingora closes them after `h2_idle_timeout`).
//!
//! Idle cost: Pingora's own loop parks an idle keep-alive connection inside the proxy's whole
//! request future (several KiB) and a 64 KiB read buffer. Here the cleartext listeners have no L4
//! read buffer (`main.rs`), and between requests the loop waits for the next request's first
//! byte with nothing but the bare `Stream` (a 1-byte peek) before it creates the next session.

use super::conn_cap::{refuse_http1, PerIpCap};
use super::ApiError;
use crate::config::LimitsConf;
use async_trait::async_trait;
use ipnet::IpNet;
use log::debug;
use parking_lot::Mutex;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream, ServerApp};
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// What an HTTP/2 client sends first on a cleartext connection (RFC 9113, 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Pingora's own keep-alive idle timeout (seconds), kept as its default HTTP/1 loop sets it.
/// Our loop waits for the next request's first byte itself, within `header_timeout`.
const KEEPALIVE_SECS: u64 = 60;

/// The listening service's app: the per-IP cap and header deadline around Pingora's HTTP app.
pub struct ConnectionGuard<A> {
    app: Arc<A>,
    pending: Arc<PendingHeaders>,
    cap: PerIpCap,
    header_timeout: Duration,
}

impl<A> ConnectionGuard<A> {
    /// Wraps `app`; `pending` must be the registry the `Gateway` inside `app` reports to;
    /// `trusted_proxies` (from `rate_limit`) get `limits.max_connections_per_proxy` each.
    pub fn new(
        app: A,
        pending: Arc<PendingHeaders>,
        limits: &LimitsConf,
        trusted_proxies: Vec<IpNet>,
    ) -> Self {
        Self {
            app: Arc::new(app),
            pending,
            cap: PerIpCap::new(
                limits.max_connections_per_ip,
                limits.max_connections_per_proxy,
                trusted_proxies,
            ),
            header_timeout: limits.header_timeout.0,
        }
    }
}

/// The protocol a connection's first bytes announce.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Speaks {
    Http1,
    Http2,
}

#[async_trait]
impl<A> ServerApp for ConnectionGuard<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// Runs once per accepted connection (after any TLS handshake): moves the connection to a
    /// task of its own (see `serve_connection`) and returns `None` at once (nothing to reuse).
    /// Pingora's task for a connection also holds its TLS-handshake future, about 9 KiB, for
    /// the connection's whole life; ours holds only what the connection needs at the moment.
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let this = self.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { this.serve_connection(stream, &shutdown).await });
        None
    }

    /// Runs once when the service stops listening. Deliberately does not pass Pingora's
    /// `http_cleanup` on: that drops every idle keep-alive connection at once, and with it any
    /// request already on the wire toward one (the client sees a reset). Here an idle
    /// connection stays open through the drain; a request on it is served with
    /// `Connection: close` (Pingora does that once shutdown is set), and the process's exit
    /// closes the connections still idle then (see `drain`).
    async fn cleanup(&self) {}
}

impl<A> ConnectionGuard<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// Serves one connection to its end: refuses it without a peer address or over the per-IP
    /// cap (HTTP/1 with a 429), hands HTTP/2 to Pingora as is, and serves HTTP/1 requests one by
    /// one under the header deadline. Whatever holds a session is boxed, so the task stays
    /// small while the connection is idle.
    async fn serve_connection(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) {
        let Some(peer) = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied())
        else {
            // Every listener is TCP; a connection we cannot attribute is not served.
            debug!("a connection without a peer address; closing");
            return;
        };
        let deadline = Instant::now() + self.header_timeout.saturating_sub(connection_age(&stream));
        // Held until this call returns, which is when the connection ends.
        let _slot = match self.cap.take(peer.ip()) {
            Ok(slot) => slot,
            Err(max) => {
                debug!("{peer}: over {max} connections from this client; refusing");
                crate::metrics::REJECTED
                    .with_label_values(&["too_many_connections"])
                    .inc();
                if let Ok(Ok(Speaks::Http1)) =
                    tokio::time::timeout_at(deadline, self.speaks(&mut stream)).await
                {
                    Box::pin(refuse_http1(stream, max)).await;
                }
                return;
            }
        };
        let speaks = match tokio::time::timeout_at(deadline, self.speaks(&mut stream)).await {
            Ok(Ok(speaks)) => speaks,
            Ok(Err(e)) => {
                debug!("{peer}: closed before sending a request: {e}");
                return;
            }
            Err(_) => {
                debug!("{peer}: no request within {:?}; closing", self.header_timeout);
                return;
            }
        };
        if speaks == Speaks::Http2 {
            // Pingora's own HTTP/2 path; its connection state lives in its boxed future.
            self.app.process_new(stream, shutdown).await;
            return;
        }
        self.serve_http1(stream, peer, deadline, shutdown).await;
    }

    /// Waits for the client's first bytes and says which protocol they start: ALPN on TLS; on
    /// cleartext, the h2c preface (when h2c is on) or anything else for HTTP/1. Peeks, never
    /// consumes; the caller bounds the wait by the header deadline.
    async fn speaks(&self, stream: &mut Stream) -> std::io::Result<Speaks> {
        if stream.get_ssl_digest().is_some() {
            return Ok(match stream.selected_alpn_proto() {
                Some(ALPN::H2) => Speaks::Http2,
                _ => Speaks::Http1,
            });
        }
        let mut first = [0u8; 3];
        if !stream.try_peek(&mut first[..1]).await? {
            return Ok(Speaks::Http1); // cannot peek: let the HTTP/1 parser read it
        }
        if first[0] != b'P' || !self.app.server_options().is_some_and(|o| o.h2c) {
            return Ok(Speaks::Http1);
        }
        // "PRI" is HTTP/2's alone; any HTTP/1 request line is longer than 3 bytes, so waiting
        // for them never stalls a short one (POST, PUT, PATCH).
        stream.try_peek(&mut first).await?;
        if &first != b"PRI" {
            return Ok(Speaks::Http1);
        }
        let mut preface = [0u8; H2_PREFACE.len()];
        stream.try_peek(&mut preface).await?;
        Ok(if preface == H2_PREFACE {
            Speaks::Http2
        } else {
            Speaks::Http1
        })
    }

    /// Serves HTTP/1 requests on one connection until it closes, as Pingora's own loop does,
    /// each under a header deadline: the first from the accept, later ones from the previous
    /// response's end (so `header_timeout` is also the keep-alive idle timeout). Between
    /// requests it holds only the `Stream` and waits for the next request's first byte.
    async fn serve_http1(
        self: &Arc<Self>,
        mut stream: Stream,
        peer: SocketAddr,
        mut deadline: Instant,
        shutdown: &ShutdownWatch,
    ) {
        let mut settings = None;
        // Each request's session exists only inside its boxed `serve_one`.
        while let Some(reused) = Box::pin(self.serve_one(stream, settings, peer, deadline, shutdown)).await {
            (stream, settings) = reused.consume();
            deadline = Instant::now() + self.header_timeout;
            if !next_request_arrives(&mut stream, deadline).await {
                debug!(
                    "{peer}: keep-alive connection idle for {:?}; closing",
                    self.header_timeout
                );
                return;
            }
        }
    }

    /// Serves one request on a new session over `stream` (the previous request's persistent
    /// settings applied, or the first request's); drops the connection when its headers are
    /// not in by `deadline`.
    async fn serve_one(
        self: &Arc<Self>,
        stream: Stream,
        settings: Option<HttpPersistentSettings>,
        peer: SocketAddr,
        deadline: Instant,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let mut session = ServerSession::new_http1(stream);
        match settings {
            Some(settings) => settings.apply_to_session(&mut session),
            None => {
                session.set_keepalive((!*shutdown.borrow()).then_some(KEEPALIVE_SECS));
                session.set_keepalive_reuses_remaining(
                    self.app.server_options().and_then(|o| o.keepalive_request_limit),
                );
            }
        }
        let waiting = self.pending.expect(peer);
        let serve = self.app.process_new_http(session, shutdown);
        tokio::pin!(serve);
        tokio::select! {
            biased;
            reused = &mut serve => reused,
            () = tokio::time::sleep_until(deadline) => {
                if waiting.headers_in() {
                    serve.await
                } else {
                    debug!("{peer}: request headers not in within {:?}; closing", self.header_timeout);
                    None
                }
            }
        }
    }
}

/// Waits on an idle keep-alive connection until the next request's first byte is there (true),
/// or the client closes or `deadline` passes (false); also during a shutdown's drain (see
/// `cleanup`). Holds nothing but the stream meanwhile. A TLS stream cannot be peeked: it
/// returns true at once, and the next session waits for the request as Pingora's own loop does.
async fn next_request_arrives(stream: &mut Stream, deadline: Instant) -> bool {
    let mut byte = [0u8; 1];
    tokio::select! {
        peeked = stream.try_peek(&mut byte) => peeked.is_ok(),
        () = tokio::time::sleep_until(deadline) => false,
    }
}

/// Time since the connection was accepted (Pingora's timing digest), so that a TLS handshake
/// counts against the first request's header deadline.
fn connection_age(stream: &Stream) -> Duration {
    stream
        .get_timing_digest()
        .into_iter()
        .flatten()
        .next()
        .and_then(|t| SystemTime::now().duration_since(t.established_ts).ok())
        .unwrap_or_default()
}

/// Connections whose current request's headers are not in yet, by client address (ip:port
/// names one live TCP connection). The guard adds one per HTTP/1 request; the gateway's
/// `early_request_filter` takes it out, which lifts that request's header deadline.
#[derive(Debug, Default)]
pub struct PendingHeaders {
    waiting: Mutex<HashSet<SocketAddr>>,
}

impl PendingHeaders {
    /// Called as soon as a request's headers are parsed; unknown addresses (HTTP/2) are ignored.
    pub fn headers_received(&self, client: SocketAddr) {
        self.waiting.lock().remove(&client);
    }

    /// Starts waiting for `client`'s next request headers.
    fn expect(&self, client: SocketAddr) -> Waiting<'_> {
        self.waiting.lock().insert(client);
        Waiting {
            pending: self,
            client,
        }
    }
}

/// One request's wait for its headers; forgotten when dropped.
struct Waiting<'a> {
    pending: &'a PendingHeaders,
    client: SocketAddr,
}

impl Waiting<'_> {
    fn headers_in(&self) -> bool {
        !self.pending.waiting.lock().contains(&self.client)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.pending.waiting.lock().remove(&self.client);
    }
}

/// Refuses a header block over `limits.max_headers` fields or `limits.max_header_bytes` bytes
/// (request line plus each field's name, value and 4 bytes of `: ` and CRLF), with 431.
pub fn check_header_limits(req: &RequestHeader, limits: &LimitsConf) -> Result<(), ApiError> {
    let fields = req.headers.len();
    if fields > limits.max_headers {
        return Err(ApiError::new(
            431,
            "headers_too_large",
            format!(
                "the request has {fields} header fields; the limit is {}: send fewer headers",
                limits.max_headers
            ),
        )
        .closing());
    }
    let request_line = req.method.as_str().len() + " ".len() + req.raw_path().len() + " HTTP/1.1\r\n".len();
    let bytes = request_line
        + req
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    let max = limits.max_header_bytes.as_usize();
    if bytes > max {
        return Err(ApiError::new(
            431,
            "headers_too_large",
            format!(
                "the request headers take {bytes} bytes; the limit is {max}: send fewer or shorter headers"
            ),
        )
        .closing());
    }
    Ok(())
}
