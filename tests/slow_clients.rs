//! Slow and greedy clients: the total header deadline, the per-IP connection cap (429 over it;
//! trusted proxies with their own cap), and the header caps (431). Raw sockets from the test process, on loopback; every wait has a deadline.

mod common;

use common::gateway::{pool_yaml, Gateway};
use common::sim::Sim;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GENERATE_BODY: &str = r#"{"text":"hi","mode":"sft","spk_id":"中文女"}"#;
const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: cosygate\r\n\r\n";

fn start(limits: &str) -> (Sim, Gateway) {
    let sim = Sim::start(&["--rtf", "0.01", "--first-chunk-ms", "5"]);
    let gw = Gateway::start(&format!(
        "  limits: {limits}\n{}",
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], "")
    ));
    (sim, gw)
}

/// Sends one request on `s` and reads one answer (status, body) by its Content-Length; `None`
/// when the connection fails or closes, or no complete answer comes within 5 s.
async fn exchange(s: &mut TcpStream, request: &[u8]) -> Option<(u16, Vec<u8>)> {
    let read = async {
        s.write_all(request).await.ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let n = s.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
            buf.extend_from_slice(&chunk[..n]);
        }
        Some((status, buf[head_end..head_end + length].to_vec()))
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .ok()
        .flatten()
}

/// Waits until the server closes `s` (a read gives 0 bytes or an error); how long it took, or
/// `None` if it is still open after `within`. Bytes the server sends meanwhile are a failure.
async fn wait_closed(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(within, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Some(start.elapsed()),
        Ok(Ok(n)) => panic!(
            "expected a silent close, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(_) => None,
    }
}

/// Opens `n` connections and proves each is served with two requests on it (keep-alive);
/// `None` if any of them is refused.
async fn open_usable(gw: &Gateway, n: usize) -> Option<Vec<TcpStream>> {
    let mut conns = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(gw.addr).await.ok()?;
        for _ in 0..2 {
            if exchange(&mut s, HEALTH).await?.0 != 200 {
                return None;
            }
        }
        conns.push(s);
    }
    Some(conns)
}

