//! CosyVoice's Gradio WebUI as a backend (`protocol: gradio`), against `cosyvoice-sim --serve
//! gradio`: the real `gradio_client` reads the sim's API and gets audio from it (fidelity), and
//! a gateway in front of it answers every mode, retries an `event: error` and a full queue on
//! another backend, and times out a hang.

mod common;

use base64::Engine;
use common::gateway::{pool_yaml, Gateway};
use common::python::{python, require_module, scripts_dir};
use common::sim::{test_wav, Sim};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GRADIO_FAST: &[&str] = &["--serve", "gradio", "--rtf", "0.01", "--first-chunk-ms", "5"];
const MARK: &str = "<|endofprompt|>";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn post(gw: &Gateway, body: &Value) -> reqwest::Response {
    client()
        .post(gw.url("/generate"))
        .json(body)
        .send()
        .await
        .expect("gateway answers")
}

async fn error_code(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.expect("JSON error body");
    (
        status,
        v["error"]["code"].as_str().unwrap_or_default().to_string(),
    )
}

fn sft() -> Value {
    json!({"text": "Gradio preset voice.", "mode": "sft", "spk_id": "中文女"})
}

/// A valid `generate_audio` call for the sim directly (sft, CosyVoice3's marker in place).
fn direct_call() -> Value {
    json!({"data": [format!("{MARK}Hello."), "预训练音色", "中文女", "", null, null, "", 0, false, 1.0]})
}

#[tokio::test]
async fn gradio_client_reads_the_api_and_gets_audio_from_the_sim() {
    require_module("gradio_client");
    let sim = Sim::start(GRADIO_FAST);
    let dir = tempfile::tempdir().expect("dir");
    let prompt = dir.path().join("prompt.wav");
    std::fs::write(&prompt, test_wav(2.0, 16000)).expect("prompt written");
    let mut child = Command::new(python())
        .arg(scripts_dir().join("gradio_check.py"))
        .arg(format!("http://{}", sim.addr()))
        .arg("中文女")
        .arg(&prompt)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("gradio_check.py did not finish within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.success(),
        "gradio_check.py failed: {status}\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    for mode in ["sft", "zero_shot"] {
        assert_eq!(seen[mode]["rate"], 24000, "{seen}");
        assert!(seen[mode]["frames"].as_u64().is_some_and(|f| f > 0), "{seen}");
        assert_eq!(seen[mode]["is_stream"], true, "{seen}");
    }
    assert_eq!(seen["refused_input"], Value::Null);
    let stats = sim.stats().await;
    assert_eq!(stats["requests"], 3, "{stats}");
    assert_eq!(stats["inflight"], 0, "{stats}");
}

#[tokio::test]
async fn a_gradio_pool_answers_sft_zero_shot_and_instruct() {
    let sim = Sim::start(GRADIO_FAST);
    let gw = Gateway::start(&pool_yaml("gradio", &[sim.addr()], ""));
    let prompt = test_wav(3.0, 16000);
    let prompt_sha = hex::encode(Sha256::digest(&prompt));
    let cases = [
        (sft(), "预训练音色", None),
        (
            json!({"text": "Cloned voice.", "prompt_audio": b64(&prompt), "prompt_text": "A prompt transcript."}),
            "3s极速复刻",
            Some(prompt_sha.clone()),
        ),
        (
            json!({"text": "Told how to speak.", "mode": "instruct", "prompt_audio": b64(&prompt), "instruct_text": "Speak slowly."}),
            "自然语言控制",
            Some(prompt_sha.clone()),
        ),
        (
            json!({"text": "Across languages.", "mode": "cross_lingual", "prompt_audio": b64(&prompt), "speed": 1.5}),
            "跨语种复刻",
            Some(prompt_sha.clone()),
        ),
    ];
    for (i, (body, label, sha)) in cases.into_iter().enumerate() {
        let resp = post(&gw, &body).await;
        assert_eq!(resp.status(), 200, "{label}: {}", gw.log());
        let (wav, info) = common::http::complete_wav(resp).await;
        assert_eq!(
            (info.sample_rate, info.channels, info.bits_per_sample),
            (24000, 1, 16)
        );
        assert!(info.frames > 0 && wav.len() > 44);
        let last = sim.last().await;
        assert_eq!(last["route"], "/gradio_api/call/generate_audio");
        assert_eq!(last["fields"]["mode_checkbox_group"], label);
        assert_eq!(last["fields"]["stream"], false);
        // Gradio checks the dropdown in every mode: always one of the WebUI's speakers.
        assert_eq!(last["fields"]["sft_dropdown"], "中文女", "{label}");
        assert_eq!(
            last["prompt_wav_sha256"],
            sha.map_or(Value::Null, Value::from),
            "{label}"
        );
        // CosyVoice3's marker reached the model once, where webui.py passes it on.
        let f = &last["fields"];
        let texts = format!("{}{}{}", f["tts_text"], f["prompt_text"], f["instruct_text"]);
        assert_eq!(texts.matches(MARK).count(), 1, "{label}: {last}");
        let stats = sim.stats().await;
        assert_eq!(stats["requests"], i + 1, "{stats}");
        assert_eq!(stats["missing_endofprompt"], 0, "{stats}");
    }
    assert_eq!(sim.last().await["fields"]["speed"], 1.5);
}

