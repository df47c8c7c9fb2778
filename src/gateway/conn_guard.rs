//! Edge defences against slow and greedy clients: a cap on open connections per client IP, a
//! total deadline on each request's headers, and caps on the header block's size.
//!
//! Pingora 0.9.1 gives a client 60 s per read while it sends headers but no total deadline (with
//! h2c on, its HTTP/2 preface check waits for 24 bytes with no timeout at all), takes up to 1 MiB
//! of headers, and has no per-IP connection cap, so one client can hold many connections open
//! for minutes. `ConnectionGuard` wraps the `HttpProxy` as the listening service's `ServerApp`
//! and drives the HTTP/1 keep-alive loop itself, racing each request's headers against
//! `limits.header_timeout`; `Gateway::early_request_filter` tells it through `PendingHeaders`
//! when they are in. HTTP/2 connections get only the per-IP cap: they multiplex, and a deadline
//! on the connection would cut its live streams.

use crate::api::ApiError;
use crate::config::LimitsConf;
use async_trait::async_trait;
use log::debug;
use pingora::apps::{HttpServerApp, ReusedHttpStream, ServerApp};
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// What an HTTP/2 client sends first on a cleartext connection (RFC 9113, 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Pingora's own keep-alive idle timeout (seconds), kept as its default HTTP/1 loop sets it.
const KEEPALIVE_SECS: u64 = 60;

/// The listening service's app: the per-IP cap and header deadline around Pingora's HTTP app.
pub struct ConnectionGuard<A> {
    app: Arc<A>,
    pending: Arc<PendingHeaders>,
    per_ip: PerIpCap,
    header_timeout: Duration,
}

impl<A> ConnectionGuard<A> {
    /// Wraps `app`; `pending` must be the registry the `Gateway` inside `app` reports to.
    pub fn new(app: A, pending: Arc<PendingHeaders>, limits: &LimitsConf) -> Self {
        Self {
            app: Arc::new(app),
            pending,
            per_ip: PerIpCap {
                max: limits.max_connections_per_ip,
                open: Mutex::new(HashMap::new()),
            },
            header_timeout: limits.header_timeout.0,
        }
    }
}

/// Open connections per client IP, at most `max` each.
struct PerIpCap {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIpCap {
    /// Takes one of `ip`'s slots, or `None` when it already has `max` connections open.
    fn take(&self, ip: IpAddr) -> Option<Slot<'_>> {
        let mut open = lock(&self.open);
        let count = open.get(&ip).copied().unwrap_or(0);
        if count >= self.max {
            return None;
        }
        open.insert(ip, count + 1);
        Some(Slot { cap: self, ip })
    }
}

/// One open connection counted against its client IP; given back when dropped.
struct Slot<'a> {
    cap: &'a PerIpCap,
    ip: IpAddr,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut open = lock(&self.cap.open);
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[async_trait]
impl<A> ServerApp for ConnectionGuard<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// Runs once per accepted connection (after any TLS handshake) and serves it to its end:
    /// refuses it at once over the per-IP cap, hands HTTP/2 to Pingora as is, and serves HTTP/1
    /// requests one by one under the header deadline. Always returns `None` (nothing to reuse).
    async fn process_new(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
        // Held until this call returns, which is when the connection ends.
        let _slot = match peer {
            Some(addr) => match self.per_ip.take(addr.ip().to_canonical()) {
                Some(slot) => Some(slot),
                None => {
                    debug!(
                        "{addr}: over {} connections from this IP; closing",
                        self.per_ip.max
                    );
                    return None;
                }
            },
            None => None, // not TCP: no IP to count
        };
        let deadline = Instant::now() + self.header_timeout.saturating_sub(connection_age(&stream));
        let h2 = match tokio::time::timeout_at(deadline, self.is_h2(&mut stream)).await {
            Ok(Ok(h2)) => h2,
            Ok(Err(e)) => {
                debug!("{peer:?}: closed before sending a request: {e}");
                return None;
            }
            Err(_) => {
                debug!("{peer:?}: no request within {:?}; closing", self.header_timeout);
                return None;
            }
        };
        if h2 {
            return self.app.process_new(stream, shutdown).await;
        }
        self.serve_http1(stream, peer, deadline, shutdown).await;
        None
    }

    /// Runs once when the service stops listening: lets Pingora end its idle keep-alive waits.
    async fn cleanup(&self) {
        self.app.http_cleanup().await;
    }
}

impl<A> ConnectionGuard<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// Whether the connection speaks HTTP/2: ALPN on TLS, the h2c preface otherwise (peeked,
    /// not consumed; waits for its 24 bytes, so the caller bounds it by the header deadline).
    async fn is_h2(&self, stream: &mut Stream) -> std::io::Result<bool> {
        if stream.get_ssl_digest().is_some() {
            return Ok(matches!(stream.selected_alpn_proto(), Some(ALPN::H2)));
        }
        if !self.app.server_options().is_some_and(|o| o.h2c) {
            return Ok(false);
        }
        let mut buf = [0u8; H2_PREFACE.len()];
        Ok(stream.try_peek(&mut buf).await? && buf == H2_PREFACE)
    }

    /// Serves HTTP/1 requests on one connection until it closes, as Pingora's own loop does,
    /// each under a header deadline: the first from the accept, later ones from the previous
    /// response's end (so `header_timeout` is also the keep-alive idle timeout).
    async fn serve_http1(
        self: &Arc<Self>,
        stream: Stream,
        peer: Option<SocketAddr>,
        mut deadline: Instant,
        shutdown: &ShutdownWatch,
    ) {
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive((!*shutdown.borrow()).then_some(KEEPALIVE_SECS));
        session.set_keepalive_reuses_remaining(
            self.app.server_options().and_then(|o| o.keepalive_request_limit),
        );
        while let Some(reused) = self.serve_one(session, peer, deadline, shutdown).await {
            let (stream, settings) = reused.consume();
            session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            deadline = Instant::now() + self.header_timeout;
        }
    }

    /// Serves one request; drops the connection when its headers are not in by `deadline`.
    async fn serve_one(
        self: &Arc<Self>,
        session: ServerSession,
        peer: Option<SocketAddr>,
        deadline: Instant,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let Some(addr) = peer else {
            return self.app.process_new_http(session, shutdown).await;
        };
        let waiting = self.pending.expect(addr);
        let serve = self.app.process_new_http(session, shutdown);
        tokio::pin!(serve);
        tokio::select! {
            biased;
            reused = &mut serve => reused,
            () = tokio::time::sleep_until(deadline) => {
                if waiting.headers_in() {
                    serve.await
                } else {
                    debug!("{addr}: request headers not in within {:?}; closing", self.header_timeout);
                    None
                }
            }
        }
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
        lock(&self.waiting).remove(&client);
    }

    /// Starts waiting for `client`'s next request headers.
    fn expect(&self, client: SocketAddr) -> Waiting<'_> {
        lock(&self.waiting).insert(client);
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
        !lock(&self.pending.waiting).contains(&self.client)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        lock(&self.pending.waiting).remove(&self.client);
    }
}

/// Locks a map that stays consistent even if a holder panicked (each update is one step).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
