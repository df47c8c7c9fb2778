//! OpenAI's audio API (`POST /v1/audio/speech`, `GET /v1/models`) through the real binaries:
//! OpenAI's own Python library gets a WAV (the same bytes and cache entry as the equivalent
//! `/generate`), raw 24 kHz PCM, a streamed answer, the same PCM in OpenAI's speech events
//! (SSE), the model list, and sees our 400, 404 and
//! 429 as it reports OpenAI's; plain HTTP checks every error's OpenAI shape and code, the
//! admission order, and that refused requests never reach the backend.

mod common;

use common::gateway::{eventually, pool_yaml, Gateway};
use common::http::complete_wav;
use common::python::{python, require_module, scripts_dir};
use common::sim::{args_for, Sim};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::process::Command;
use std::time::Duration;

const FAST: &[&str] = &["--rtf", "0.01", "--first-chunk-ms", "5"];
/// The text `openai_check.py` speaks.
const TEXT: &str = "The OpenAI client speaks through cosygate.";
const VOICE: &str = "中文女";
const TOKEN: &str = "sk-cosygate-test";

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A gateway with a token that may use pool `cosyvoice` only, a second pool `other`, and a
/// memory cache; `extra` adds lines under `cosygate:`.
fn gateway(protocol: &str, sim: &Sim, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "  auth:\n    allow_anonymous: false\n    tokens:\n      - {{ name: app, sha256: \"{}\", pools: [cosyvoice] }}\n      - {{ name: all, sha256: \"{}\" }}\n  cache: {{}}\n  default_pool: cosyvoice\n{extra}{}    other:\n      protocol: {protocol}\n      speakers: [中文女]\n      backends:\n        - addr: {}\n",
        digest(TOKEN),
        digest("sk-all"),
        pool_yaml(protocol, &[sim.addr()], ""),
        sim.addr()
    ))
}

async fn speech(gw: &Gateway, token: Option<&str>, body: &Value) -> reqwest::Response {
    let mut req = client().post(gw.url("/v1/audio/speech")).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("gateway answers")
}

/// Status, and the error object of an OpenAI-shaped error body (checked to have the shape).
async fn openai_error(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value = resp.json().await.expect("JSON error body");
    let e = v["error"].clone();
    for field in ["message", "type", "code"] {
        assert!(e[field].is_string(), "error.{field} is a string in {v}");
    }
    assert!(
        e.get("param").is_some(),
        "error.param is present (maybe null) in {v}"
    );
    (status, e)
}

fn body(extra: Value) -> Value {
    let mut b = json!({"model": "cosyvoice", "input": TEXT, "voice": VOICE});
    if let (Some(b), Some(extra)) = (b.as_object_mut(), extra.as_object()) {
        b.extend(extra.clone());
    }
    b
}

