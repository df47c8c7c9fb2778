//! The fallback voice never reads the request text as an option, a file name or shell code
//! (issue 9 §1). With every backend down and the real espeak-ng as the fallback, texts built to
//! be read as espeak-ng options (`-f FILE` reads a file aloud, `-w FILE` writes one) are spoken
//! literally: the gateway's WAV is byte-identical to espeak-ng speaking that text from stdin,
//! differs from espeak-ng reading the file, and no file is written.

mod common;

use common::gateway::{eventually, free_port, pool_yaml, Gateway};
use common::http::complete_wav;
use serde_json::json;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const ESPEAK: &[&str] = &["espeak-ng", "-v", "en-us", "-w"];

/// espeak-ng's WAV for `text` given on stdin (what the gateway must answer).
fn espeak_stdin(text: &str, out: &Path) -> Vec<u8> {
    let mut child = Command::new(ESPEAK[0])
        .args(&ESPEAK[1..])
        .arg(out)
        .arg("--stdin")
        .stdin(Stdio::piped())
        .spawn()
        .expect("espeak-ng is installed (scripts/test.sh)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    assert!(child.wait().expect("espeak-ng").success());
    std::fs::read(out).expect("espeak-ng wrote its WAV")
}

/// espeak-ng's WAV when it reads `file` aloud (what an attacker would like to get back).
fn espeak_file(file: &Path, out: &Path) -> Vec<u8> {
    let status = Command::new(ESPEAK[0])
        .args(&ESPEAK[1..])
        .arg(out)
        .arg("-f")
        .arg(file)
        .status()
        .expect("espeak-ng");
    assert!(status.success());
    std::fs::read(out).expect("espeak-ng wrote its WAV")
}

#[tokio::test]
async fn texts_that_look_like_espeak_options_are_spoken_literally() {
    let dir = tempfile::tempdir().expect("dir");
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "The launch code is purple elephant seven.").expect("write");
    let written = dir.path().join("x.wav");
    let dead = [SocketAddr::from(([127, 0, 0, 1], free_port()))];
    let gw = Gateway::start(&format!(
        "  fallback:\n    command: [\"espeak-ng\", \"-v\", \"en-us\", \"-w\", \"{{out}}\", \"--stdin\"]\n{}",
        pool_yaml("cosyvoice_fastapi", &dead, "      model: cosyvoice2\n")
    ));
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(10), "the backend marked down", || async {
        let health = client.get(gw.url("/health")).send().await;
        match health {
            Ok(r) => r
                .json::<serde_json::Value>()
                .await
                .is_ok_and(|v| v["backends_healthy"] == 0),
            Err(_) => false,
        }
    })
    .await;
    let file_read = espeak_file(&secret, &dir.path().join("file.wav"));
    let s = secret.display();
    let texts = [
        format!("-f {s}"),
        format!("-f{s}"),
        format!("--path=/tmp -f{s}"),
        format!("-w{}", written.display()),
        format!("--stdout -f {s}"),
    ];
    for text in &texts {
        let resp = client
            .post(gw.url("/generate"))
            .json(&json!({"text": text, "mode": "sft", "spk_id": "x"}))
            .send()
            .await
            .expect("an answer");
        assert_eq!(resp.status(), 200, "{text}");
        assert_eq!(
            resp.headers().get("x-degraded").and_then(|v| v.to_str().ok()),
            Some("fallback"),
            "{text}"
        );
        let (wav, _) = complete_wav(resp).await;
        let literal = espeak_stdin(text, &dir.path().join("literal.wav"));
        assert_eq!(&wav[..], &literal[..], "{text:?} is spoken as it is written");
        assert_ne!(&wav[..], &file_read[..], "{text:?} must not read the file aloud");
        assert!(!written.exists(), "{text:?} wrote {}", written.display());
    }
}
