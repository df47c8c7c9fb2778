//! The supervisor's own health probe while a restarted backend comes up: a fresh `GET` of the
//! pool's health path, `200` or not. The pool's health checker keeps its own verdict (it may
//! still remember the old process); this one only looks at the new process.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether `GET path` on `addr` answers 200 within `timeout`.
pub async fn healthy(addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, get_status(addr, path))
        .await
        .ok()
        .flatten()
        == Some(200)
}

async fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let got = s.read(&mut buf[n..]).await.ok()?;
        if got == 0 {
            break;
        }
        n += got;
    }
    let head = std::str::from_utf8(&buf[..n]).ok()?;
    head.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}
