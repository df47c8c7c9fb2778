//! The simulator's FastAPI mode against a stand-in of CosyVoice's `server.py` written in
//! FastAPI itself (`tests/python/fastapi_standin.py`, pinned fastapi/starlette/uvicorn): the
//! same requests to both, compared as a client sees them (status, Content-Type present or
//! not, chunked framing, a complete or cut body, the JSON of 4xx answers).

mod common;

use common::gateway::free_port;
use common::python::{python, require_module, scripts_dir};
use common::sim::{test_wav, Sim};
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MARK: &str = "You are a helpful assistant.<|endofprompt|>";

/// The stand-in server, killed on drop.
struct StandIn {
    child: Child,
    base: String,
}

impl StandIn {
    async fn start(extra: &[&str]) -> StandIn {
        for module in ["fastapi", "uvicorn", "multipart"] {
            require_module(module);
        }
        let port = free_port();
        let mut child = Command::new(python())
            .arg(scripts_dir().join("fastapi_standin.py"))
            .args(["--port", &port.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the FastAPI stand-in");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the FastAPI stand-in exited at start: {status} (see its stderr above)");
            }
            let ready = client
                .get(format!("{base}/docs"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the FastAPI stand-in did not answer /docs within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        StandIn { child, base }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a client sees of one answer.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    content_type: Option<String>,
    chunked: bool,
    body: Body,
}

#[derive(Debug, PartialEq)]
enum Body {
    /// A complete body: empty or not (the PCM itself is each side's own fake audio).
    Complete { empty: bool },
    /// The connection ended before the body was complete (no terminating chunk).
    Cut,
    /// A JSON answer (4xx).
    Json(Value),
    /// Any other complete text (500s, HTML).
    Text(String),
}

/// One request, built the same way for both servers.
#[derive(Clone)]
enum Req {
    /// GET or POST with an urlencoded body (CosyVoice's client.py sends GET so).
    Urlencoded(bool, &'static str, Vec<(&'static str, String)>),
    /// POST multipart: text fields and, optionally, the prompt file.
    Multipart(&'static str, Vec<(&'static str, String)>, Option<Vec<u8>>),
    /// A bare GET.
    Get(&'static str),
}

/// What a client sees; `Err` when the request could not even be sent (connection reset).
async fn see(client: &reqwest::Client, base: &str, req: Req) -> Result<Seen, reqwest::Error> {
    let builder = match req {
        Req::Urlencoded(get, path, fields) => {
            let url = format!("{base}{path}");
            let b = if get { client.get(url) } else { client.post(url) };
            b.form(&fields)
        }
        Req::Multipart(path, fields, prompt) => {
            let mut form = Form::new();
            for (k, v) in fields {
                form = form.text(k, v);
            }
            if let Some(p) = prompt {
                form = form.part("prompt_wav", Part::bytes(p).file_name("prompt.wav"));
            }
            client.post(format!("{base}{path}")).multipart(form)
        }
        Req::Get(path) => client.get(format!("{base}{path}")),
    };
    let mut resp = builder.send().await?;
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").map(|v| {
        v.to_str()
            .unwrap_or("?")
            .split(';')
            .next()
            .unwrap_or("")
            .to_string()
    });
    let chunked = resp
        .headers()
        .get("transfer-encoding")
        .is_some_and(|v| v == "chunked");
    let mut bytes = Vec::new();
    let complete = loop {
        match resp.chunk().await {
            Ok(Some(c)) => bytes.extend_from_slice(&c),
            Ok(None) => break true,
            Err(e) => {
                assert!(!e.is_timeout(), "a hang, not a cut: {e}");
                break false;
            }
        }
    };
    let body = if !complete {
        Body::Cut
    } else if content_type.as_deref() == Some("application/json") {
        Body::Json(serde_json::from_slice(&bytes).expect("JSON body"))
    } else if content_type.is_some() && status != 200 {
        Body::Text(String::from_utf8_lossy(&bytes).into_owned())
    } else {
        Body::Complete {
            empty: bytes.is_empty(),
        }
    };
    Ok(Seen {
        status,
        content_type,
        chunked,
        body,
    })
}

