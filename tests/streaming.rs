//! `"stream": true` end to end through the real binaries: audio reaches the client as the
//! backend produces it, the complete audio fills the cache, a cache hit and a joined synthesis
//! stream too, a stream the backend cuts ends so the client can tell, and a failure before any
//! audio is a normal JSON error.

mod common;

use common::gateway::{pool_yaml, Gateway};
use common::sim::Sim;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A sim that paces its chunks: about 1.3 s per segment of [`long_text`] (two segments), the
/// first after 50 ms more.
const PACED: &[&str] = &["--rtf", "0.08", "--first-chunk-ms", "50"];

/// Several segments of speech (the sim sends one chunk per segment).
fn long_text() -> String {
    "今天天气很好，我们一起去公园散步吧。".repeat(8)
}

fn body(text: &str, stream: bool) -> Value {
    json!({"text": text, "mode": "sft", "spk_id": "中文女", "stream": stream})
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// A streamed answer as the client saw it.
struct Received {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
    /// When the first audio (past the 44-byte WAV header) and the last byte arrived.
    first_audio: Option<Instant>,
    last: Instant,
    /// The body ended in an error (an unterminated chunked body) rather than properly.
    broken: bool,
}

async fn stream(url: &str, body: &Value) -> Received {
    let resp = client()
        .post(url)
        .json(body)
        .send()
        .await
        .expect("gateway answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut chunks = resp.bytes_stream();
    let (mut got, mut first_audio, mut broken) = (Vec::new(), None, false);
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(bytes) => {
                got.extend_from_slice(&bytes);
                if got.len() > 44 && first_audio.is_none() {
                    first_audio = Some(Instant::now());
                }
            }
            Err(_) => {
                broken = true;
                break;
            }
        }
    }
    Received {
        status,
        headers,
        body: got,
        first_audio,
        last: Instant::now(),
        broken,
    }
}

/// The same request without `stream`: one complete answer.
async fn plain(gw: &Gateway, text: &str) -> reqwest::Response {
    client()
        .post(gw.url("/generate"))
        .json(&body(text, false))
        .send()
        .await
        .expect("answer")
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn start(sim: &Sim, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "  cache: {{ ttl: 1h, memory: {{ max: 64MiB }} }}\n{}",
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], extra)
    ))
}

#[tokio::test]
async fn a_stream_sends_audio_as_it_is_made_then_fills_the_cache() {
    let sim = Sim::start(PACED);
    let gw = start(&sim, "");
    let text = long_text();
    let first = stream(&gw.url("/generate"), &body(&text, true)).await;
    assert_eq!(first.status, 200);
    assert_eq!(header(&first, "transfer-encoding"), "chunked");
    assert_eq!(header(&first, "content-type"), "audio/wav");
    assert_eq!(header(&first, "x-cache"), "MISS");
    assert!(!first.broken, "the stream ended properly");
    let wav_header = &first.body[..44];
    assert_eq!(&wav_header[0..4], b"RIFF");
    assert_eq!(&wav_header[4..8], &[0xFF; 4], "RIFF size: unknown (streaming)");
    assert_eq!(&wav_header[36..40], b"data");
    assert_eq!(&wav_header[40..44], &[0xFF; 4], "data size: unknown (streaming)");
    assert_eq!(
        u32::from_le_bytes(wav_header[24..28].try_into().expect("4")),
        24000
    );
    let early = first.last - first.first_audio.expect("audio arrived");
    assert!(
        early >= Duration::from_millis(500),
        "the first audio arrived only {early:?} before the end: not streamed as produced"
    );

    // The complete audio is now cached: the same request without `stream` is a HIT whose
    // samples are exactly the ones streamed, and the backend synthesized once.
    let resp = plain(&gw, &text).await;
    assert_eq!(resp.headers()["x-cache"], "HIT");
    let wav = resp.bytes().await.expect("wav");
    cosygate::api::wav::parse_wav(&wav).expect("a complete, exact WAV");
    assert_eq!(&wav[44..], &first.body[44..], "cached samples = streamed samples");
    assert_eq!(sim.stats().await["requests"], 1);

    // A hit streams too, in the same framing.
    let again = stream(&gw.url("/generate"), &body(&text, true)).await;
    assert_eq!(header(&again, "x-cache"), "HIT");
    assert_eq!(header(&again, "transfer-encoding"), "chunked");
    assert_eq!(again.body, first.body);
}

