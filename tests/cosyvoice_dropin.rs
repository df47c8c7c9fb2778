//! CosyVoice's own FastAPI routes through the real gateway in front of the real sim: the forms
//! CosyVoice clients send (GET or POST, multipart or urlencoded, CosyVoice3's
//! `<|endofprompt|>` spelling), answered as raw int16 PCM equal to the audio `/generate` gives
//! for the equivalent request, from the same cache entry, streamed; our stand-in of CosyVoice's
//! `client.py` (tests/python/cosyvoice_client.py) working unchanged; and every refusal with
//! its documented status and no backend call.

mod common;

use base64::Engine;
use common::gateway::{pool_yaml, Gateway};
use common::python::{python, require_module, scripts_dir};
use common::sim::{test_wav, Sim};
use reqwest::multipart::{Form, Part};
use reqwest::{Method, Response};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

const FAST: &[&str] = &["--rtf", "0.01", "--first-chunk-ms", "5"];
/// CosyVoice3's default system prompt and marker, as its clients write them.
const MARK: &str = "You are a helpful assistant.<|endofprompt|>";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A gateway with a memory cache in front of one FastAPI sim (CosyVoice3, with speakers).
fn start() -> (Sim, Gateway) {
    let sim = Sim::start(FAST);
    let body = format!(
        "  cache:\n    memory: {{ max: 64MiB }}\n{}",
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], "")
    );
    (sim, Gateway::start(&body))
}

/// One drop-in request: its route, its text fields and whether it carries the prompt file.
struct Case {
    path: &'static str,
    fields: Vec<(&'static str, String)>,
    prompt: bool,
    /// The equivalent `/generate` body (without `prompt_audio`).
    generate: Value,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            path: "/inference_zero_shot",
            fields: vec![
                ("tts_text", "Hello from the zero shot route.".into()),
                ("prompt_text", format!("{MARK}This is the prompt.")),
            ],
            prompt: true,
            generate: json!({"mode": "zero_shot", "text": "Hello from the zero shot route.", "prompt_text": "This is the prompt."}),
        },
        Case {
            path: "/inference_cross_lingual",
            fields: vec![("tts_text", format!("{MARK}Bonjour, le monde."))],
            prompt: true,
            generate: json!({"mode": "cross_lingual", "text": "Bonjour, le monde."}),
        },
        Case {
            path: "/inference_instruct2",
            fields: vec![
                ("tts_text", "Read this calmly.".into()),
                (
                    "instruct_text",
                    "You are a helpful assistant. Speak slowly.<|endofprompt|>".into(),
                ),
            ],
            prompt: true,
            generate: json!({"mode": "instruct", "text": "Read this calmly.", "instruct_text": "Speak slowly."}),
        },
        Case {
            path: "/inference_sft",
            fields: vec![
                ("tts_text", format!("{MARK}A preset speaker talks.")),
                ("spk_id", "中文女".into()),
            ],
            prompt: false,
            generate: json!({"mode": "sft", "text": "A preset speaker talks.", "spk_id": "中文女"}),
        },
    ]
}

/// Sends a case as CosyVoice's clients do: the fields in the body, multipart (always, with a
/// prompt file) or urlencoded.
async fn send(gw: &Gateway, method: Method, case: &Case, multipart: bool) -> Response {
    let req = client().request(method, gw.url(case.path));
    let req = if multipart {
        let mut form = Form::new();
        for (name, value) in &case.fields {
            form = form.text(*name, value.clone());
        }
        if case.prompt {
            let part = Part::bytes(test_wav(1.0, 16000))
                .file_name("prompt_wav")
                .mime_str("application/octet-stream")
                .expect("mime");
            form = form.part("prompt_wav", part);
        }
        req.multipart(form)
    } else {
        req.form(&case.fields)
    };
    req.send().await.expect("gateway answers")
}