fn fields(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

/// Sends every case to both servers and compares; the expected client view is checked too,
/// so that both agreeing on something wrong still fails.
async fn compare(sim: &Sim, standin: &StandIn, cases: Vec<(&str, Req, Seen)>) {
    // A fresh connection per request: uvicorn closes one after answering a request whose body
    // it did not read to the end (the 400 for an oversized part), and a pooled connection
    // would carry that into the next case.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let mut mismatches = Vec::new();
    for (name, req, expected) in cases {
        let from_sim = see(&client, &sim.url(""), req.clone())
            .await
            .unwrap_or_else(|e| panic!("{name}: the sim did not answer: {e}"));
        // uvicorn closes a connection whose request body it did not read to the end (the
        // 400 for an oversized part): a client still sending may get a reset instead of the
        // answer. A few tries show what it answers when the client reads it.
        let mut tries = 0;
        let from_standin = loop {
            tries += 1;
            match see(&client, &standin.base, req.clone()).await {
                Ok(seen) => break seen,
                Err(e) if tries < 5 => eprintln!("{name}: stand-in try {tries}: {e}"),
                Err(e) => panic!("{name}: the stand-in did not answer in {tries} tries: {e}"),
            }
        };
        if from_sim != from_standin || from_standin != expected {
            mismatches.push(format!(
                "{name}:\n  sim:      {from_sim:?}\n  stand-in: {from_standin:?}\n  expected: {expected:?}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

fn streamed(body: Body) -> Seen {
    Seen {
        status: 200,
        content_type: None,
        chunked: true,
        body,
    }
}

fn json(status: u16, body: Value) -> Seen {
    Seen {
        status,
        content_type: Some("application/json".into()),
        chunked: false,
        body: Body::Json(body),
    }
}

#[tokio::test]
async fn the_sim_answers_as_a_fastapi_server_py_does() {
    let sim = Sim::start(&["--model", "cosyvoice3", "--speakers", "中文女", "--rtf", "0.01"]);
    let standin = StandIn::start(&["--speakers", "中文女"]).await;
    let prompt = test_wav(1.0, 16000);
    let long_prompt = test_wav(31.0, 16000);
    let big = "x".repeat(1100 * 1024);
    let missing = |name: &str| serde_json::json!({"type": "missing", "loc": ["body", name], "msg": "Field required", "input": null});
    let cases = vec![
        (
            "GET sft, urlencoded body (client.py)",
            Req::Urlencoded(
                true,
                "/inference_sft",
                fields(&[("tts_text", "Hello there."), ("spk_id", "中文女")]),
            ),
            streamed(Body::Complete { empty: false }),
        ),
        (
            "GET sft, unknown speaker",
            Req::Urlencoded(
                true,
                "/inference_sft",
                fields(&[("tts_text", "Hello there."), ("spk_id", "nobody")]),
            ),
            streamed(Body::Cut),
        ),
        (
            "POST zero_shot, multipart",
            Req::Multipart(
                "/inference_zero_shot",
                fields(&[
                    ("tts_text", "Hello there. How are you?"),
                    ("prompt_text", &format!("{MARK}Hi.")),
                ]),
                Some(prompt.clone()),
            ),
            streamed(Body::Complete { empty: false }),
        ),
        (
            "POST zero_shot, the marker in tts_text (checked over prompt_text + tts_text)",
            Req::Multipart(
                "/inference_zero_shot",
                fields(&[("tts_text", "<|endofprompt|>Hello."), ("prompt_text", "Hi.")]),
                Some(prompt.clone()),
            ),
            streamed(Body::Complete { empty: false }),
        ),
        (
            "POST zero_shot without <|endofprompt|>",
            Req::Multipart(
                "/inference_zero_shot",
                fields(&[("tts_text", "Hello."), ("prompt_text", "Hi.")]),
                Some(prompt.clone()),
            ),
            streamed(Body::Cut),
        ),
        (
            "POST cross_lingual",
            Req::Multipart(
                "/inference_cross_lingual",
                fields(&[("tts_text", &format!("{MARK}你好。"))]),
                Some(prompt.clone()),
            ),
            streamed(Body::Complete { empty: false }),
        ),
        (
            "POST instruct2",
            Req::Multipart(
                "/inference_instruct2",
                fields(&[
                    ("tts_text", "Hello."),
                    ("instruct_text", "Speak slowly.<|endofprompt|>"),
                ]),
                Some(prompt.clone()),
            ),
            streamed(Body::Complete { empty: false }),
        ),
        (
            "GET /inference_instruct, urlencoded (client.py)",
            Req::Urlencoded(
                true,
                "/inference_instruct",
                fields(&[
                    ("tts_text", "Hello."),
                    ("spk_id", "中文女"),
                    ("instruct_text", "Calm."),
                ]),
            ),
            streamed(Body::Cut),
        ),
        (
            "a 1.1 MiB text part",
            Req::Multipart(
                "/inference_cross_lingual",
                fields(&[("tts_text", &big)]),
                Some(prompt.clone()),
            ),
            json(
                400,
                serde_json::json!({"detail": "Part exceeded maximum size of 1024KB."}),
            ),
        ),
        (
            "nothing speakable",
            Req::Multipart(
                "/inference_cross_lingual",
                fields(&[("tts_text", &format!("{MARK} ...!?"))]),
                Some(prompt.clone()),
            ),
            streamed(Body::Complete { empty: true }),
        ),
        (
            "a prompt over 30 s",
            Req::Multipart(
                "/inference_cross_lingual",
                fields(&[("tts_text", &format!("{MARK}Hello."))]),
                Some(long_prompt),
            ),
            streamed(Body::Cut),
        ),
        (
            "a prompt that is no WAV",
            Req::Multipart(
                "/inference_cross_lingual",
                fields(&[("tts_text", &format!("{MARK}Hello."))]),
                Some(b"not a wav".to_vec()),
            ),
            Seen {
                status: 500,
                content_type: Some("text/plain".into()),
                chunked: false,
                body: Body::Text("Internal Server Error".into()),
            },
        ),
        (
            "the form in the query string only",
            Req::Get("/inference_sft?tts_text=Hi.&spk_id=%E4%B8%AD%E6%96%87%E5%A5%B3"),
            json(
                422,
                serde_json::json!({"detail": [missing("tts_text"), missing("spk_id")]}),
            ),
        ),
        (
            "POST urlencoded without spk_id",
            Req::Urlencoded(false, "/inference_sft", fields(&[("tts_text", "Hi.")])),
            json(422, serde_json::json!({"detail": [missing("spk_id")]})),
        ),
        (
            "/health",
            Req::Get("/health"),
            json(404, serde_json::json!({"detail": "Not Found"})),
        ),
        (
            "/docs",
            Req::Get("/docs"),
            Seen {
                status: 200,
                content_type: Some("text/html".into()),
                chunked: false,
                body: Body::Complete { empty: false },
            },
        ),
    ];
    compare(&sim, &standin, cases).await;
}

#[tokio::test]
async fn upstream_tensor_bug_cuts_every_prompt_route_on_both() {
    let sim = Sim::start(&[
        "--model",
        "cosyvoice3",
        "--upstream-bug",
        "tensor",
        "--rtf",
        "0.01",
    ]);
    let standin = StandIn::start(&["--upstream-bug", "tensor"]).await;
    let prompt = test_wav(1.0, 16000);
    let with_prompt =
        |path, pairs: &[(&'static str, &str)]| Req::Multipart(path, fields(pairs), Some(prompt.clone()));
    let zero_shot_prompt = format!("{MARK}Hi.");
    let cases = vec![
        (
            "zero_shot",
            with_prompt(
                "/inference_zero_shot",
                &[("tts_text", "Hello."), ("prompt_text", &zero_shot_prompt)],
            ),
            streamed(Body::Cut),
        ),
        (
            "cross_lingual",
            with_prompt(
                "/inference_cross_lingual",
                &[("tts_text", &format!("{MARK}Hello."))],
            ),
            streamed(Body::Cut),
        ),
        (
            "instruct2",
            with_prompt(
                "/inference_instruct2",
                &[("tts_text", "Hello."), ("instruct_text", "Calm.<|endofprompt|>")],
            ),
            streamed(Body::Cut),
        ),
        (
            "/docs stays green",
            Req::Get("/docs"),
            Seen {
                status: 200,
                content_type: Some("text/html".into()),
                chunked: false,
                body: Body::Complete { empty: false },
            },
        ),
    ];
    compare(&sim, &standin, cases).await;
}