#[tokio::test]
async fn a_caller_joining_a_stream_gets_the_bytes_so_far_then_the_rest() {
    let sim = Sim::start(PACED);
    let gw = start(&sim, "");
    let text = long_text();
    let leader = {
        let (url, text) = (gw.url("/generate"), text.clone());
        tokio::spawn(async move { stream(&url, &body(&text, true)).await })
    };
    // Join once the backend has sent its first chunk.
    sim.wait_stats(Duration::from_secs(20), "a synthesis in flight", |s| {
        s["inflight"] == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let joiner = stream(&gw.url("/generate"), &body(&text, true)).await;
    let leader = leader.await.expect("leader");
    assert_eq!((leader.status, joiner.status), (200, 200));
    assert_eq!(header(&leader, "x-cache"), "MISS");
    assert_eq!(header(&joiner, "x-cache"), "HIT");
    assert_eq!(header(&joiner, "x-cache-tier"), "inflight");
    assert_eq!(
        joiner.body, leader.body,
        "the joiner got every byte from the first"
    );
    assert!(!joiner.broken && !leader.broken);
    assert_eq!(sim.stats().await["requests"], 1, "one synthesis for both");
}

#[tokio::test]
async fn a_stream_the_backend_cuts_ends_unterminated_and_is_never_cached() {
    let sim = Sim::start(PACED);
    let gw = start(&sim, "      retry: { attempts: 0 }\n");
    sim.fault("truncate", 1).await;
    let text = long_text();
    let cut = stream(&gw.url("/generate"), &body(&text, true)).await;
    assert_eq!(cut.status, 200, "the headers went out with the first audio");
    assert!(cut.body.len() > 44, "some audio arrived before the cut");
    assert!(
        cut.broken,
        "the client can tell the stream was cut (unterminated chunked body)"
    );
    // Nothing partial was stored: the next request synthesizes again.
    let resp = plain(&gw, &text).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-cache"], "MISS");
    assert_eq!(sim.stats().await["requests"], 2);
    common::gateway::eventually(
        Duration::from_secs(5),
        "the access log records the cut",
        || async { gw.log().contains("\"error\":\"stream_cut\"") },
    )
    .await;
}

#[tokio::test]
async fn a_failure_before_any_audio_is_a_json_error_and_a_retry_before_it_is_invisible() {
    let (a, b) = (Sim::start(PACED), Sim::start(PACED));
    let gw = Gateway::start(&format!(
        "  cache: {{ ttl: 1h, memory: {{ max: 64MiB }} }}\n{}",
        pool_yaml("cosyvoice_fastapi", &[a.addr(), b.addr()], "")
    ));
    // One backend fails before sending audio: the stream is served by the other, whole.
    a.fault("error500", 1).await;
    b.fault("error500", 1).await;
    let text = "Hello there. This is a short one.";
    let served = stream(&gw.url("/generate"), &body(text, true)).await;
    assert_eq!(served.status, 200);
    assert!(!served.broken);
    cosygate::api::wav::pcm16_to_wav(&served.body[44..], 24000).expect("whole samples");

    // No backend can serve and there is no fallback: an ordinary JSON error, not a stream.
    a.kill();
    b.kill();
    let failed = stream(&gw.url("/generate"), &body("Another sentence.", true)).await;
    assert!(failed.status >= 500, "status {}", failed.status);
    assert_eq!(header(&failed, "content-type"), "application/json");
    let v: Value = serde_json::from_slice(&failed.body).expect("JSON error");
    assert!(v["error"]["code"].is_string(), "{v}");
}
