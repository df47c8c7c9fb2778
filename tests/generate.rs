//! End to end through the real binaries: client → cosygate → cosyvoice-sim, for both backend
//! protocols and every mode, bodies of every size over HTTP/1.1 and HTTP/2, and each backend
//! fault ending as a clear JSON error.

mod common;

use base64::Engine;
use common::gateway::{pool_yaml, Gateway};
use common::sim::{args_for, test_wav, Sim};
use cosygate::api::wav::parse_wav;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;

const FAST: &[&str] = &["--rtf", "0.01", "--first-chunk-ms", "5"];

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

fn h2_client() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("h2 client")
}

async fn post(client: &reqwest::Client, gw: &Gateway, body: Vec<u8>) -> reqwest::Response {
    client
        .post(gw.url("/generate"))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("gateway answers")
}

async fn error_code(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.expect("JSON error body");
    assert!(
        v["error"]["request_id"].as_str().is_some_and(|s| s.len() >= 32),
        "request_id in {v}"
    );
    assert!(
        v["error"]["message"].as_str().is_some_and(|s| !s.is_empty()),
        "message in {v}"
    );
    (
        status,
        v["error"]["code"].as_str().unwrap_or_default().to_string(),
    )
}

/// The PCM the sim produces for a multipart request sent to it directly.
async fn direct_fastapi(sim: &Sim, route: &str, fields: &[(&str, &str)], prompt: Option<&[u8]>) -> Vec<u8> {
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    if let Some(p) = prompt {
        form = form.part(
            "prompt_wav",
            reqwest::multipart::Part::bytes(p.to_vec()).file_name("p.wav"),
        );
    }
    let resp = client()
        .post(sim.url(route))
        .multipart(form)
        .send()
        .await
        .expect("sim answers");
    assert_eq!(resp.status(), 200);
    resp.bytes().await.expect("pcm").to_vec()
}

#[tokio::test]
async fn fastapi_round_trip_for_every_mode_gives_the_backends_exact_audio() {
    let sim = Sim::start(FAST);
    let gw = Gateway::start(&pool_yaml("cosyvoice_fastapi", &[sim.addr()], ""));
    let prompt = test_wav(1.0, 16000);
    let marker = "You are a helpful assistant.<|endofprompt|>";
    let cases = [
        (
            json!({"text": "Hello there.", "prompt_audio": b64(&prompt), "prompt_text": "Hi."}),
            "/inference_zero_shot",
            vec![
                ("tts_text", "Hello there.".to_string()),
                ("prompt_text", format!("{marker}Hi.")),
            ],
        ),
        (
            json!({"text": "Bonjour.", "mode": "cross_lingual", "prompt_audio": b64(&prompt)}),
            "/inference_cross_lingual",
            vec![("tts_text", format!("{marker}Bonjour."))],
        ),
        (
            json!({"text": "Slowly now.", "mode": "instruct", "prompt_audio": b64(&prompt), "instruct_text": "Speak slowly."}),
            "/inference_instruct2",
            vec![
                ("tts_text", "Slowly now.".to_string()),
                (
                    "instruct_text",
                    "You are a helpful assistant. Speak slowly.<|endofprompt|>".to_string(),
                ),
            ],
        ),
        (
            json!({"text": "Preset voice.", "mode": "sft", "spk_id": "中文女"}),
            "/inference_sft",
            vec![
                // No prompt text in sft: the marker goes in front of the text.
                ("tts_text", format!("{marker}Preset voice.")),
                ("spk_id", "中文女".to_string()),
            ],
        ),
    ];
    for (body, route, fields) in cases {
        let resp = post(&client(), &gw, serde_json::to_vec(&body).expect("json")).await;
        assert_eq!(resp.status(), 200, "{route}");
        assert_eq!(resp.headers()["x-cache"], "BYPASS");
        assert!(resp.headers()["x-request-id"].len() >= 32);
        let (wav, info) = common::http::complete_wav(resp).await;
        assert_eq!(
            (info.sample_rate, info.channels, info.bits_per_sample),
            (24000, 1, 16)
        );

        let last = sim.last().await;
        assert_eq!(last["route"], route);
        for (name, value) in &fields {
            assert_eq!(last["fields"][name], *value, "{route} field {name}");
        }
        let field_refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let has_prompt = route != "/inference_sft";
        if has_prompt {
            assert_eq!(last["prompt_wav_sha256"], hex::encode(Sha256::digest(&prompt)));
        }
        let pcm = direct_fastapi(&sim, route, &field_refs, has_prompt.then_some(&prompt[..])).await;
        assert_eq!(
            &wav[44..],
            &pcm[..],
            "{route}: the WAV carries exactly the backend's PCM"
        );
    }
}

#[tokio::test]
async fn generate_json_gets_the_validated_request_and_its_wav_is_checked() {
    let sim = Sim::start(&args_for("generate_json", FAST));
    let gw = Gateway::start(&pool_yaml("generate_json", &[sim.addr()], ""));
    let body = serde_json::to_vec(&json!({"text": "Same bytes, please.", "prompt_audio": b64(&test_wav(0.5, 16000)), "prompt_text": "Hi.", "seed": 7, "speed": 1.25})).expect("json");
    let resp = post(&client(), &gw, body.clone()).await;
    assert_eq!(resp.status(), 200);
    let via_gateway = resp.bytes().await.expect("body");
    let direct = client()
        .post(sim.url("/generate"))
        .header("Content-Type", "application/json")
        .body(body.clone())
        .send()
        .await
        .expect("sim");
    assert_eq!(direct.status(), 200);
    assert_eq!(via_gateway, direct.bytes().await.expect("body"));
    parse_wav(&via_gateway).expect("valid wav");
}

