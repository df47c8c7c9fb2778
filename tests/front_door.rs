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