#[tokio::test]
async fn gradio_failures_end_as_json_errors() {
    let sim = Sim::start(GRADIO_FAST);
    let gw = Gateway::start(&pool_yaml(
        "gradio",
        &[sim.addr()],
        "      timeout: 2s\n      retry: { attempts: 0 }\n      circuit_breaker: { failures: 100 }\n",
    ));
    for (fault, status, code) in [
        ("error500", 502, "backend_failed"),
        ("truncate", 502, "backend_failed"),
        ("endless", 502, "backend_failed"),
        ("hang", 504, "backend_timeout"),
    ] {
        sim.fault(fault, 1).await;
        let started = Instant::now();
        let resp = post(&gw, &sft()).await;
        assert_eq!(error_code(resp).await, (status, code.to_string()), "{fault}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{fault} took {:?}",
            started.elapsed()
        );
    }
    // Nothing armed any more: the backend serves again.
    assert_eq!(post(&gw, &sft()).await.status(), 200);
}

#[tokio::test]
async fn an_event_error_is_retried_on_another_backend() {
    let a = Sim::start(GRADIO_FAST);
    let b = Sim::start(GRADIO_FAST);
    let gw = Gateway::start(&pool_yaml(
        "gradio",
        &[a.addr(), b.addr()],
        "      retry: { attempts: 1, budget_min: 100 }\n",
    ));
    a.fault("error500", 1).await;
    for _ in 0..4 {
        assert_eq!(post(&gw, &sft()).await.status(), 200, "{}", gw.log());
    }
    let (sa, sb) = (a.stats().await, b.stats().await);
    let total = sa["requests"].as_u64().unwrap_or(0) + sb["requests"].as_u64().unwrap_or(0);
    assert_eq!(
        total, 5,
        "4 requests and the retry of the one that met `event: error`: {sa} {sb}"
    );
    assert!(sa["requests"].as_u64().is_some_and(|n| n >= 1), "{sa}");
}

#[tokio::test]
async fn a_full_gradio_queue_is_retried_elsewhere() {
    let a = Sim::start(GRADIO_FAST);
    let b = Sim::start(GRADIO_FAST);
    // Fill a's queue: 2 calls hang in its 2 running places, 4 wait behind them.
    a.fault("hang", 2).await;
    for _ in 0..6 {
        let resp = client()
            .post(a.url("/gradio_api/call/generate_audio"))
            .json(&direct_call())
            .send()
            .await
            .expect("sim answers");
        assert_eq!(resp.status(), 200);
    }
    let full = client()
        .post(a.url("/gradio_api/call/generate_audio"))
        .json(&direct_call())
        .send()
        .await
        .expect("sim answers");
    assert_eq!(full.status(), 503);
    let detail: Value = full.json().await.expect("json");
    assert!(
        detail["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("Queue is full")),
        "{detail}"
    );
    a.wait_stats(Duration::from_secs(5), "two hanging syntheses", |s| {
        s["inflight"] == 2
    })
    .await;

    let gw = Gateway::start(&pool_yaml(
        "gradio",
        &[a.addr(), b.addr()],
        "      retry: { attempts: 2, budget_min: 100 }\n      circuit_breaker: { failures: 100 }\n",
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut served = 0;
    while a.stats().await["gradio_queue_full"].as_u64().unwrap_or(0) < 3 {
        assert!(
            Instant::now() < deadline,
            "the gateway never tried the full backend"
        );
        assert_eq!(post(&gw, &sft()).await.status(), 200, "{}", gw.log());
        served += 1;
    }
    assert_eq!(b.stats().await["requests"], served, "b served every request");
}