/// Runs `openai_check.py` in `mode`; returns what the library saw.
fn run_python(gw: &Gateway, out: &std::path::Path, mode: &str) -> Value {
    require_module("openai");
    let output = Command::new(python())
        .arg(scripts_dir().join("openai_check.py"))
        .arg(gw.url("/v1"))
        .arg(TOKEN)
        .arg("cosyvoice")
        .arg(VOICE)
        .arg(out)
        .arg(mode)
        .output()
        .expect("python starts");
    assert!(
        output.status.success(),
        "openai_check.py {mode} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}

#[tokio::test]
async fn the_openai_library_gets_wav_pcm_streams_models_and_our_errors() {
    let sim = Sim::start(&args_for("generate_json", FAST));
    let gw = gateway("generate_json", &sim, "");
    let dir = tempfile::tempdir().expect("dir");
    let seen = run_python(&gw, dir.path(), "main");

    // The WAV is what /generate answers for the same request, from the same cache entry.
    let wav = std::fs::read(dir.path().join("speech.wav")).expect("speech.wav");
    let resp = client()
        .post(gw.url("/generate"))
        .bearer_auth(TOKEN)
        .json(&json!({"text": TEXT, "mode": "sft", "spk_id": VOICE}))
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-cache"],
        "HIT",
        "the OpenAI request filled the same entry"
    );
    let (generated, info) = complete_wav(resp).await;
    assert_eq!(wav, generated.as_ref(), "the same audio");
    assert!(info.duration_secs() > 0.5);

    // pcm: the same audio as raw s16le mono at 24 kHz.
    let pcm = std::fs::read(dir.path().join("speech.pcm")).expect("speech.pcm");
    assert_eq!(
        pcm,
        cosygate_wav::to_pcm16_mono(&wav, 24_000).expect("converts"),
        "pcm is the WAV's audio at 24 kHz"
    );
    let expected_len = (info.duration_secs() * 24_000.0).round() as i64 * 2;
    assert!(
        (pcm.len() as i64 - expected_len).abs() <= 4,
        "{} vs {expected_len}",
        pcm.len()
    );
    // stream_format audio: a streaming WAV (sizes "unknown", 0xFFFFFFFF) with the same samples.
    let streamed = std::fs::read(dir.path().join("streamed.wav")).expect("streamed.wav");
    assert_eq!(&streamed[4..8], &[0xFF; 4], "a streaming WAV header");
    assert_eq!(&streamed[40..44], &[0xFF; 4], "a streaming WAV header");
    assert_eq!(
        &streamed[44..],
        &wav[44..],
        "stream_format audio delivers the same samples"
    );

    // stream_format sse: OpenAI's speech events carry the same PCM in base64.
    assert_eq!(seen["sse_content_type"], "text/event-stream");
    let types: Vec<&str> = seen["sse_types"]
        .as_array()
        .expect("event types")
        .iter()
        .map(|t| t.as_str().unwrap_or_default())
        .collect();
    assert!(types.len() >= 2, "{types:?}");
    let (last, deltas) = types.split_last().expect("events");
    assert_eq!(*last, "speech.audio.done");
    assert!(deltas.iter().all(|t| *t == "speech.audio.delta"), "{types:?}");
    let sse = std::fs::read(dir.path().join("sse.pcm")).expect("sse.pcm");
    assert_eq!(sse, pcm, "the events carry the same audio");

    assert_eq!(
        seen["models"],
        json!(["cosyvoice"]),
        "only the pools this token may use"
    );
    assert_eq!(seen["model"], "cosyvoice");

    let mp3 = &seen["mp3"];
    assert_eq!(mp3["class"], "BadRequestError");
    assert_eq!(mp3["status"], 400);
    assert_eq!(mp3["code"], "unsupported_response_format");
    assert_eq!(mp3["param"], "response_format");
    assert_eq!(mp3["type"], "invalid_request_error");
    let message = mp3["body"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("\"wav\"") && message.contains("\"pcm\""),
        "{message}"
    );

    let voice = &seen["unknown_voice"];
    assert_eq!(voice["class"], "BadRequestError");
    assert_eq!(
        (voice["status"].clone(), voice["code"].clone()),
        (json!(400), json!("voice_not_found"))
    );
    assert_eq!(voice["param"], "voice");
    let message = voice["body"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("POST /v1/voices"), "{message}");

    let model = &seen["unknown_model"];
    assert_eq!(model["class"], "NotFoundError");
    assert_eq!(
        (model["status"].clone(), model["code"].clone()),
        (json!(404), json!("model_not_found"))
    );
    assert_eq!(model["param"], "model");

    // Three syntheses from the library plus /generate's hit: one backend call.
    let stats = sim.stats().await;
    assert_eq!(
        stats["requests"], 1,
        "everything after the first came from the cache: {stats}"
    );
}

#[tokio::test]
async fn the_openai_library_sees_a_rate_limit_as_rate_limit_error() {
    let sim = Sim::start(&args_for("generate_json", FAST));
    let gw = gateway(
        "generate_json",
        &sim,
        "  rate_limit:\n    per_ip: { capacity: 1, refill: 1, per: 1h }\n",
    );
    let dir = tempfile::tempdir().expect("dir");
    let seen = run_python(&gw, dir.path(), "ratelimit");
    let limited = &seen["limited"];
    assert_eq!(limited["class"], "RateLimitError");
    assert_eq!(limited["status"], 429);
    assert_eq!(limited["code"], "rate_limited");
    assert_eq!(limited["type"], "requests");
    let retry: u64 = limited["retry_after"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .expect("Retry-After");
    assert!(retry > 3500 && retry <= 3600, "{retry}");
    assert_eq!(
        sim.stats().await["requests"],
        1,
        "the refused request never reached the backend"
    );
}

#[tokio::test]
async fn errors_take_openai_shape_with_our_codes_and_params() {
    let sim = Sim::start(FAST);
    let gw = gateway("cosyvoice_fastapi", &sim, "");
    let t = Some(TOKEN);

    let (status, e) = openai_error(speech(&gw, None, &body(json!({}))).await).await;
    assert_eq!((status, e["code"].as_str()), (401, Some("missing_token")));
    assert_eq!(e["type"], "invalid_request_error");

    let cases = [
        (
            json!({"response_format": "flac"}),
            400,
            "unsupported_response_format",
            json!("response_format"),
        ),
        (
            json!({"stream_format": "webrtc"}),
            400,
            "unsupported_stream_format",
            json!("stream_format"),
        ),
        (json!({"voice": "nobody"}), 400, "voice_not_found", json!("voice")),
        (
            json!({"instructions": "Whisper."}),
            400,
            "instructions_need_voice",
            json!("instructions"),
        ),
        (json!({"model": "other"}), 404, "model_not_found", json!("model")),
        (json!({"model": "nope"}), 404, "model_not_found", json!("model")),
        (json!({"speed": 3.0}), 422, "speed_out_of_range", json!("speed")),
        // CosyVoice's FastAPI server has no speed control: refused as /generate refuses it.
        (
            json!({"speed": 1.5}),
            422,
            "unsupported_parameter",
            json!("speed"),
        ),
        (
            json!({"input": "x".repeat(201)}),
            422,
            "text_too_long",
            json!("input"),
        ),
        (
            json!({"input": "<speak>hi</speak>"}),
            400,
            "forbidden_characters",
            json!("input"),
        ),
        (json!({"temperature": 1}), 400, "unknown_field", Value::Null),
    ];
    for (extra, want_status, want_code, want_param) in cases {
        let (status, e) = openai_error(speech(&gw, t, &body(extra.clone())).await).await;
        assert_eq!(
            (status, e["code"].as_str()),
            (want_status, Some(want_code)),
            "{extra}: {e}"
        );
        assert_eq!(e["param"], want_param, "{extra}");
        assert_eq!(e["type"], "invalid_request_error", "{extra}");
        assert!(e["request_id"].is_string());
    }

    let resp = client()
        .post(gw.url("/v1/audio/speech"))
        .bearer_auth(TOKEN)
        .header("Content-Type", "text/plain")
        .body(body(json!({})).to_string())
        .send()
        .await
        .expect("answers");
    let (status, e) = openai_error(resp).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );

    let resp = client()
        .get(gw.url("/v1/audio/speech"))
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.headers()["allow"], "POST");
    let (status, e) = openai_error(resp).await;
    assert_eq!((status, e["code"].as_str()), (405, Some("method_not_allowed")));
    let resp = client()
        .delete(gw.url("/v1/models"))
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.headers()["allow"], "GET, HEAD");
    assert_eq!(resp.status(), 405);
    let (status, e) = openai_error(
        client()
            .get(gw.url("/v1/audio/voices"))
            .send()
            .await
            .expect("answers"),
    )
    .await;
    assert_eq!((status, e["code"].as_str()), (404, Some("not_found")));

    assert_eq!(
        sim.stats().await["requests"],
        0,
        "no refused request reached the backend"
    );

    // And a good one through the same route: sft on the FastAPI backend.
    let resp = speech(&gw, t, &body(json!({"response_format": "wav"}))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-cache"], "MISS");
    assert!(resp.headers().contains_key("x-request-id"));
    let (_, info) = complete_wav(resp).await;
    assert!(info.duration_secs() > 0.5);
    assert_eq!(sim.stats().await["requests"], 1);

    // A 503 too is in OpenAI's shape, with Retry-After.
    sim.kill();
    let other_text = body(json!({"input": "No backend is left."}));
    eventually(Duration::from_secs(10), "the dead backend is noticed", || async {
        speech(&gw, t, &other_text).await.status() == 503
    })
    .await;
    let resp = speech(&gw, t, &other_text).await;
    assert!(resp.headers().contains_key("retry-after"));
    let (status, e) = openai_error(resp).await;
    assert_eq!((status, e["code"].as_str()), (503, Some("no_backend_available")));
    assert_eq!(e["type"], "server_error");
}

