//! The fuzz targets themselves: one function per input surface, taking arbitrary bytes and
//! panicking only when a property is broken (a panic inside the code under test is a crash as
//! well). Shared by the proptest harness (`tests/fuzz.rs`, the short run in the test suite) and
//! the coverage-guided `cargo fuzz` targets (`fuzz/fuzz_targets/*.rs`, the long runs), which
//! include this file with `#[path]`. Imports stay plain crate paths (`cosygate::...`, and
//! `cosyvoice_sim::form` for the simulator's form reader, a dev-dependency).

#![allow(dead_code)]

use bytes::Bytes;
use cosygate::api::wav::{parse_wav, pcm16_to_wav};
use cosygate::api::{GenerateRequest, RequestLimits};
use cosygate::backend::attempt::{self, AttemptError};
use cosygate::backend::multipart::Form;
use cosygate::backend::protocol::decode;
use cosygate::backend::UpstreamRequest;
use cosygate::config::{self, PoolConf};
use cosygate::gateway::ApiError;
use cosyvoice_sim::form::{read_form, FormValue};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

/// The multipart boundary the reader target is called with (the corpus uses it too).
pub const BOUNDARY: &str = "XyZ";
/// A Redis password that must never appear in a config error.
pub const SECRET: &str = "s3cr3tPassw0rd";
pub const SECRET_URL: &str = "redis://:s3cr3tPassw0rd@127.0.0.1:6379/0";

const LIMITS: RequestLimits = RequestLimits {
    max_text_chars: 200,
    max_prompt_seconds: 30.0,
};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a fuzzing runtime")
    })
}

/// `POST /generate` bodies: an accepted request is within the limits; a refused one has a
/// documented status, a code and a message.
pub fn request(body: &[u8]) {
    match GenerateRequest::parse(body, LIMITS) {
        Ok(r) => {
            assert!(!r.text.is_empty() && r.text.chars().count() <= LIMITS.max_text_chars);
            assert!((0.5..=2.0).contains(&r.speed), "speed {}", r.speed);
            if let Some(audio) = &r.prompt_audio {
                assert!(parse_wav(audio).is_ok(), "accepted prompt audio is a valid WAV");
            }
        }
        Err(e) => {
            let answer = ApiError::from(e);
            assert!(
                [400, 413, 415, 422].contains(&answer.status),
                "status {} for {answer}",
                answer.status
            );
            assert!(!answer.code.is_empty() && !answer.message.is_empty());
        }
    }
}

/// WAV files: an accepted one never claims more data than it holds; and any even-length PCM
/// becomes a WAV the reader accepts, frame for frame.
pub fn wav(bytes: &[u8]) {
    if let Ok(info) = parse_wav(bytes) {
        let sample_bytes = usize::from(info.bits_per_sample.div_ceil(8));
        let data = info.frames as usize * usize::from(info.channels) * sample_bytes;
        assert!(info.channels > 0, "{info:?}");
        assert!(
            data <= bytes.len(),
            "{info:?} claims {data} bytes in {}",
            bytes.len()
        );
        // parse_wav checks sizes, not samples: every sample of what it accepts must read.
        let (mono, _) = cosygate::api::wav::mono_f32(bytes).expect("every sample of an accepted WAV reads");
        assert_eq!(mono.len(), info.frames as usize, "{info:?}");
    }
    let pcm = &bytes[..bytes.len() & !1];
    let wav = pcm16_to_wav(pcm, 24000).expect("PCM becomes a WAV");
    let info = parse_wav(&wav).expect("our own WAV is valid");
    assert_eq!(info.frames as usize, pcm.len() / 2);
}

fn form_parts(content_type: &str) -> http::request::Parts {
    http::Request::builder()
        .method("POST")
        .uri("/inference_zero_shot")
        .header("content-type", content_type)
        .body(())
        .expect("a request head")
        .into_parts()
        .0
}

/// Multipart bodies into the sim's FastAPI form reader: a form or FastAPI's 400, no panic.
pub fn multipart(body: &[u8]) {
    let parts = form_parts(&format!("multipart/form-data; boundary={BOUNDARY}"));
    if let Err(answer) = runtime().block_on(read_form(parts, Bytes::copy_from_slice(body))) {
        assert_eq!(
            answer.status().as_u16(),
            400,
            "an unreadable form is FastAPI's 400"
        );
    }
}

/// Text fields and a file, read from bytes: byte 0 = field count (mod 5); then per field one
/// byte choosing the name and the value up to the next 0xFF; the rest is the file.
pub fn fields_from_bytes(data: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
    const NAMES: [&str; 4] = ["tts_text", "prompt_text", "instruct_text", "spk_id"];
    let Some((&n, mut rest)) = data.split_first() else {
        return (Vec::new(), Vec::new());
    };
    let mut fields = Vec::new();
    for _ in 0..n % 5 {
        let Some((&which, tail)) = rest.split_first() else {
            break;
        };
        let end = tail.iter().position(|&b| b == 0xff).unwrap_or(tail.len());
        let value = String::from_utf8_lossy(&tail[..end]).into_owned();
        fields.push((NAMES[usize::from(which) % 4].to_string(), value));
        rest = tail.get(end + 1..).unwrap_or_default();
    }
    (fields, rest.to_vec())
}

