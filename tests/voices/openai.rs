//! A registered voice through OpenAI's `/v1/audio/speech`: `voice` names it (by name or id),
//! the answer is the same synthesis and cache entry as `/generate` with `voice_id`,
//! `instructions` selects instruct mode with the voice's sample, and another tenant's caller
//! cannot name it.

use crate::common::gateway::Gateway;
use crate::common::sim::{test_wav, Sim};
use crate::support::*;
use serde_json::json;

async fn speech(gw: &Gateway, token: &str, body: serde_json::Value) -> Answer {
    call(
        reqwest::Method::POST,
        gw.url("/v1/audio/speech"),
        Some(token),
        Some(body.to_string()),
    )
    .await
}

#[tokio::test]
async fn openai_speech_speaks_a_registered_voice() {
    let sim = Sim::start(FAST);
    let dir = tempfile::tempdir().expect("dir");
    let gw = Gateway::start(&config(&sim, &voices_at(dir.path(), ""), ""));
    let wav = test_wav(1.0, 16000);
    let id = sha256_hex(&wav);
    assert_eq!(
        register(&gw, Some(TOKEN_A), "narrator", &wav, TRANSCRIPT)
            .await
            .status,
        201
    );

    let by_name = speech(
        &gw,
        TOKEN_A,
        json!({"model": "cosyvoice", "input": "Good evening.", "voice": "narrator", "response_format": "wav"}),
    )
    .await;
    assert_eq!(
        (by_name.status, by_name.cache.as_str()),
        (200, "MISS"),
        "{:?}",
        by_name.json
    );
    assert!(by_name.bytes.starts_with(b"RIFF"));
    let last = sim.last().await;
    assert_eq!(last["route"], "/inference_zero_shot", "{last}");
    assert_eq!(
        last["prompt_wav_sha256"],
        id.as_str(),
        "the registered sample reached the backend"
    );

    // The same request through /generate with voice_id: the same key, a HIT, the same bytes.
    let generated = generate(
        &gw,
        Some(TOKEN_A),
        json!({"text": "Good evening.", "voice_id": id}),
    )
    .await;
    assert_eq!((generated.status, generated.cache.as_str()), (200, "HIT"));
    assert_eq!(generated.key, by_name.key);
    assert_eq!(generated.bytes, by_name.bytes);
    // And by id through OpenAI's route.
    let by_id = speech(
        &gw,
        TOKEN_A,
        json!({"model": "cosyvoice", "input": "Good evening.", "voice": id}),
    )
    .await;
    assert_eq!((by_id.status, by_id.key.as_str()), (200, by_name.key.as_str()));

    // `instructions`: instruct mode with the voice's sample.
    let instructed = speech(
        &gw,
        TOKEN_A,
        json!({"model": "cosyvoice", "input": "Good evening.", "voice": "narrator", "instructions": "Speak slowly."}),
    )
    .await;
    assert_eq!(instructed.status, 200, "{:?}", instructed.json);
    let last = sim.last().await;
    assert_eq!(last["route"], "/inference_instruct2", "{last}");
    assert_eq!(
        sim.stats().await["requests"],
        2,
        "two syntheses: plain and instructed"
    );

    // Another tenant cannot name it.
    let other = speech(
        &gw,
        TOKEN_B,
        json!({"model": "cosyvoice", "input": "Good evening.", "voice": "narrator"}),
    )
    .await;
    assert_eq!(other.status, 400);
    assert_eq!(other.json["error"]["code"], "voice_not_found");
    assert_eq!(other.json["error"]["param"], "voice");
}
