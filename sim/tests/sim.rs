//! The `cosyvoice-sim` binary over real HTTP: the FastAPI routes' wire format, FastAPI's
//! errors, the JSON `/generate`, deterministic audio, the `/__sim` hooks, every fault kind,
//! the overload modes and CosyVoice3's fast failure without `<|endofprompt|>`.

// The harness and the WAV answer check the gateway's tests use too (it starts this package's
// binary, `CARGO_BIN_EXE_cosyvoice-sim`).
#[allow(dead_code)]
#[path = "../../tests/common/sim.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../../tests/common/http.rs"]
mod http;

use base64::Engine;
use cosyvoice_sim::audio::{duration_secs, segments};
use harness::{test_wav, Sim};
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

const FAST: &[&str] = &["--rtf", "0.01", "--first-chunk-ms", "10"];
const MARK: &str = "You are a helpful assistant.<|endofprompt|>";

/// Three segments (60 + 60 + 30 words): 15 sentences of 10 words and 38 letters.
fn three_segments() -> String {
    "Ten words of text make one sentence of the test. ".repeat(15)
}

/// Bytes of 24 kHz PCM the sim streams for `text`: each segment's audio, in whole samples.
fn pcm_len(text: &str) -> usize {
    segments(text)
        .iter()
        .map(|s| (duration_secs(s, 1.0) * 24000.0).round() as usize * 2)
        .sum()
}

fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("client")
}

fn form(fields: &[(&str, &str)], prompt: Option<&[u8]>) -> Form {
    let mut form = Form::new();
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    if let Some(p) = prompt {
        form = form.part("prompt_wav", Part::bytes(p.to_vec()).file_name("prompt.wav"));
    }
    form
}

/// The fields of each FastAPI route for `text` (with the markers CosyVoice3 needs).
/// POSTs a multipart form; the answer (any status).
async fn post_form(c: &reqwest::Client, url: String, form: Form) -> reqwest::Response {
    c.post(url).multipart(form).send().await.expect("answer")
}

fn route_fields(route: &str, text: &str) -> Vec<(&'static str, String)> {
    match route {
        "/inference_sft" => vec![("tts_text", text.into()), ("spk_id", "中文女".into())],
        "/inference_zero_shot" => vec![
            ("tts_text", text.into()),
            ("prompt_text", format!("{MARK}Hi there.")),
        ],
        "/inference_cross_lingual" => vec![("tts_text", format!("{MARK}{text}"))],
        "/inference_instruct2" => vec![
            ("tts_text", text.into()),
            ("instruct_text", format!("Speak slowly.{}", "<|endofprompt|>")),
        ],
        other => panic!("no such route {other}"),
    }
}

const ROUTES: [&str; 4] = [
    "/inference_sft",
    "/inference_zero_shot",
    "/inference_cross_lingual",
    "/inference_instruct2",
];

/// Sends a FastAPI request and reads the whole PCM, checking the wire format. Returns (PCM,
/// number of body chunks received).
async fn fastapi(sim: &Sim, route: &str, text: &str, prompt: &[u8], get: bool) -> (Vec<u8>, usize) {
    let fields = route_fields(route, text);
    let refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let with_prompt = (route != "/inference_sft").then_some(prompt);
    let c = client(Duration::from_secs(10));
    let req = if get {
        c.get(sim.url(route))
    } else {
        c.post(sim.url(route))
    };
    let mut resp = req
        .multipart(form(&refs, with_prompt))
        .send()
        .await
        .expect("sim answers");
    assert_eq!(resp.status(), 200, "{route}");
    assert!(
        resp.headers().get("content-type").is_none(),
        "{route}: no Content-Type, as FastAPI's StreamingResponse"
    );
    assert_eq!(resp.headers()["transfer-encoding"], "chunked", "{route}");
    let mut pcm = Vec::new();
    let mut chunks = 0;
    while let Some(c) = resp.chunk().await.expect("complete body") {
        pcm.extend_from_slice(&c);
        chunks += 1;
    }
    assert_eq!(pcm.len() % 2, 0, "{route}: whole int16 samples");
    (pcm, chunks)
}

