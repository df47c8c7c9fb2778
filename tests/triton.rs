//! `protocol: triton`: CosyVoice's Triton + TensorRT-LLM runtime over KServe v2. NVIDIA's own
//! client (`tritonclient`, HTTP binary tensors, pure JSON, gRPC decoupled streaming) against
//! the simulator's `--serve triton` mode, so the sim speaks Triton's wire format; then the
//! gateway in front of that sim over both transports: audio, retries, the decoupled-over-HTTP
//! configuration error, the pool timeout, and sft refused before any backend call.

mod common;

use base64::Engine;
use common::gateway::{free_port, pool_yaml, Gateway};
use common::http::complete_wav;
use common::python::{python, require_module, scripts_dir};
use common::sim::{test_wav, Sim};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

const FAST: &[&str] = &["--rtf", "0.01", "--first-chunk-ms", "5"];
const TEXT: &str = "Hello from the Triton runtime, in a cloned voice.";
/// Three sentences of 65 words, each its own text segment, so a decoupled model streams
/// several chunks.
fn long_text() -> String {
    (1..=3)
        .map(|i| format!("Sentence {i} {}.", "word ".repeat(63).trim_end()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A Triton sim with a gRPC port too; returns it and its gRPC address.
fn triton_sim(decoupled: bool) -> (Sim, SocketAddr) {
    let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let grpc_arg = grpc.to_string();
    let mut args = vec!["--serve", "triton", "--grpc-listen", &grpc_arg];
    if decoupled {
        args.push("--decoupled");
    }
    args.extend_from_slice(FAST);
    (Sim::start(&args), grpc)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

fn zero_shot_body(prompt: &[u8]) -> Value {
    json!({
        "text": TEXT,
        "mode": "zero_shot",
        "prompt_text": "A short prompt transcript.",
        "prompt_audio": base64::engine::general_purpose::STANDARD.encode(prompt),
    })
}

async fn post(gw: &Gateway, body: &Value) -> reqwest::Response {
    client()
        .post(gw.url("/generate"))
        .json(body)
        .send()
        .await
        .expect("gateway answers")
}

fn triton_gateway(backends: &[SocketAddr], extra: &str) -> Gateway {
    Gateway::start(&pool_yaml("triton", backends, extra))
}

/// Runs tests/python/triton_check.py; returns its JSON line and whether it passed.
fn triton_check(mode: &str, addr: SocketAddr, text: &str) -> (bool, Value) {
    let out = Command::new(python())
        .arg(scripts_dir().join("triton_check.py"))
        .args([mode, &addr.to_string(), "cosyvoice3", text])
        .output()
        .expect("run triton_check.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "triton_check.py {mode}: no JSON line; stdout {stdout}\nstderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

#[test]
fn tritonclient_speaks_to_the_simulator_over_http_and_grpc() {
    require_module("tritonclient.http");
    require_module("tritonclient.grpc");
    let expected = cosyvoice_sim::triton::waveform_len(TEXT, 24000) as u64;
    let (sim, grpc) = triton_sim(false);
    for mode in ["http", "json"] {
        let (ok, v) = triton_check(mode, sim.addr(), TEXT);
        assert!(ok, "{mode}: {v}");
        assert_eq!(v["shape"], json!([1, expected]), "{mode}: {v}");
        assert_eq!(v["dtype"], "float32");
    }
    let (ok, v) = triton_check("grpc", grpc, TEXT);
    assert!(ok, "grpc, not decoupled: {v}");
    assert_eq!(
        (v["chunks"].as_u64(), v["samples"].as_u64()),
        (Some(1), Some(expected))
    );

    let (dsim, dgrpc) = triton_sim(true);
    let long_text = long_text();
    let (ok, v) = triton_check("grpc", dgrpc, &long_text);
    assert!(ok, "grpc, decoupled: {v}");
    assert!(v["chunks"].as_u64() > Some(1), "streamed in chunks: {v}");
    let long = cosyvoice_sim::triton::waveform_len(&long_text, 24000) as u64;
    assert_eq!(v["samples"].as_u64(), Some(long));
    let (ok, v) = triton_check("http-decoupled", dsim.addr(), TEXT);
    assert!(ok, "HTTP on a decoupled model: {v}");
    assert_eq!(v["status"], "501");
}

#[tokio::test]
async fn a_triton_pool_answers_zero_shot_over_http_and_grpc() {
    let (plain, _) = triton_sim(false);
    let (decoupled, grpc) = triton_sim(true);
    // A 44.1 kHz prompt: the gateway resamples it to the model's 16 kHz.
    let prompt = test_wav(2.0, 44100);
    let frames = cosyvoice_sim::triton::waveform_len(TEXT, 24000) as u32;
    for (gw, sim, what) in [
        (triton_gateway(&[plain.addr()], ""), &plain, "http"),
        (
            triton_gateway(&[grpc], "      transport: grpc\n"),
            &decoupled,
            "grpc",
        ),
    ] {
        let resp = post(&gw, &zero_shot_body(&prompt)).await;
        assert_eq!(resp.status(), 200, "{what}: {}", gw.log());
        let (_, info) = complete_wav(resp).await;
        assert_eq!(
            (info.sample_rate, info.channels, info.bits_per_sample),
            (24000, 1, 16),
            "{what}"
        );
        assert_eq!(info.frames, frames, "{what}: as long as the sim's waveform");
        let last = sim.last().await;
        assert_eq!(last["fields"]["target_text"], TEXT, "{what}: {last}");
        assert_eq!(
            last["fields"]["reference_text"],
            "You are a helpful assistant.<|endofprompt|>A short prompt transcript.",
            "{what}"
        );
        assert_eq!(
            last["fields"]["reference_wav_samples"], 32000,
            "{what}: 2 s at 16 kHz"
        );
    }
}

#[tokio::test]
async fn a_failing_backend_gives_502_and_its_request_is_retried_elsewhere() {
    let (a, _) = triton_sim(false);
    let (b, _) = triton_sim(false);
    // One retry: the failed attempt is tried once more, on the other backend.
    let gw = triton_gateway(&[a.addr(), b.addr()], "      retry: { attempts: 1 }\n");
    let body = zero_shot_body(&test_wav(1.0, 16000));
    // Both fail once: the request is tried on each, then 502.
    a.fault("error500", 1).await;
    b.fault("error500", 1).await;
    let resp = post(&gw, &body).await;
    assert_eq!(resp.status(), 502, "{}", gw.log());
    let v: Value = resp.json().await.expect("JSON error");
    assert_eq!(v["error"]["code"], "backend_failed", "{v}");
    for sim in [&a, &b] {
        assert_eq!(sim.stats().await["requests"], 1, "one attempt on each backend");
    }
    // One keeps failing: every request still succeeds, on the other.
    a.reset().await;
    b.reset().await;
    a.fault("error500", 100).await;
    for _ in 0..2 {
        let resp = post(&gw, &body).await;
        assert_eq!(resp.status(), 200, "{}", gw.log());
        complete_wav(resp).await;
    }
    assert!(
        a.stats().await["requests"].as_u64() >= Some(1),
        "round robin tried the failing one"
    );
    assert_eq!(b.stats().await["requests"], 2);
}

#[tokio::test]
async fn a_decoupled_model_over_http_is_a_clear_configuration_error() {
    let (sim, _) = triton_sim(true);
    let gw = triton_gateway(&[sim.addr()], "");
    let resp = post(&gw, &zero_shot_body(&test_wav(1.0, 16000))).await;
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.expect("JSON error");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("misconfigured"), "{v}");
    let log = gw.log();
    assert!(
        log.contains("decoupled") && log.contains("transport: grpc"),
        "{log}"
    );
    assert_eq!(sim.stats().await["requests"], 1, "not retried");
}

#[tokio::test]
async fn a_hanging_backend_hits_the_pool_timeout_on_both_transports() {
    let (sim, grpc) = triton_sim(true);
    let (plain, _) = triton_sim(false);
    for (addr, transport, s) in [(plain.addr(), "http", &plain), (grpc, "grpc", &sim)] {
        let gw = triton_gateway(
            &[addr],
            &format!("      transport: {transport}\n      timeout: 1s\n"),
        );
        s.fault("hang", 1).await;
        let started = Instant::now();
        let resp = post(&gw, &zero_shot_body(&test_wav(1.0, 16000))).await;
        assert_eq!(resp.status(), 504, "{transport}: {}", gw.log());
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "{transport}: answered after {took:?}"
        );
    }
}

#[tokio::test]
async fn sft_is_refused_before_any_backend_call() {
    let (sim, grpc) = triton_sim(true);
    for extra in ["", "      transport: grpc\n"] {
        let addr = if extra.is_empty() { sim.addr() } else { grpc };
        let gw = triton_gateway(&[addr], extra);
        let resp = post(&gw, &json!({"text": "Hello.", "mode": "sft", "spk_id": "中文女"})).await;
        assert_eq!(resp.status(), 422);
        let v: Value = resp.json().await.expect("JSON error");
        assert_eq!(v["error"]["code"], "sft_unavailable", "{v}");
    }
    assert_eq!(sim.stats().await["requests"], 0, "the backend never saw it");
}