/// A JSON body of exactly `size` bytes whose prompt audio is as large as fits. The prompt is
/// sampled at 192 kHz so that even 10 MB stay under the model's 30 s.
fn body_of_size(size: usize) -> (Vec<u8>, Vec<u8>) {
    const RATE: u32 = 192_000;
    let frame = |wav: &[u8]| {
        json!({"text": "Size check.", "prompt_audio": b64(wav), "prompt_text": "Size."})
            .to_string()
            .into_bytes()
    };
    let overhead = frame(&test_wav(0.0, RATE)).len();
    let room = size.saturating_sub(overhead) / 4 * 3; // base64 expands 3 bytes to 4
    let samples = room.saturating_sub(44) / 2;
    let wav = test_wav(samples as f64 / f64::from(RATE), RATE);
    let mut body = frame(&wav);
    assert!(body.len() <= size, "{} > {size}", body.len());
    body.resize(size, b' '); // JSON allows trailing whitespace
    (body, wav)
}

#[tokio::test]
async fn bodies_of_every_size_reach_the_backend_intact_over_http1_and_http2() {
    let sim = Sim::start(&args_for("generate_json", FAST));
    let limits = "  limits: { max_body: 12MiB, max_prompt_seconds: 600 }\n";
    let json_gw = Gateway::start(&format!(
        "{limits}{}",
        pool_yaml("generate_json", &[sim.addr()], "")
    ));
    let form_gw = Gateway::start(&format!(
        "{limits}{}",
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], "")
    ));
    for size in [1024, 65535, 65537, 2_000_000, 10_000_000] {
        let (body, wav) = body_of_size(size);
        for (proto, c) in [("http/1.1", client()), ("h2c", h2_client())] {
            let resp = post(&c, &json_gw, body.clone()).await;
            assert_eq!(resp.status(), 200, "generate_json {size} B over {proto}");
            let last = sim.last().await;
            // The gateway read every byte (or the JSON would not parse) and forwarded the
            // validated request, whose prompt must arrive byte-exact.
            assert_eq!(
                last["prompt_wav_len"],
                wav.len(),
                "generate_json {size} B over {proto}"
            );
            assert_eq!(last["prompt_wav_sha256"], hex::encode(Sha256::digest(&wav)));

            let resp = post(&c, &form_gw, body.clone()).await;
            assert_eq!(resp.status(), 200, "cosyvoice_fastapi {size} B over {proto}");
            parse_wav(&resp.bytes().await.expect("body")).expect("complete wav");
            let last = sim.last().await;
            assert_eq!(
                last["prompt_wav_len"],
                wav.len(),
                "cosyvoice_fastapi {size} B over {proto}"
            );
            assert_eq!(last["prompt_wav_sha256"], hex::encode(Sha256::digest(&wav)));
        }
    }
}

#[tokio::test]
async fn every_backend_fault_ends_as_a_json_error_never_as_bad_audio() {
    let body =
        serde_json::to_vec(&json!({"text": "Fault line.", "mode": "sft", "spk_id": "中文女"})).expect("json");
    for protocol in ["cosyvoice_fastapi", "generate_json"] {
        let sim = Sim::start(&args_for(protocol, FAST));
        let gw = Gateway::start(&pool_yaml(
            protocol,
            &[sim.addr()],
            "      timeout: 1s\n      retry: { attempts: 0 }\n      circuit_breaker: { failures: 100 }\n",
        ));
        for (fault, status, code) in [
            ("error500", 502, "backend_failed"),
            ("truncate", 502, "backend_failed"),
            ("hang", 504, "backend_timeout"),
            ("crash", 502, "backend_failed"),
        ] {
            sim.fault(fault, 1).await;
            let resp = post(&client(), &gw, body.clone()).await;
            assert_eq!(
                error_code(resp).await,
                (status, code.to_string()),
                "{protocol} {fault}"
            );
        }
        assert!(
            sim.wait_exit(Duration::from_secs(5)).await.is_some(),
            "the crash fault ended the sim"
        );
    }
}

#[tokio::test]
async fn a_backend_down_by_health_check_gets_no_traffic_until_it_recovers() {
    let a = Sim::start(FAST);
    let b = Sim::start(FAST);
    let a_addr = a.addr();
    let gw = Gateway::start(&pool_yaml("cosyvoice_fastapi", &[a_addr, b.addr()], ""));
    let body = serde_json::to_vec(&json!({"text": "Round robin.", "mode": "sft", "spk_id": "中文女"}))
        .expect("json");
    let healthy = |n: u64| {
        let url = gw.url("/health");
        move || {
            let url = url.clone();
            async move {
                let Ok(resp) = client().get(&url).send().await else {
                    return false;
                };
                let v: Value = resp.json().await.unwrap_or_default();
                v["backends_healthy"] == n
            }
        }
    };
    common::gateway::eventually(Duration::from_secs(10), "both backends healthy", healthy(2)).await;
    drop(a);
    common::gateway::eventually(Duration::from_secs(10), "one backend marked down", healthy(1)).await;
    for _ in 0..6 {
        assert_eq!(post(&client(), &gw, body.clone()).await.status(), 200);
    }
    assert_eq!(
        b.stats().await["requests"],
        6,
        "all traffic went to the healthy backend"
    );

    let a = Sim::start_on(a_addr, FAST);
    common::gateway::eventually(
        Duration::from_secs(10),
        "the backend is healthy again",
        healthy(2),
    )
    .await;
    for _ in 0..6 {
        assert_eq!(post(&client(), &gw, body.clone()).await.status(), 200);
    }
    let back = a.stats().await["requests"].as_u64().unwrap_or(0);
    assert!(
        (2..=4).contains(&back),
        "the recovered backend gets its share again ({back} of 6)"
    );
}