#[tokio::test]
async fn every_fastapi_route_streams_deterministic_pcm_that_grows_with_the_text() {
    let sim = Sim::start(FAST);
    let prompt = test_wav(1.0, 16000);
    let short = "Hello.";
    let long = three_segments();
    let long = long.as_str();
    for route in ROUTES {
        let (a, _) = fastapi(&sim, route, short, &prompt, false).await;
        let (b, chunks) = fastapi(&sim, route, long, &prompt, false).await;
        let (again, _) = fastapi(&sim, route, long, &prompt, true).await;
        assert_eq!(
            a.len(),
            16800,
            "{route}: 5 letters at 0.07 s, 24 kHz, 2 bytes a sample"
        );
        assert_eq!(segments(long).len(), 3);
        let expected = (15.0 * 38.0 * 0.07 * 24000.0_f64).round() as usize * 2;
        assert_eq!(
            (b.len(), pcm_len(long)),
            (expected, expected),
            "{route}: 0.07 s a letter"
        );
        assert!(
            chunks >= 3,
            "{route}: one chunk (or more reads) per segment, got {chunks}"
        );
        assert_eq!(b, again, "{route}: deterministic, GET like POST");
        assert!(b.iter().any(|&x| x != 0), "{route}: not silence");
    }
    let stats = sim.stats().await;
    assert_eq!(stats["requests"], 12);
    assert_eq!(stats["inflight"], 0);
    assert_eq!(stats["missing_endofprompt"], 0);
    // Another prompt is another voice.
    let (other, _) = fastapi(&sim, "/inference_zero_shot", long, &test_wav(1.5, 16000), false).await;
    let (first, _) = fastapi(&sim, "/inference_zero_shot", long, &prompt, false).await;
    assert_eq!(other.len(), first.len());
    assert_ne!(other, first);
}

#[tokio::test]
async fn first_chunk_and_total_follow_the_latency_model() {
    let sim = Sim::start(&["--rtf", "0.1", "--first-chunk-ms", "300"]);
    // Two segments of 60 one-letter words, 4.2 s of audio each: the first chunk once the
    // first segment is done (0.3 + 0.42 s), the end after the second (1.14 s).
    let text = "a b c d e f g h i j. ".repeat(12);
    assert_eq!(segments(&text).len(), 2);
    let fields = route_fields("/inference_sft", &text);
    let refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let start = Instant::now();
    let mut resp = client(Duration::from_secs(10))
        .post(sim.url("/inference_sft"))
        .multipart(form(&refs, None))
        .send()
        .await
        .expect("answer");
    let headers_at = start.elapsed();
    let first = resp.chunk().await.expect("chunk").expect("a first chunk");
    let first_at = start.elapsed();
    let mut total = first.len();
    while let Some(c) = resp.chunk().await.expect("complete body") {
        total += c.len();
    }
    let end_at = start.elapsed();
    assert_eq!(total, 2 * 4200 * 48);
    assert!(
        headers_at < Duration::from_millis(250),
        "headers at once, like Starlette: {headers_at:?}"
    );
    assert!(
        first_at >= Duration::from_millis(710) && first_at < Duration::from_millis(1000),
        "first chunk after start-up and the whole first segment, at {first_at:?}"
    );
    assert!(
        end_at >= Duration::from_millis(1130) && end_at < Duration::from_millis(2000),
        "end at {end_at:?}"
    );
}

#[tokio::test]
async fn fastapi_errors_look_like_fastapi() {
    let sim = Sim::start(FAST);
    let c = client(Duration::from_secs(5));
    // A missing field: 422 with FastAPI's detail list.
    let resp = post_form(&c, sim.url("/inference_sft"), form(&[("spk_id", "中文女")], None)).await;
    assert_eq!(resp.status(), 422);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["detail"][0]["type"], "missing");
    assert_eq!(v["detail"][0]["loc"], json!(["body", "tts_text"]));
    assert_eq!(v["detail"][0]["msg"], "Field required");
    // No body at all: every field missing.
    let resp = c
        .post(sim.url("/inference_zero_shot"))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 422);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["detail"].as_array().map(Vec::len), Some(3), "{v}");
    // prompt_wav sent as a plain field, not a file: FastAPI refuses it too.
    let resp = c
        .post(sim.url("/inference_cross_lingual"))
        .multipart(form(
            &[("tts_text", &format!("{MARK}Hi.")), ("prompt_wav", "not a file")],
            None,
        ))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 422);
    // A prompt that is not a WAV: load_wav raises before streaming, a plain 500.
    let fields = [("tts_text", "Hi."), ("prompt_text", "x<|endofprompt|>y")];
    let resp = post_form(
        &c,
        sim.url("/inference_zero_shot"),
        form(&fields, Some(b"not a wav at all")),
    )
    .await;
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.text().await.expect("text"), "Internal Server Error");
    // Unknown speaker: 200, then the stream is cut without audio.
    let resp = post_form(
        &c,
        sim.url("/inference_sft"),
        form(&[("tts_text", "Hi."), ("spk_id", "nobody")], None),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err(), "the body is cut");
    // Unknown path and wrong method, as FastAPI answers them.
    assert_eq!(
        c.get(sim.url("/nope")).send().await.expect("answer").status(),
        404
    );
    assert_eq!(
        c.delete(sim.url("/inference_sft"))
            .send()
            .await
            .expect("answer")
            .status(),
        405
    );
    assert_eq!(sim.stats().await["inflight"], 0);
}