/// A 200 raw-PCM answer's cache header and bytes.
async fn pcm(resp: Response, what: &str) -> (String, bytes::Bytes) {
    let status = resp.status();
    let cache = resp
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap_or("").to_string());
    let body = resp.bytes().await.expect("body");
    assert_eq!(status, 200, "{what}: {}", String::from_utf8_lossy(&body));
    assert!(
        !body.is_empty() && body.len() % 2 == 0,
        "{what}: whole int16 samples"
    );
    (cache.unwrap_or_default(), body)
}

/// The data chunk of the WAV `/generate` answers for `generate` (+ the prompt), and its X-Cache.
async fn generate_pcm(gw: &Gateway, generate: &Value, prompt: bool) -> (String, Vec<u8>) {
    let mut body = generate.clone();
    if prompt {
        body["prompt_audio"] = json!(base64::engine::general_purpose::STANDARD.encode(test_wav(1.0, 16000)));
    }
    let resp = client()
        .post(gw.url("/generate"))
        .json(&body)
        .send()
        .await
        .expect("gateway answers");
    let cache = resp.headers()["x-cache"].to_str().expect("ascii").to_string();
    let (wav, info) = common::http::complete_wav(resp).await;
    assert_eq!((info.sample_rate, info.channels), (24000, 1));
    let range = cosygate_wav::data_range(&wav).expect("a data chunk");
    (cache, wav[range].to_vec())
}

async fn requests(sim: &Sim) -> u64 {
    sim.stats().await["requests"].as_u64().expect("requests")
}

#[tokio::test]
async fn each_route_answers_the_pcm_of_the_equivalent_generate_request() {
    let (sim, gw) = start();
    for case in cases() {
        let what = case.path;
        let before = requests(&sim).await;
        // CosyVoice's client: GET; a prompt makes the body multipart, sft goes urlencoded.
        let resp = send(&gw, Method::GET, &case, case.prompt).await;
        assert!(resp.headers().get("x-request-id").is_some(), "{what}");
        // Streamed as the backend produces it, as CosyVoice's server does.
        assert_eq!(resp.headers()["transfer-encoding"], "chunked", "{what}");
        assert!(resp.headers().get("content-length").is_none(), "{what}");
        let (cache, first) = pcm(resp, what).await;
        assert_eq!(cache, "MISS", "{what}");
        assert_eq!(requests(&sim).await, before + 1, "{what}: one backend call");
        // The backend got the texts as CosyVoice3 needs them, the marker once.
        let last = sim.last().await;
        assert_eq!(last["route"], what, "{last}");
        let seen = last["fields"].to_string();
        assert_eq!(seen.matches("<|endofprompt|>").count(), 1, "{what}: {seen}");

        // The equivalent /generate request is the same cache entry, with the same samples.
        let (cache, wav_pcm) = generate_pcm(&gw, &case.generate, case.prompt).await;
        assert_eq!(cache, "HIT", "{what}: /generate shares the entry");
        assert_eq!(wav_pcm, first.to_vec(), "{what}: PCM equals the WAV's data chunk");

        // Again, with the other method and (sft) the other encodings: a HIT, same bytes.
        let mut repeats = vec![(Method::POST, true)];
        if !case.prompt {
            repeats.extend([(Method::POST, false), (Method::GET, true)]);
        }
        for (method, multipart) in repeats {
            let how = format!("{what} {method} multipart={multipart}");
            let (cache, again) = pcm(send(&gw, method, &case, multipart).await, &how).await;
            assert_eq!(cache, "HIT", "{how}");
            assert_eq!(again, first, "{how}: identical bytes");
        }
        assert_eq!(requests(&sim).await, before + 1, "{what}: still one backend call");
    }
}