#[tokio::test]
async fn models_lists_the_pools_each_token_may_use() {
    let sim = Sim::start(FAST);
    let gw = gateway("cosyvoice_fastapi", &sim, "");
    let list = |token: &'static str| {
        let url = gw.url("/v1/models");
        async move {
            let resp = client()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("answers");
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.expect("json")
        }
    };
    let all = list("sk-all").await;
    assert_eq!(all["object"], "list");
    let ids: Vec<&str> = all["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(ids, ["cosyvoice", "other"]);
    let model = &all["data"][0];
    assert_eq!(model["object"], "model");
    assert_eq!(model["owned_by"], "cosygate");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let created = model["created"].as_u64().expect("created");
    assert!(created <= now && created + 120 > now, "the gateway's start time");

    assert_eq!(list(TOKEN).await["data"].as_array().map(Vec::len), Some(1));
    let head = client()
        .head(gw.url("/v1/models"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("answers");
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-type"], "application/json");
    let one = client()
        .get(gw.url("/v1/models/other"))
        .bearer_auth("sk-all")
        .send()
        .await
        .expect("answers");
    assert_eq!(one.status(), 200);
    assert_eq!(one.json::<Value>().await.expect("json")["id"], "other");
    let hidden = client()
        .get(gw.url("/v1/models/other"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("answers");
    let (status, e) = openai_error(hidden).await;
    assert_eq!((status, e["code"].as_str()), (404, Some("model_not_found")));
    let (status, e) = openai_error(client().get(gw.url("/v1/models")).send().await.expect("answers")).await;
    assert_eq!((status, e["code"].as_str()), (401, Some("missing_token")));
}