#[tokio::test]
async fn generate_answers_a_complete_wav_matching_the_fastapi_audio() {
    let sim = Sim::start(FAST);
    let c = client(Duration::from_secs(10));
    let prompt = test_wav(1.0, 16000);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&prompt);
    let text = "Twenty characters!!!"; // 16 letters: 1.12 s at speed 1
    let post = |body: Value| {
        let c = c.clone();
        let url = sim.url("/generate");
        async move { c.post(url).json(&body).send().await.expect("answer") }
    };
    let resp = post(json!({"text": text, "prompt_audio": b64, "speed": 1.5, "seed": 3})).await;
    assert_eq!(resp.status(), 200);
    let (wav, info) = http::complete_wav(resp).await;
    assert_eq!(
        (info.sample_rate, info.channels, info.bits_per_sample),
        (24000, 1, 16)
    );
    assert!(
        (info.duration_secs() - 1.12 / 1.5).abs() < 0.001,
        "duration {}",
        info.duration_secs()
    );

    let same = post(json!({"text": text, "prompt_audio": b64, "speed": 1.5, "seed": 3}))
        .await
        .bytes()
        .await
        .expect("body");
    assert_eq!(wav, same, "deterministic");
    let seed4 = post(json!({"text": text, "prompt_audio": b64, "speed": 1.5, "seed": 4}))
        .await
        .bytes()
        .await
        .expect("body");
    assert_eq!(seed4.len(), wav.len());
    assert_ne!(seed4, wav, "another seed, another rendition");

    // Seed 0 and speed 1 give exactly what the FastAPI route streams for the same input.
    let plain = post(json!({"text": text, "mode": "cross_lingual", "prompt_audio": b64}))
        .await
        .bytes()
        .await
        .expect("body");
    let (pcm, _) = fastapi(&sim, "/inference_cross_lingual", text, &prompt, false).await;
    assert_eq!(&plain[44..], &pcm[..]);
    let sft = post(json!({"text": text, "mode": "sft", "spk_id": "中文女"}))
        .await
        .bytes()
        .await
        .expect("body");
    let (pcm, _) = fastapi(&sim, "/inference_sft", text, &prompt, false).await;
    assert_eq!(&sft[44..], &pcm[..]);

    let last = sim.last().await;
    assert_eq!(last["route"], "/inference_sft");
    let resp = post(json!({"text": "No marker needed here.", "mode": "instruct", "instruct_text": "Whisper.", "prompt_audio": b64})).await;
    assert_eq!(resp.status(), 200, "no <|endofprompt|> requirement on /generate");
    let last = sim.last().await;
    assert_eq!(last["route"], "/generate");
    assert_eq!(
        last["fields"],
        json!({"text": "No marker needed here.", "mode": "instruct", "instruct_text": "Whisper."})
    );
    assert_eq!(last["prompt_wav_sha256"], hex::encode(Sha256::digest(&prompt)));

    // Errors.
    let resp = c
        .post(sim.url("/generate"))
        .body("{not json")
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.expect("json error");
    assert!(v["error"]["code"].is_string());
    assert_eq!(
        post(json!({"text": "x", "prompt_audio": "!!!"})).await.status(),
        400
    );
    assert_eq!(
        post(json!({"text": "x", "prompt_audio": base64::engine::general_purpose::STANDARD.encode(b"nope")}))
            .await
            .status(),
        400
    );
    assert_eq!(
        post(json!({"text": "x"})).await.status(),
        400,
        "zero_shot needs prompt audio"
    );
    assert_eq!(
        post(json!({"text": "x", "mode": "sft", "spk_id": "nobody"}))
            .await
            .status(),
        400
    );
    assert_eq!(
        post(json!({"text": "x", "mode": "sft", "spk_id": "中文女", "speed": 3.0}))
            .await
            .status(),
        422
    );
}

