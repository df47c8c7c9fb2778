//! Who is calling, by address: the socket peer, or, when the peer is one of our
//! `trusted_proxies`, the right-most `X-Forwarded-For` entry that is not a trusted proxy. The
//! header is never believed from anyone else.

use ipnet::IpNet;
use std::net::IpAddr;

pub struct ClientIp {
    trusted: Vec<IpNet>,
}

impl ClientIp {
    pub fn new(trusted: Vec<IpNet>) -> Self {
        Self { trusted }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client's address. `forwarded_for` holds every `X-Forwarded-For` header value in
    /// order. Walking right to left through the chain of proxies, the first address that is not
    /// trusted is the client; an unparsable entry stops the walk at the last trusted hop.
    pub fn resolve<'a>(&self, peer: IpAddr, forwarded_for: impl Iterator<Item = &'a [u8]>) -> IpAddr {
        let peer = canonical(peer);
        if !self.is_trusted(peer) {
            return peer;
        }
        let entries: Vec<&[u8]> = forwarded_for.flat_map(|v| v.split(|b| *b == b',')).collect();
        let mut client = peer;
        for entry in entries.iter().rev() {
            let Some(ip) = std::str::from_utf8(entry)
                .ok()
                .and_then(|s| s.trim().parse::<IpAddr>().ok())
            else {
                break;
            };
            client = canonical(ip);
            if !self.is_trusted(client) {
                break;
            }
        }
        client
    }
}

/// The address a client is counted under (per-IP connection cap): IPv4 as is (IPv4-mapped
/// IPv6 too), IPv6 by its /64, which is one subscriber, as the rate limit keys it.
pub fn subscriber(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// IPv4-mapped IPv6 addresses are IPv4 clients.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let c = ClientIp::new(vec!["10.0.0.0/8".parse().expect("net")]);
        let xff = |v: &'static str| std::iter::once(v.as_bytes());
        assert_eq!(c.resolve(ip("203.0.113.9"), xff("1.2.3.4")), ip("203.0.113.9"));
        assert_eq!(c.resolve(ip("10.0.0.1"), xff("1.2.3.4")), ip("1.2.3.4"));
        assert_eq!(
            c.resolve(ip("10.0.0.1"), xff("6.6.6.6, 1.2.3.4, 10.0.0.7")),
            ip("1.2.3.4")
        );
        assert_eq!(
            c.resolve(ip("10.0.0.1"), xff("garbage, 10.0.0.7")),
            ip("10.0.0.7")
        );
        assert_eq!(c.resolve(ip("10.0.0.1"), std::iter::empty()), ip("10.0.0.1"));
        assert_eq!(
            c.resolve(ip("::ffff:203.0.113.9"), std::iter::empty()),
            ip("203.0.113.9")
        );
        let two = [b"6.6.6.6".as_slice(), b"1.2.3.4".as_slice()];
        assert_eq!(c.resolve(ip("10.0.0.1"), two.into_iter()), ip("1.2.3.4"));
    }
}