/// `open_usable`, retried for up to 5 s while the server gives back slots of connections that
/// just closed (it notices a close asynchronously).
async fn open_usable_soon(gw: &Gateway, n: usize) -> Vec<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(conns) = open_usable(gw, n).await {
            return conns;
        }
        assert!(
            Instant::now() < deadline,
            "{n} connections were not all served within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client that opens a connection and sends `prefix` at once (then says so on `ready`), then
/// one more byte of a request every 300 ms, never finishing it. Returns when it connected and
/// when the server closed the connection (`None`: still open after 8 s).
async fn slow_client(
    gw_addr: std::net::SocketAddr,
    prefix: usize,
    ready: tokio::sync::mpsc::Sender<()>,
) -> (Instant, Option<Instant>) {
    let request = format!(
        "POST /generate HTTP/1.1\r\nHost: cosygate\r\nContent-Type: application/json\r\nX-Slow: {}",
        "z".repeat(100)
    );
    let request = request.as_bytes();
    let connected = Instant::now();
    let stream = TcpStream::connect(gw_addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(&request[..prefix])
        .await
        .expect("send the first bytes");
    let _ = ready.send(()).await;
    drop(ready);
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    tick.tick().await;
    let mut next = prefix;
    let mut buf = [0u8; 1024];
    let give_up = tokio::time::sleep(Duration::from_secs(8));
    tokio::pin!(give_up);
    loop {
        tokio::select! {
            read = rd.read(&mut buf) => match read {
                Ok(0) | Err(_) => return (connected, Some(Instant::now())),
                Ok(n) => panic!("a slow client got an answer: {:?}", String::from_utf8_lossy(&buf[..n])),
            },
            _ = tick.tick() => {
                if wr.write_all(&request[next..next + 1]).await.is_err() {
                    return (connected, Some(Instant::now()));
                }
                next += 1;
            }
            () = &mut give_up => return (connected, None),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_headers_are_cut_at_the_deadline_while_others_are_served() {
    let (_sim, gw) = start("{ header_timeout: 2s, max_connections_per_ip: 300 }");
    let timeout = Duration::from_secs(2);

    // 200 slow clients: half still inside the first 24 bytes (the HTTP/2 preface check), half
    // past them (inside Pingora's header read). Connected before the normal requests start.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(200);
    let mut slow = Vec::new();
    for i in 0..200 {
        let prefix = if i % 2 == 0 { 0 } else { 40 };
        slow.push(tokio::spawn(slow_client(gw.addr, prefix, ready_tx.clone())));
    }
    drop(ready_tx);
    for _ in 0..200 {
        ready_rx.recv().await.expect("a slow client connected");
    }

    // A keep-alive connection that finishes one request and then stays idle.
    let mut idle = TcpStream::connect(gw.addr).await.expect("connect");
    assert_eq!(exchange(&mut idle, HEALTH).await.map(|a| a.0), Some(200));
    let idle_since = Instant::now();

    // Normal requests are served promptly meanwhile.
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let sent = Instant::now();
        let r = client
            .post(gw.url("/generate"))
            .header("Content-Type", "application/json")
            .body(GENERATE_BODY)
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.expect("body")[..4], *b"RIFF");
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "took {:?}",
            sent.elapsed()
        );
    }
    let normal_done = Instant::now();

    // Every slow connection is closed by the server after the deadline, not before, and only
    // after the normal requests were all served.
    for task in slow {
        let (connected, closed) = task.await.expect("slow client task");
        let closed = closed.unwrap_or_else(|| panic!("a slow connection was still open after 8 s"));
        let after = closed - connected;
        assert!(
            after >= timeout - Duration::from_millis(100),
            "closed early, after {after:?}"
        );
        assert!(
            after <= timeout + Duration::from_secs(2),
            "closed late, after {after:?}"
        );
        assert!(
            closed > normal_done,
            "closed before the normal requests were done"
        );
    }

    // The idle keep-alive connection's deadline counts from the end of its previous answer.
    let left = timeout + Duration::from_secs(2) - idle_since.elapsed().min(timeout);
    wait_closed(&mut idle, left)
        .await
        .expect("the idle keep-alive connection is closed");
    let idle_for = idle_since.elapsed();
    assert!(
        idle_for >= timeout - Duration::from_millis(100),
        "idle connection closed after {idle_for:?}"
    );

    // And the gateway still serves new connections.
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    assert_eq!(exchange(&mut s, HEALTH).await.map(|a| a.0), Some(200));
}

/// Sends a request on a connection over the cap: expects `429 too_many_connections` with
/// `Retry-After`, `Connection: close` and a JSON body, then the close.
async fn expect_refused(mut s: TcpStream) {
    let request = b"GET /health HTTP/1.1\r\nHost: cosygate\r\n\r\n";
    s.write_all(request).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer))
        .await
        .expect("answered and closed within 5 s")
        .expect("read");
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete answer");
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 429 "), "{text}");
    for header in [
        "retry-after: 5",
        "connection: close",
        "content-type: application/json",
    ] {
        assert!(head.contains(header), "{header} in {text}");
    }
    let v: Value = serde_json::from_str(body).expect("json body");
    assert_eq!(v["error"]["code"], "too_many_connections");
}

/// A TCP connection from a chosen loopback source address.
async fn connect_from(src: [u8; 4], to: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from((src, 0)))
        .expect("bind a loopback source address");
    socket.connect(to).await.expect("connect")
}