#[tokio::test]
async fn last_reports_a_ten_megabyte_multipart_prompt_byte_exact() {
    let sim = Sim::start(FAST);
    let prompt = test_wav(5_000_000.0 / 16000.0, 16000); // 10 MB
    assert!(prompt.len() > 10_000_000);
    let fields = [("tts_text", "Big prompt."), ("prompt_text", "x<|endofprompt|>y")];
    let form = form(&fields, Some(&prompt));
    let resp = client(Duration::from_secs(30))
        .post(sim.url("/inference_zero_shot"))
        .multipart(form)
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.bytes().await.is_err(),
        "a prompt of 312 s (over 30 s) fails inside the stream"
    );
    let last = sim.last().await;
    assert_eq!(last["route"], "/inference_zero_shot");
    assert_eq!(last["method"], "POST");
    assert_eq!(
        last["fields"],
        json!({"tts_text": "Big prompt.", "prompt_text": "x<|endofprompt|>y"})
    );
    assert_eq!(last["prompt_wav_len"], prompt.len());
    assert_eq!(last["prompt_wav_sha256"], hex::encode(Sha256::digest(&prompt)));
    assert!(last["body_len"].as_u64().expect("body_len") > prompt.len() as u64);
}

#[tokio::test]
async fn each_fault_kind_fails_the_next_requests_its_way() {
    let sim = Sim::start(FAST);
    let sft = || {
        form(
            &[
                ("tts_text", "Fault line, long enough for two chunks."),
                ("spk_id", "中文女"),
            ],
            None,
        )
    };
    let c = client(Duration::from_secs(5));

    sim.fault("error500", 2).await;
    for _ in 0..2 {
        let resp = c
            .post(sim.url("/inference_sft"))
            .multipart(sft())
            .send()
            .await
            .expect("answer");
        assert_eq!(resp.status(), 500);
        assert!(resp.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain"));
        assert_eq!(resp.text().await.expect("text"), "Internal Server Error");
    }
    let resp = c
        .post(sim.url("/inference_sft"))
        .multipart(sft())
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 200, "the fault hit exactly 2 requests");
    resp.bytes().await.expect("complete");

    sim.fault("truncate", 1).await;
    let mut resp = c
        .post(sim.url("/inference_sft"))
        .multipart(sft())
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 200);
    let mut first = 0;
    let cut = loop {
        match resp.chunk().await {
            Ok(Some(c)) => first += c.len(),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert_eq!(first, 104_160, "the first segment: 31 letters, 2.17 s");
    assert!(cut, "then the stream is cut");

    sim.fault("truncate", 1).await;
    let body = json!({"text": "Fault line, long enough for two chunks.", "mode": "sft", "spk_id": "中文女"});
    let resp = c
        .post(sim.url("/generate"))
        .json(&body)
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.bytes().await.is_err(),
        "a WAV shorter than its Content-Length"
    );

    sim.fault("hang", 1).await;
    let short = client(Duration::from_millis(300));
    let err = short
        .post(sim.url("/inference_sft"))
        .multipart(sft())
        .send()
        .await
        .expect_err("no answer");
    assert!(err.is_timeout(), "{err}");
    sim.wait_stats(Duration::from_secs(5), "the hung request to be released", |s| {
        s["inflight"] == 0
    })
    .await;
    assert_eq!(sim.stats().await["max_inflight"], 1);

    sim.fault("crash", 1).await;
    assert!(
        c.post(sim.url("/inference_sft"))
            .multipart(sft())
            .send()
            .await
            .is_err(),
        "no answer"
    );
    let status = sim
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("the process exited");
    assert!(!status.success());
    assert!(!sim.is_running());
}