/// The gateway's multipart writer, read back by the sim's reader: every text field and the
/// file arrive exactly as written (the last value of a repeated name wins, as in Starlette).
pub fn multipart_round_trip(texts: &[(String, String)], file: &[u8]) {
    let mut form = Form::new();
    for (name, value) in texts {
        form.text(name, value);
    }
    form.file("prompt_wav", "prompt.wav", "audio/wav", file);
    let (content_type, body) = form.finish();
    let read = match runtime().block_on(read_form(form_parts(&content_type), body)) {
        Ok(read) => read,
        Err(answer) => panic!("our own form was refused: {}", answer.status()),
    };
    for (name, _) in texts {
        let last = texts.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v);
        match read.get(name) {
            Some(FormValue::Text(t)) => assert_eq!(Some(t), last, "field {name}"),
            other => panic!("field {name} read back as {other:?}"),
        }
    }
    match read.get("prompt_wav") {
        Some(FormValue::File(f)) => assert_eq!(&f[..], file),
        other => panic!("the file read back as {other:?}"),
    }
}

/// One pool of each protocol, to decode every answer both ways.
fn pools() -> &'static [PoolConf] {
    static POOLS: OnceLock<Vec<PoolConf>> = OnceLock::new();
    POOLS.get_or_init(|| {
        let yaml = "cosygate:\n  listen: [ { addr: 127.0.0.1:1 } ]\n  default_pool: a\n  pools:\n    a: { protocol: cosyvoice_fastapi, backends: [ { addr: 127.0.0.1:2 } ] }\n    b: { protocol: generate_json, backends: [ { addr: 127.0.0.1:3 } ] }\n";
        let (_, gateway) = config::parse("pools.yaml", yaml).expect("the test pools parse");
        gateway.pools.0.into_values().collect()
    })
}

/// Serves `answer` to one connection on a fresh port (so no pooled connection is ever shared
/// between inputs): reads the request head and body, writes the bytes, closes.
async fn fake_backend(answer: Vec<u8>) -> std::io::Result<SocketAddr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let read_request = async {
            loop {
                let n = sock.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<_, std::io::Error>(());
                }
                got.extend_from_slice(&buf[..n]);
                if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if got.len() >= end + 4 + len {
                        return Ok(());
                    }
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), read_request).await;
        let _ = sock.write_all(&answer).await;
        let _ = sock.shutdown().await;
        // Wait for the client to close (or to pool the connection), then close abortively:
        // no TIME_WAIT per input, so long runs do not run out of loopback ports.
        let _ = tokio::time::timeout(Duration::from_millis(200), sock.read(&mut buf)).await;
        let _ = sock.set_zero_linger();
    });
    Ok(addr)
}

/// A backend answering with these bytes and closing: `attempt::send` returns an answer or a
/// classified failure (never a timeout: the socket closed), never more body than was sent;
/// `decode` turns it into a valid WAV or an error. With `expected`, the answer is well formed
/// and its body must be read exactly.
/// The most body a fuzzed answer may carry before `TooLarge` (more than any input here).
const MAX_BODY: usize = 16 << 20;

pub fn upstream_with(answer: &[u8], expected: Option<&[u8]>) {
    static CONNECTOR: OnceLock<pingora::connectors::http::Connector> = OnceLock::new();
    let connector = CONNECTOR.get_or_init(|| pingora::connectors::http::Connector::new(None));
    let request = UpstreamRequest {
        path: "/inference_sft",
        content_type: "text/plain".into(),
        body: Bytes::from_static(b"fuzz"),
    };
    let result = runtime().block_on(async {
        let addr = fake_backend(answer.to_vec()).await?;
        Ok::<_, std::io::Error>(
            attempt::send(
                connector,
                addr,
                &request,
                "fuzz",
                Duration::from_secs(5),
                MAX_BODY,
                None,
            )
            .await,
        )
    });
    let Ok(result) = result else {
        return; // no loopback port free right now: not an input's fault
    };
    if let Err(AttemptError::Connect(e)) = &result {
        if e.contains("Address already in use") || e.contains("Cannot assign requested address") {
            return; // likewise
        }
    }
    if let Err(AttemptError::Timeout(_)) = &result {
        panic!("a backend that closed its socket must not time out");
    }
    if let Some(body) = expected {
        match &result {
            Ok((status, got)) => {
                assert_eq!(*status, 200);
                assert_eq!(&got[..], body, "the body is read exactly");
            }
            Err(e) => panic!("a well-formed answer failed: {e}"),
        }
    }
    if let Ok((status, body)) = result {
        assert!(
            body.len() <= answer.len(),
            "read {} body bytes from {} sent",
            body.len(),
            answer.len()
        );
        for pool in pools() {
            if let Ok(wav) = decode(pool, status, body.clone()) {
                assert!(parse_wav(&wav).is_ok(), "decode gives valid WAVs only");
            }
        }
    }
}

pub fn upstream(answer: &[u8]) {
    upstream_with(answer, None)
}

/// The config loader on arbitrary text: `${VAR}` substitution, then parsing and checking. An
/// error names the file, says something, and never shows a Redis password.
pub fn config(bytes: &[u8]) {
    let Ok(raw) = std::str::from_utf8(bytes) else {
        return; // the loader reads text: invalid UTF-8 is refused by read_to_string
    };
    let text = match config::substitute_env(raw, |v| (v == "SET").then(|| "1".to_string())) {
        Ok(t) => t,
        Err((line, message)) => {
            assert!(line >= 1 && !message.is_empty());
            return;
        }
    };
    if let Err(e) = config::parse("fuzz.yaml", &text) {
        let shown = e.to_string();
        assert!(shown.starts_with("fuzz.yaml"), "{shown}");
        assert!(!e.message.is_empty());
        // Whenever every copy of the password stands in a well-formed URL, no error shows it
        // (a mangled copy, say with its '@' gone, cannot be told from any other text).
        if text.contains(SECRET) && text.matches(SECRET).count() == text.matches(SECRET_URL).count() {
            assert!(
                !shown.contains(SECRET),
                "a config error shows the Redis password: {shown}"
            );
        }
    }
}