#[tokio::test]
async fn the_per_ip_cap_answers_429_to_extra_connections_and_frees_their_slots() {
    let (_sim, gw) = start("{ max_connections_per_ip: 5 }");

    // (The harness's readiness probe may hold a slot for a moment.)
    let mut conns = open_usable_soon(&gw, 5).await;
    // Several requests on one keep-alive connection take no extra slots.
    for _ in 0..5 {
        assert_eq!(exchange(&mut conns[0], HEALTH).await.map(|a| a.0), Some(200));
    }
    let sixth = TcpStream::connect(gw.addr).await.expect("the kernel accepts");
    expect_refused(sixth).await;
    for c in &mut conns {
        assert_eq!(
            exchange(c, HEALTH).await.map(|a| a.0),
            Some(200),
            "the first five stay usable"
        );
    }
    // An HTTP/2 connection over the cap has no request to answer yet: it is closed silently.
    let mut h2 = TcpStream::connect(gw.addr).await.expect("the kernel accepts");
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    assert!(
        wait_closed(&mut h2, Duration::from_secs(2)).await.is_some(),
        "an HTTP/2 connection over the cap is closed"
    );
    // Another address has slots of its own.
    let mut other = connect_from([127, 0, 0, 2], gw.addr).await;
    assert_eq!(exchange(&mut other, HEALTH).await.map(|a| a.0), Some(200));

    // Closing them gives the slots back: five new connections are served, a sixth is refused.
    drop(conns);
    let conns = open_usable_soon(&gw, 5).await;
    let sixth = TcpStream::connect(gw.addr).await.expect("the kernel accepts");
    expect_refused(sixth).await;
    drop(conns);
}

#[tokio::test]
async fn a_trusted_proxy_has_its_own_larger_cap() {
    let sim = Sim::start(&["--rtf", "0.01", "--first-chunk-ms", "5"]);
    let gw = Gateway::start(&format!(
        "  limits: {{ max_connections_per_ip: 2, max_connections_per_proxy: 6 }}\n  rate_limit:\n    per_ip: {{ capacity: 1000, refill: 1000, per: 1s }}\n    trusted_proxies: [ 127.0.0.1/32 ]\n{}",
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], "")
    ));
    // The proxy (127.0.0.1) holds six connections, more than any one client may.
    let proxy = open_usable_soon(&gw, 6).await;
    expect_refused(TcpStream::connect(gw.addr).await.expect("connect")).await;
    // A client that is not a trusted proxy (127.0.0.3) gets two.
    let mut client = Vec::new();
    for _ in 0..2 {
        let mut s = connect_from([127, 0, 0, 3], gw.addr).await;
        assert_eq!(exchange(&mut s, HEALTH).await.map(|a| a.0), Some(200));
        client.push(s);
    }
    expect_refused(connect_from([127, 0, 0, 3], gw.addr).await).await;
    drop((proxy, client));
}

#[tokio::test]
async fn oversized_header_blocks_get_431() {
    let (_sim, gw) = start("{ max_headers: 64, max_header_bytes: 32KiB }");
    let client = reqwest::Client::new();
    let generate = |headers: Vec<(String, String)>| {
        let mut req = client
            .post(gw.url("/generate"))
            .header("Content-Type", "application/json")
            .body(GENERATE_BODY);
        for (name, value) in headers {
            req = req.header(name, value);
        }
        req.send()
    };
    let many = |n: usize| (0..n).map(|i| (format!("X-Pad-{i}"), "v".to_string())).collect();
    let big = |bytes: usize| vec![("X-Big".to_string(), "b".repeat(bytes))];

    for (what, headers) in [("100 headers", many(100)), ("a 40 KiB header", big(40 * 1024))] {
        let r = generate(headers).await.expect("answer");
        assert_eq!(r.status(), 431, "{what}");
        assert_eq!(r.headers()["content-type"], "application/json");
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["error"]["code"], "headers_too_large", "{what}");
    }
    // Under the caps the same requests go through.
    for (what, headers) in [("50 headers", many(50)), ("a 20 KiB header", big(20 * 1024))] {
        let r = generate(headers).await.expect("answer");
        assert_eq!(r.status(), 200, "{what}");
    }
}