#[tokio::test]
async fn fault_hook_refuses_bad_json_and_reset_clears() {
    let sim = Sim::start(FAST);
    let c = client(Duration::from_secs(5));
    for bad in [r#"{"kind":"explode","count":1}"#, "nope", r#"{"count":1}"#] {
        let resp = c
            .post(sim.url("/__sim/fault"))
            .body(bad)
            .send()
            .await
            .expect("answer");
        assert_eq!(resp.status(), 400, "{bad}");
    }
    sim.fault("error500", 5).await;
    let resp = post_form(
        &c,
        sim.url("/inference_sft"),
        form(&[("tts_text", "a"), ("spk_id", "中文女")], None),
    )
    .await;
    assert_eq!(resp.status(), 500);
    sim.reset().await;
    assert_eq!(
        sim.stats().await,
        json!({"requests": 0, "inflight": 0, "max_inflight": 0, "missing_endofprompt": 0, "gradio_queue_full": 0})
    );
    assert_eq!(sim.last().await, Value::Null);
    let resp = post_form(
        &c,
        sim.url("/inference_sft"),
        form(&[("tts_text", "a"), ("spk_id", "中文女")], None),
    )
    .await;
    assert_eq!(resp.status(), 200, "the fault was cleared");
    // The probes a health checker uses: FastAPI has no /health, only with --json-health.
    let resp = c.get(sim.url("/health")).send().await.expect("answer");
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
        json!({"detail": "Not Found"})
    );
    let json_sim = Sim::start(&["--json-health"]);
    let resp = c.get(json_sim.url("/health")).send().await.expect("answer");
    assert_eq!(resp.json::<Value>().await.expect("json"), json!({"status": "ok"}));
    let resp = c.get(sim.url("/docs")).send().await.expect("answer");
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.expect("html").contains("swagger-ui"));
    let v: Value = c
        .get(sim.url("/openapi.json"))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert!(v["paths"]["/inference_zero_shot"]["post"].is_object());
}