#[tokio::test]
async fn cosyvoice_client_works_unchanged() {
    require_module("requests");
    let (sim, gw) = start();
    let dir = tempfile::tempdir().expect("temp dir");
    let prompt = dir.path().join("prompt.wav");
    std::fs::write(&prompt, test_wav(1.0, 16000)).expect("prompt file");
    let port = gw.addr.port().to_string();
    for (mode, case) in ["zero_shot", "cross_lingual", "instruct2", "sft"]
        .into_iter()
        .zip(cases())
    {
        let out = dir.path().join(format!("{mode}.wav"));
        let mut cmd = Command::new(python());
        cmd.arg(scripts_dir().join("cosyvoice_client.py"))
            .args(["--host", "127.0.0.1", "--port", &port, "--mode", mode])
            .arg("--prompt_wav")
            .arg(&prompt)
            .arg("--tts_wav")
            .arg(&out);
        for (name, value) in &case.fields {
            cmd.arg(format!("--{name}")).arg(value);
        }
        let run = cmd.output().expect("run the client");
        assert!(
            run.status.success(),
            "{mode}: {}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        let written = std::fs::read(&out).expect("the client's WAV");
        let range = cosygate_wav::data_range(&written).expect("data chunk");
        let (cache, expected) = generate_pcm(&gw, &case.generate, case.prompt).await;
        assert_eq!(cache, "HIT", "{mode}: the client's request filled the cache");
        assert_eq!(
            &written[range],
            &expected[..],
            "{mode}: the client got the same samples"
        );
    }
    assert_eq!(requests(&sim).await, 4, "one backend call per mode");
}

/// The status and error code of a refusal.
async fn refusal(resp: Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.expect("JSON error body");
    assert!(
        v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    (
        status,
        v["error"]["code"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn bad_requests_get_real_statuses_and_reach_no_backend() {
    let (sim, gw) = start();
    let c = client();
    let wav_part = |bytes: Vec<u8>| Part::bytes(bytes).file_name("prompt_wav");
    let cross = |text: &str, wav: Vec<u8>| {
        Form::new()
            .text("tts_text", text.to_string())
            .part("prompt_wav", wav_part(wav))
    };
    let url = gw.url("/inference_cross_lingual");
    let checks: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            c.post(&url)
                .multipart(Form::new().part("prompt_wav", wav_part(test_wav(1.0, 16000)))),
            400,
            "missing_field",
        ),
        (
            c.post(&url)
                .multipart(cross("Hello.", b"RIFF, but not a WAV".to_vec())),
            400,
            "invalid_prompt_audio",
        ),
        (
            c.post(&url)
                .multipart(cross(&"word ".repeat(60), test_wav(1.0, 16000))),
            422,
            "text_too_long",
        ),
        (
            c.post(&url)
                .multipart(cross("<speak>Hi</speak>", test_wav(1.0, 16000))),
            400,
            "forbidden_characters",
        ),
        (
            c.post(&url).json(&json!({"tts_text": "Hello."})),
            415,
            "unsupported_media_type",
        ),
        (
            c.get(gw.url("/inference_sft?tts_text=Hi&spk_id=A")),
            415,
            "unsupported_media_type",
        ),
        (
            c.get(gw.url("/inference_sft")).form(&[("tts_text", "Hi.")]),
            400,
            "missing_field",
        ),
        (
            c.get(gw.url("/inference_sft"))
                .form(&[("tts_text", "Hi."), ("spk_id", "a"), ("spk_id", "b")]),
            400,
            "duplicate_field",
        ),
        (
            c.get(gw.url("/inference_sft"))
                .form(&[("tts_text", "Hi."), ("spk_id", "nobody")]),
            422,
            "unknown_speaker",
        ),
        (
            c.get(gw.url("/inference_instruct")).form(&[
                ("tts_text", "Hi."),
                ("spk_id", "A"),
                ("instruct_text", "x"),
            ]),
            400,
            "unsupported_route",
        ),
        (c.post(gw.url("/inference_vc")), 404, "not_found"),
        (
            c.put(gw.url("/inference_sft")).form(&[("tts_text", "Hi.")]),
            405,
            "method_not_allowed",
        ),
    ];
    for (i, (req, status, code)) in checks.into_iter().enumerate() {
        let resp = req.send().await.expect("gateway answers");
        if status == 405 {
            assert_eq!(resp.headers()["allow"], "GET, POST");
        }
        assert_eq!(refusal(resp).await, (status, code.to_string()), "check {i}");
    }
    assert_eq!(requests(&sim).await, 0, "no refused request reached the backend");
}

#[tokio::test]
async fn a_stream_the_backend_cuts_is_visibly_cut_and_never_cached() {
    use futures_util::StreamExt;
    let (sim, gw) = start();
    // CosyVoice fails inside the stream (200, then the PCM stops). Once audio went out, the
    // gateway cannot continue it from another take: it ends the body unterminated.
    sim.fault("truncate", 1).await;
    let case = &cases()[1];
    let resp = send(&gw, Method::POST, case, true).await;
    assert_eq!(resp.status(), 200, "the head went out with the first audio");
    let mut body = resp.bytes_stream();
    let mut broken = false;
    while let Some(chunk) = body.next().await {
        if chunk.is_err() {
            broken = true;
            break;
        }
    }
    assert!(
        broken,
        "the client can tell the answer was cut (unterminated chunked body)"
    );
    // Nothing partial was stored: the next request synthesizes again, whole.
    let (cache, whole) = pcm(send(&gw, Method::POST, case, true).await, "after a cut").await;
    assert_eq!(cache, "MISS");
    assert_eq!(requests(&sim).await, 2, "the cut synthesis and the new one");
    let (_, expected) = generate_pcm(&gw, &case.generate, true).await;
    assert_eq!(whole.to_vec(), expected, "the whole audio");
}

#[tokio::test]
async fn a_prompt_over_a_mebibyte_reaches_the_backend_byte_exact() {
    use sha2::{Digest, Sha256};
    let (sim, gw) = start();
    // 20 s at 48 kHz: a 1.9 MB body, read off the worker threads.
    let wav = test_wav(20.0, 48000);
    let form = Form::new()
        .text("tts_text", format!("{MARK}A long prompt."))
        .part("prompt_wav", Part::bytes(wav.clone()).file_name("prompt_wav"));
    let resp = client()
        .post(gw.url("/inference_cross_lingual"))
        .multipart(form)
        .send()
        .await
        .expect("gateway answers");
    pcm(resp, "large prompt").await;
    let last = sim.last().await;
    assert_eq!(
        last["prompt_wav_sha256"],
        hex::encode(Sha256::digest(&wav)),
        "{last}"
    );
}

#[tokio::test]
async fn admission_is_that_of_generate() {
    use sha2::{Digest, Sha256};
    let sim = Sim::start(FAST);
    let yaml = format!(
        "  auth:\n    allow_anonymous: false\n    tokens:\n      - {{ name: a, sha256: \"{}\", pools: [cosyvoice] }}\n  rate_limit:\n    per_ip: {{ capacity: 2, refill: 1, per: 1h }}\n{}",
        hex::encode(Sha256::digest(b"token-a")),
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], "")
    );
    let gw = Gateway::start(&yaml);
    let sft = |token: Option<&str>, pool: Option<&str>| {
        let mut req = client()
            .get(gw.url("/inference_sft"))
            .form(&[("tts_text", "Hello."), ("spk_id", "中文女")]);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(p) = pool {
            req = req.header("X-Cosygate-Pool", p);
        }
        req.send()
    };
    let r = sft(None, None).await.expect("answer");
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(refusal(r).await, (401, "missing_token".to_string()));
    let r = sft(Some("nope"), None).await.expect("answer");
    assert_eq!(refusal(r).await, (401, "invalid_token".to_string()));
    let r = sft(Some("token-a"), Some("elsewhere")).await.expect("answer");
    assert_eq!(refusal(r).await, (404, "unknown_pool".to_string()));
    // Refusals above took no token. The bucket of 2: two answers (no cache here, so two
    // backend calls), then 429 with Retry-After.
    for _ in 0..2 {
        let r = sft(Some("token-a"), None).await.expect("answer");
        assert!(
            r.headers().get("ratelimit").is_some(),
            "budget headers on the answer"
        );
        pcm(r, "within the budget").await;
    }
    let r = sft(Some("token-a"), None).await.expect("answer");
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(refusal(r).await, (429, "rate_limited".to_string()));
    assert_eq!(
        requests(&sim).await,
        2,
        "refused requests never reach the backend"
    );
}
