//! The per-client connection cap: how many connections one client may hold open at once, and
//! the answer a connection over the cap gets.
//!
//! Clients are counted as the rate limit counts them: an IPv4 address, or an IPv6 /64 (one
//! subscriber; rotating addresses inside it does not help). A peer inside
//! `rate_limit.trusted_proxies` carries many clients, so it is counted by its own address against
//! the larger `limits.max_connections_per_proxy`. Over the cap, an HTTP/1 connection is answered
//! `429 too_many_connections` with `Retry-After` and closed, as nginx's `limit_conn` does; an
//! HTTP/2 connection is closed without an answer (it has no request yet to answer).

use super::ApiError;
use crate::admission::client_ip::subscriber;
use bytes::Bytes;
use ipnet::IpNet;
use parking_lot::Mutex;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// `Retry-After` (seconds) of a connection refused over the cap.
const RETRY_AFTER_SECS: u64 = 5;

/// Longest time a refused connection is kept: reading its request, answering, draining.
const REFUSAL_TIME: Duration = Duration::from_secs(2);

/// Open connections per client, at most `per_ip` (or `per_proxy` for trusted proxies) each.
pub(super) struct PerIpCap {
    per_ip: usize,
    per_proxy: usize,
    trusted: Vec<IpNet>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIpCap {
    pub(super) fn new(per_ip: usize, per_proxy: usize, trusted: Vec<IpNet>) -> Self {
        Self {
            per_ip,
            per_proxy,
            trusted,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The key `peer` is counted under and its cap.
    fn key(&self, peer: IpAddr) -> (IpAddr, usize) {
        let ip = peer.to_canonical();
        if self.trusted.iter().any(|net| net.contains(&ip)) {
            (ip, self.per_proxy)
        } else {
            (subscriber(ip), self.per_ip)
        }
    }

    /// Takes one of `peer`'s slots, or says which cap it is over. Runs once per accepted
    /// connection; the slot is given back when dropped.
    pub(super) fn take(&self, peer: IpAddr) -> Result<Slot<'_>, usize> {
        let (key, max) = self.key(peer);
        let mut open = self.open.lock();
        let count = open.get(&key).copied().unwrap_or(0);
        if count >= max {
            return Err(max);
        }
        open.insert(key, count + 1);
        Ok(Slot { cap: self, key })
    }
}

/// One open connection counted against its client; given back when dropped.
pub(super) struct Slot<'a> {
    cap: &'a PerIpCap,
    key: IpAddr,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut open = self.cap.open.lock();
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Answers an HTTP/1 connection over the cap: reads its request head, writes
/// `429 too_many_connections` with `Retry-After` and `Connection: close`, then reads and drops
/// what the client still sends of its body (so the close does not reset the answer away), all
/// within 2 s. Runs in the refused connection's own task; holds no slot.
pub(super) async fn refuse_http1(stream: Stream, max: usize) {
    let mut session = ServerSession::new_http1(stream);
    let _ = tokio::time::timeout(REFUSAL_TIME, answer_429(&mut session, max)).await;
}

async fn answer_429(session: &mut ServerSession, max: usize) {
    if !matches!(session.read_request().await, Ok(true)) {
        return; // no request: nothing to answer
    }
    let request_id = format!("{:032x}", rand::random::<u128>());
    let err = ApiError::new(
        429,
        "too_many_connections",
        format!(
            "this address already has {max} connections open; reuse them (keep-alive) or retry \
             after {RETRY_AFTER_SECS} s"
        ),
    );
    let body = Bytes::from(err.to_json(&request_id));
    let Ok(resp) = refusal_header(body.len(), &request_id) else {
        return;
    };
    session.set_keepalive(None);
    if session.write_error_response(resp, body).await.is_ok() {
        let _ = session.drain_request_body().await;
    }
}

fn refusal_header(len: usize, request_id: &str) -> pingora::Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(429, Some(6))?;
    resp.insert_header("Content-Type", "application/json")?;
    resp.insert_header("Content-Length", len.to_string())?;
    resp.insert_header("X-Request-Id", request_id)?;
    resp.insert_header("Retry-After", RETRY_AFTER_SECS.to_string())?;
    resp.insert_header("Cache-Control", "no-store")?;
    resp.insert_header("Connection", "close")?;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_and_proxies_by_their_own_cap() {
        let cap = PerIpCap::new(2, 3, vec!["10.0.0.0/8".parse().expect("net")]);
        let a = cap.take(ip("2001:db8:1:2::1")).expect("first");
        let b = cap.take(ip("2001:db8:1:2:ffff::9")).expect("second, same /64");
        assert_eq!(
            cap.take(ip("2001:db8:1:2::77")).err(),
            Some(2),
            "third in the /64"
        );
        let other = cap.take(ip("2001:db8:1:3::1")).expect("another /64");
        drop(a);
        let c = cap.take(ip("2001:db8:1:2::5")).expect("a slot was given back");
        let proxies: Vec<_> = (0..3).map(|_| cap.take(ip("10.1.2.3")).expect("proxy")).collect();
        assert_eq!(cap.take(ip("10.1.2.3")).err(), Some(3));
        let mapped = cap.take(ip("::ffff:192.0.2.1")).expect("mapped v4");
        let v4 = cap.take(ip("192.0.2.1")).expect("the same client, second slot");
        assert_eq!(
            cap.take(ip("192.0.2.1")).err(),
            Some(2),
            "mapped and plain are one client"
        );
        drop((b, c, other, proxies, mapped, v4));
        assert!(cap.open.lock().is_empty(), "every slot given back");
    }
}