/// Sends `n` concurrent sft requests; their statuses and durations.
async fn concurrent(sim: &Sim, n: usize, timeout: Duration) -> Vec<Result<(u16, Duration), String>> {
    let c = client(timeout);
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let c = c.clone();
            let url = sim.url("/inference_sft");
            tokio::spawn(async move {
                let start = Instant::now();
                let f = form(
                    &[("tts_text", &format!("Request {i}.")), ("spk_id", "中文女")],
                    None,
                );
                let resp = c.post(url).multipart(f).send().await.map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                resp.bytes().await.map_err(|e| e.to_string())?;
                Ok((status, start.elapsed()))
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn over_capacity_slow_stretches_everyone_and_counts_max_inflight() {
    // 0.5 s of audio, rtf 0: each request takes first_chunk = 200 ms alone.
    let sim = Sim::start(&["--slots", "1", "--rtf", "0", "--first-chunk-ms", "200"]);
    let alone = concurrent(&sim, 1, Duration::from_secs(5)).await;
    let (status, took) = alone[0].clone().expect("answer");
    assert_eq!(status, 200);
    assert!(took < Duration::from_millis(400), "alone: {took:?}");
    let three = concurrent(&sim, 3, Duration::from_secs(5)).await;
    for r in three {
        let (status, took) = r.expect("answer");
        assert_eq!(status, 200);
        assert!(
            took >= Duration::from_millis(450),
            "three on one slot run slower: {took:?}"
        );
    }
    let stats = sim
        .wait_stats(Duration::from_secs(2), "all released", |s| s["inflight"] == 0)
        .await;
    assert_eq!(stats["requests"], 4);
    assert_eq!(stats["max_inflight"], 3);
    assert!(sim.is_running());
}

#[tokio::test]
async fn over_capacity_oom_kills_the_process() {
    let sim = Sim::start(&[
        "--slots",
        "2",
        "--overload",
        "oom",
        "--rtf",
        "0",
        "--first-chunk-ms",
        "500",
    ]);
    let results = concurrent(&sim, 3, Duration::from_secs(5)).await;
    assert!(
        results.iter().any(|r| r.is_err()),
        "at least the request over capacity got no answer: {results:?}"
    );
    let status = sim
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("the process exited");
    assert!(!status.success());
    assert!(sim.log().contains("CUDA out of memory"), "{}", sim.log());
}

#[tokio::test]
async fn cosyvoice3_fails_fast_without_endofprompt_but_cosyvoice2_does_not() {
    let prompt = test_wav(0.5, 16000);
    let cases = [
        (
            "/inference_zero_shot",
            vec![("tts_text", "Hi."), ("prompt_text", "just the transcript")],
        ),
        ("/inference_cross_lingual", vec![("tts_text", "Hi.")]),
        (
            "/inference_instruct2",
            vec![("tts_text", "Hi."), ("instruct_text", "Speak slowly.")],
        ),
    ];
    let v3 = Sim::start(FAST);
    let v2 = Sim::start(&["--model", "cosyvoice2", "--rtf", "0.01", "--first-chunk-ms", "10"]);
    for (route, fields) in &cases {
        let resp = client(Duration::from_secs(5))
            .post(v2.url(route))
            .multipart(form(fields, Some(&prompt)))
            .send()
            .await
            .expect("answer");
        assert_eq!(resp.status(), 200, "cosyvoice2 {route}");
        assert_eq!(
            resp.bytes().await.expect("complete").len(),
            6720,
            "2 letters, 0.14 s"
        );

        let start = Instant::now();
        let resp = client(Duration::from_secs(5))
            .post(v3.url(route))
            .multipart(form(fields, Some(&prompt)))
            .send()
            .await
            .expect("answer");
        assert_eq!(
            resp.status(),
            200,
            "cosyvoice3 {route}: the failure is inside the stream"
        );
        let err = resp.bytes().await.expect_err("cosyvoice3 cuts the stream");
        assert!(!err.is_timeout(), "{route}: a cut, not a hang: {err}");
        assert!(start.elapsed() < Duration::from_secs(2), "{route}: fails fast");
    }
    // The check spans prompt_text + tts_text: the marker in either field will do.
    let resp = client(Duration::from_secs(5))
        .post(v3.url("/inference_zero_shot"))
        .multipart(form(
            &[
                ("tts_text", "<|endofprompt|>Hi."),
                ("prompt_text", "just the transcript"),
            ],
            Some(&prompt),
        ))
        .send()
        .await
        .expect("answer");
    assert_eq!(
        resp.bytes().await.expect("complete").len(),
        6720,
        "2 letters, 0.14 s"
    );
    let stats = v3
        .wait_stats(Duration::from_secs(5), "failed requests released", |s| {
            s["inflight"] == 0
        })
        .await;
    assert_eq!(stats["missing_endofprompt"], 3);
    assert_eq!(stats["requests"], 4);
    assert_eq!(v2.stats().await["missing_endofprompt"], 0);
}

#[tokio::test]
async fn restarts_on_the_same_port() {
    let sim = Sim::start(FAST);
    let addr = sim.addr();
    sim.kill();
    assert!(!sim.is_running());
    let again = Sim::start_on(addr, FAST);
    assert_eq!(again.addr(), addr);
    assert_eq!(again.stats().await["requests"], 0);
}

#[tokio::test]
async fn speakers_come_from_the_flag_and_cosyvoice3_ships_none() {
    let c = client(Duration::from_secs(10));
    let sft = |sim: &Sim, spk: &str| {
        c.post(sim.url("/inference_sft"))
            .multipart(form(&[("tts_text", "Hi."), ("spk_id", spk)], None))
            .send()
    };
    // CosyVoice3 without --speakers: every sft is 200 then cut, as the real server does.
    let v3 = Sim::start(&["--model", "cosyvoice3", "--rtf", "0.01", "--first-chunk-ms", "5"]);
    let resp = sft(&v3, "中文女").await.expect("answer");
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err(), "no preset speakers: the body is cut");
    // CosyVoice2 has its seven presets; --speakers replaces them.
    let v2 = Sim::start(&["--model", "cosyvoice2", "--rtf", "0.01", "--first-chunk-ms", "5"]);
    let resp = sft(&v2, "中文女").await.expect("answer");
    assert!(!resp.bytes().await.expect("complete").is_empty());
    let mine = Sim::start(&[
        "--speakers",
        "alice,bob",
        "--rtf",
        "0.01",
        "--first-chunk-ms",
        "5",
    ]);
    let resp = sft(&mine, "bob").await.expect("answer");
    assert!(!resp.bytes().await.expect("complete").is_empty());
    let resp = sft(&mine, "中文女").await.expect("answer");
    assert!(resp.bytes().await.is_err(), "not in --speakers: cut");
}

#[tokio::test]
async fn the_endless_fault_streams_audio_until_the_client_stops_reading() {
    let sim = Sim::start(FAST);
    sim.fault("endless", 1).await;
    let c = client(Duration::from_secs(10));
    let mut resp = post_form(
        &c,
        sim.url("/inference_sft"),
        form(&[("tts_text", "Hi."), ("spk_id", "中文女")], None),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut read = 0usize;
    while read < 50 << 20 {
        let chunk = resp.chunk().await.expect("no error").expect("never ends");
        read += chunk.len();
    }
    assert_eq!(sim.stats().await["inflight"], 1, "the runaway holds its GPU slot");
    drop(resp);
    sim.wait_stats(Duration::from_secs(5), "the slot to be freed", |s| {
        s["inflight"] == 0
    })
    .await;
}

#[tokio::test]
async fn upstream_server_behaviours() {
    let sim = Sim::start(&["--model", "cosyvoice3", "--rtf", "0.5", "--first-chunk-ms", "10"]);
    let c = client(Duration::from_secs(5));
    let prompt = test_wav(1.0, 16000);
    let cut = |resp: reqwest::Response| async move {
        assert_eq!(resp.status(), 200);
        resp.bytes().await.is_err()
    };
    // GET with an urlencoded body, as CosyVoice's client.py: the body is the form, not the
    // query string. CosyVoice3 ships no speaker: 200 then a cut.
    let resp = c
        .get(sim.url("/inference_sft"))
        .form(&[("tts_text", "Hi."), ("spk_id", "中文女")])
        .send()
        .await
        .expect("answer");
    assert!(cut(resp).await, "no preset speaker in CosyVoice3");
    assert_eq!(
        sim.last().await["fields"],
        json!({"tts_text": "Hi.", "spk_id": "中文女"})
    );
    let resp = c
        .get(sim.url("/inference_sft?tts_text=Hi.&spk_id=x"))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 422, "the query string is not the form");
    // /inference_instruct exists, and fails in the stream on CosyVoice3.
    let resp = c
        .get(sim.url("/inference_instruct"))
        .form(&[
            ("tts_text", "Hi."),
            ("spk_id", "a"),
            ("instruct_text", "Calm.<|endofprompt|>"),
        ])
        .send()
        .await
        .expect("answer");
    assert!(cut(resp).await, "inference_instruct on CosyVoice3");
    // Nothing speakable: 200, an empty and complete body.
    let resp = post_form(
        &c,
        sim.url("/inference_cross_lingual"),
        form(&[("tts_text", "<|endofprompt|> ... !?")], Some(&prompt)),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.expect("complete").is_empty());
    // A string part over 1 MiB: Starlette's 400 at once.
    let big = format!("{MARK}{}", "x".repeat(1024 * 1024));
    let resp = post_form(
        &c,
        sim.url("/inference_cross_lingual"),
        form(&[("tts_text", &big)], Some(&prompt)),
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
        json!({"detail": "Part exceeded maximum size of 1024KB."})
    );
    // A client that hangs up after the headers keeps the slot until its segment is done:
    // "Ten words ..." x15 starts with a 60-word segment of 15.96 s, 8 s of work at rtf 0.5.
    let text = format!("{MARK}{}", three_segments());
    let resp = post_form(
        &c,
        sim.url("/inference_cross_lingual"),
        form(&[("tts_text", &text)], Some(&prompt)),
    )
    .await;
    assert_eq!(resp.status(), 200);
    drop(resp);
    let gone = Instant::now();
    assert_eq!(
        sim.stats().await["inflight"],
        1,
        "still synthesizing the first segment"
    );
    sim.wait_stats(Duration::from_secs(15), "the slot freed", |s| s["inflight"] == 0)
        .await;
    assert!(
        gone.elapsed() > Duration::from_secs(5),
        "freed after the segment: {:?}",
        gone.elapsed()
    );

    // --upstream-bug tensor: every prompt route fails in the stream, sft still works.
    let buggy = Sim::start(&[
        "--upstream-bug",
        "tensor",
        "--model",
        "cosyvoice2",
        "--rtf",
        "0.01",
    ]);
    for route in [
        "/inference_zero_shot",
        "/inference_cross_lingual",
        "/inference_instruct2",
    ] {
        let fields = route_fields(route, "Hi.");
        let refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let resp = post_form(&c, buggy.url(route), form(&refs, Some(&prompt))).await;
        assert!(cut(resp).await, "{route} under --upstream-bug tensor");
    }
    let resp = post_form(
        &c,
        buggy.url("/inference_sft"),
        form(&[("tts_text", "Hi."), ("spk_id", "中文女")], None),
    )
    .await;
    assert_eq!(resp.bytes().await.expect("complete").len(), 6720);
}
