//! A bare Pingora reverse proxy, for the miss benchmark (`benches/miss.sh`) only: one listener,
//! one upstream, every request passed through as it is, nothing else (no validation, no
//! admission, no queue, no cache, no access log). What it adds over a direct call is Pingora's
//! own cost on this machine; what cosygate adds over it is cosygate's.
//!
//! `cargo run --release --example plain_proxy -- LISTEN_ADDR UPSTREAM_ADDR` (one worker thread).

#![forbid(unsafe_code)]

use async_trait::async_trait;
use pingora::prelude::*;
use std::net::SocketAddr;

struct Plain {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Plain {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    /// Every request goes to the one upstream, over a pooled cleartext connection.
    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: plain_proxy LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let upstream: SocketAddr = match upstream.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("plain_proxy: UPSTREAM_ADDR {upstream:?}: {e}");
            std::process::exit(2);
        }
    };
    let conf = pingora::server::configuration::ServerConf {
        threads: 1,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Plain { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
