//! The front door's own answers: routes, methods, media type, body limits and framing, health.
//! Raw sockets where a well-behaved client library would hide the behaviour under test.

mod common;

use common::gateway::{pool_yaml, Gateway};
use common::sim::Sim;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn start() -> (Sim, Gateway) {
    let sim = Sim::start(&["--rtf", "0.01", "--first-chunk-ms", "5"]);
    let gw = Gateway::start(&format!(
        "  limits: {{ max_body: 1MiB }}\n{}",
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], "")
    ));
    (sim, gw)
}

/// Sends raw bytes and reads the answer until the server closes or 5 s pass.
fn raw_exchange(gw: &Gateway, request: &[u8]) -> String {
    let mut s = TcpStream::connect(gw.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn routes_methods_and_media_types() {
    let (sim, gw) = start();
    let c = reqwest::Client::new();
    let r = c.get(gw.url("/nope")).send().await.expect("answer");
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "not_found");

    let r = c.get(gw.url("/generate")).send().await.expect("answer");
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");

    let r = c
        .post(gw.url("/generate"))
        .header("Content-Type", "text/plain")
        .body("hi")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 415);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "unsupported_media_type");

    let r = c
        .post(gw.url("/generate"))
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "invalid_json");
    assert_eq!(sim.stats().await["requests"], 0, "nothing reached the backend");
}

#[tokio::test]
async fn health_reports_the_backends() {
    let (sim, gw) = start();
    let r = reqwest::get(gw.url("/health")).await.expect("answer");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(
        v,
        serde_json::json!({"status": "ok", "backends_healthy": 1, "backends_total": 1})
    );
    drop(sim);
    common::gateway::eventually(Duration::from_secs(10), "health turns 503", || async {
        reqwest::get(gw.url("/health"))
            .await
            .is_ok_and(|r| r.status() == 503)
    })
    .await;
}

#[tokio::test]
async fn an_oversized_body_is_refused_before_it_is_sent() {
    let (sim, gw) = start();
    // Headers only: the 413 must come without the gateway waiting for the 50 MB body.
    let answer = raw_exchange(&gw, b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"code\":\"body_too_large\""), "{answer}");
    // A chunked body is cut off as soon as it passes the limit.
    let mut req = b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..40 {
        req.extend_from_slice(format!("{:x}\r\n{}\r\n", 32 * 1024, " ".repeat(32 * 1024)).as_bytes());
    }
    let answer = raw_exchange(&gw, &req);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(sim.stats().await["requests"], 0);
}

#[tokio::test]
async fn ambiguous_framing_is_refused_and_the_connection_closed() {
    let (_sim, gw) = start();
    let answer = raw_exchange(
        &gw,
        b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"code\":\"conflicting_framing\""), "{answer}");
}

#[tokio::test]
async fn expect_100_continue_is_answered() {
    let (_sim, gw) = start();
    let mut s = TcpStream::connect(gw.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let body = br#"{"text":"hi","mode":"sft","spk_id":"x","speed":3}"#;
    s.write_all(format!("POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes()).expect("write");
    let mut buf = [0u8; 256];
    let n = s
        .read(&mut buf)
        .expect("an interim answer before the body is sent");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(body).expect("body");
    let mut rest = String::new();
    while !rest.ends_with("}}") {
        let n = s.read(&mut buf).expect("the final answer");
        assert!(n > 0, "connection closed early: {rest}");
        rest.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        rest.contains("422") && rest.contains("speed_out_of_range"),
        "{rest}"
    );
}

/// Reads from `s` until `end` appears in what was read (5 s read timeout); the text read.
fn read_until(s: &mut TcpStream, end: &str) -> String {
    let mut out = String::new();
    let mut buf = [0u8; 4096];
    while !out.contains(end) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    out
}

/// A valid sft request padded with spaces to `len` bytes.
fn padded_sft(len: usize) -> Vec<u8> {
    let mut body = r#"{"text":"hi","mode":"sft","spk_id":"中文女"}"#.as_bytes().to_vec();
    body.resize(len, b' ');
    body
}

#[tokio::test]
async fn bodies_over_the_in_flight_budget_get_503_before_they_are_read() {
    let sim = Sim::start(&["--rtf", "0.01", "--first-chunk-ms", "5"]);
    let gw = Gateway::start(&format!(
        "  limits: {{ max_body: 1MiB, max_bodies_in_flight: 1MiB }}\n{}",
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], "")
    ));
    let head = |len: usize, extra: &str| {
        format!("POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}Content-Length: {len}\r\n\r\n")
    };
    // A holds 800,000 bytes of the 1 MiB budget: its 100 Continue says the bytes are reserved.
    let mut a = TcpStream::connect(gw.addr).expect("connect");
    a.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    a.write_all(head(800_000, "Expect: 100-continue\r\n").as_bytes())
        .expect("write");
    let interim = read_until(&mut a, "\r\n\r\n");
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");

    // B declares 300,000 more: refused from its headers alone, its body never read.
    let answer = raw_exchange(&gw, head(300_000, "").as_bytes());
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"code\":\"server_busy\""), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("retry-after: 1\r\n"), "{answer}");
    assert!(lower.contains("connection: close"), "{answer}");

    // C sends a chunked body: refused once it grows past what is left (248,576 bytes).
    let mut c = b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        c.extend_from_slice(format!("{:x}\r\n{}\r\n", 100_000, " ".repeat(100_000)).as_bytes());
    }
    let answer = raw_exchange(&gw, &c);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"code\":\"server_busy\""), "{answer}");
    assert_eq!(sim.stats().await["requests"], 0, "no backend saw a refused body");

    // A finishes and is served; its bytes are given back, so B's size fits now.
    a.write_all(&padded_sft(800_000)).expect("A's body");
    let answer = read_until(&mut a, "RIFF");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(a);
    let client = reqwest::Client::new();
    common::gateway::eventually(
        Duration::from_secs(5),
        "a 300 KB body is accepted again",
        || async {
            client
                .post(gw.url("/generate"))
                .header("Content-Type", "application/json")
                .body(padded_sft(300_000))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
}

#[tokio::test]
async fn bodies_over_1_mib_get_the_same_answers_from_the_blocking_pool() {
    let sim = Sim::start(&["--rtf", "0.01", "--first-chunk-ms", "5"]);
    let gw = Gateway::start(&format!(
        "  limits: {{ max_body: 4MiB }}\n{}",
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], "")
    ));
    let client = reqwest::Client::new();
    let post = |body: Vec<u8>| {
        client
            .post(gw.url("/generate"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    // 1.5 MiB of base64 that is not base64: refused as a small body would be.
    let bad = format!(
        r#"{{"text":"hi","mode":"cross_lingual","prompt_audio":"{}!"}}"#,
        "A".repeat(1536 * 1024)
    );
    let r = post(bad.into_bytes()).await.expect("answer");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "invalid_base64");
    // 2 MiB of JSON that is not JSON.
    let r = post(vec![b'{'; 2 * 1024 * 1024]).await.expect("answer");
    assert_eq!(r.status(), 400);
    assert_eq!(sim.stats().await["requests"], 0);
    // A valid 1.2 MB request is served.
    let r = post(padded_sft(1_200_000)).await.expect("answer");
    assert_eq!(r.status(), 200);
    assert_eq!(&r.bytes().await.expect("body")[..4], b"RIFF");
    assert_eq!(sim.stats().await["requests"], 1);
}
