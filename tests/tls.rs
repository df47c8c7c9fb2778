//! TLS listeners end to end: a gateway with a `listen[].tls` entry (a pair from
//! scripts/make-cert.sh) completes TLS 1.2 and TLS 1.3 handshakes with a rustls client that
//! trusts only that certificate, and serves `POST /generate` over HTTP/2 chosen by ALPN.

mod common;

use common::gateway::{eventually, free_port, pool_yaml, Gateway};
use common::sim::Sim;
use reqwest::tls::Version;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;

const FAST: &[&str] = &["--rtf", "0.01", "--first-chunk-ms", "5"];

fn client(cert: &reqwest::Certificate, addr: SocketAddr, min: Version, max: Version) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(cert.clone())
        .min_tls_version(min)
        .max_tls_version(max)
        .resolve("localhost", addr)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("TLS client")
}

#[tokio::test]
async fn tls_1_2_and_1_3_handshakes_and_generate_over_h2() {
    let sim = Sim::start(FAST);
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = common::tls::make_pair(dir.path());
    let tls_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // The harness writes `listen:` and its cleartext entry first; this adds the TLS entry.
    let body = format!(
        "    - addr: {tls_addr}\n      tls: {{ cert: {}, key: {} }}\n{}",
        cert.display(),
        key.display(),
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], "")
    );
    let gw = Gateway::start(&body);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&cert).expect("read cert")).expect("PEM");
    let health = format!("https://localhost:{}/health", tls_addr.port());

    for (name, version) in [("TLS 1.2", Version::TLS_1_2), ("TLS 1.3", Version::TLS_1_3)] {
        let c = client(&ca, tls_addr, version, version);
        eventually(Duration::from_secs(10), &format!("a {name} handshake"), || {
            let (c, url) = (c.clone(), health.clone());
            async move { c.get(&url).send().await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
    }

    // An untrusted certificate is refused by the client: the test's trust is not vacuous.
    let other = tempfile::tempdir().expect("dir");
    let (other_cert, _) = common::tls::make_pair(other.path());
    let stranger = reqwest::Certificate::from_pem(&std::fs::read(other_cert).expect("read")).expect("PEM");
    let refused = client(&stranger, tls_addr, Version::TLS_1_2, Version::TLS_1_3)
        .get(&health)
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a certificate the client does not trust was accepted"
    );

    // HTTP/2 by ALPN (no prior knowledge), the synthesis itself over TLS.
    let c = client(&ca, tls_addr, Version::TLS_1_2, Version::TLS_1_3);
    let resp = c
        .post(format!("https://localhost:{}/generate", tls_addr.port()))
        .json(&json!({"text": "Over TLS.", "mode": "sft", "spk_id": "中文女"}))
        .send()
        .await
        .expect("POST /generate over TLS");
    assert_eq!(
        resp.version(),
        reqwest::Version::HTTP_2,
        "ALPN chose {:?}",
        resp.version()
    );
    assert_eq!(resp.status(), 200, "{:?}", resp.headers());
    let wav = resp.bytes().await.expect("body");
    assert!(
        wav.starts_with(b"RIFF") && wav.len() > 44,
        "a WAV answer, {} bytes",
        wav.len()
    );
    drop(gw);
}
