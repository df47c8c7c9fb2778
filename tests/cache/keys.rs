//! Canonical cache keys: equivalent spellings of a request share a key, every field that matters
//! (text, mode, prompt, speaker, seed, pool, speed, model_version) gives one of its own.

use crate::common::gateway::{pool_yaml, Gateway};
use crate::common::sim::{args_for, test_wav, Sim};
use crate::support::{b64, requests, send, sft, stored, FAST};
use serde_json::{json, Value};
use std::collections::HashSet;

const NFC_TEXT: &str = "Un caf\u{e9}, s'il vous pla\u{ee}t.";
const NFD_TEXT: &str = "Un cafe\u{301}, s'il vous plai\u{302}t.";

#[tokio::test]
async fn equivalent_requests_share_a_key_and_every_field_that_matters_changes_it() {
    let sim = Sim::start(&args_for("generate_json", FAST));
    // Two pools on the same sim: `json` (generate_json) takes `speed`.
    let pools = format!(
        "  default_pool: cosyvoice\n{}    json:\n      protocol: generate_json\n      health: {{ interval: 200ms, timeout: 500ms }}\n      speakers: [中文女, 中文男]\n      backends:\n        - addr: {}\n",
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], ""),
        sim.addr()
    );
    let gw = Gateway::start(&format!("  cache: {{}}\n{pools}"));
    let prompt = test_wav(1.0, 16000);
    let prompt_b64 = b64(&prompt);
    let s = |v: &str| serde_json::to_string(v).unwrap();

    let base = json!({"text": NFC_TEXT, "mode": "zero_shot", "prompt_audio": prompt_b64, "prompt_text": "A short prompt."})
        .to_string();
    let first = send(&gw, &base, &[]).await;
    first.expect("MISS");
    let key = first.key();
    assert_eq!(requests(&sim).await, 1);

    // Equivalent spellings of the same request.
    let wrapped: String = prompt_b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(wrapped.contains('\n'));
    let equivalents = [
        (
            "reordered keys and extra whitespace",
            format!(
                "{{\n  \"prompt_text\" :  {},\n\t\"prompt_audio\":{} ,  \"mode\" : \"zero_shot\",\r\n  \"text\"  :{}  }}\n",
                s("A short prompt."),
                s(&prompt_b64),
                s(NFC_TEXT)
            ),
        ),
        (
            "base64 wrapped every 76 characters",
            json!({"text": NFC_TEXT, "mode": "zero_shot", "prompt_audio": wrapped, "prompt_text": "A short prompt."}).to_string(),
        ),
        (
            "text and prompt_text with surrounding spaces",
            json!({"text": format!("  {NFC_TEXT} \n"), "mode": "zero_shot", "prompt_audio": prompt_b64, "prompt_text": " A short prompt.  "}).to_string(),
        ),
        (
            "NFD spelling",
            json!({"text": NFD_TEXT, "mode": "zero_shot", "prompt_audio": prompt_b64, "prompt_text": "A short prompt."}).to_string(),
        ),
        (
            "mode, seed and speed spelled out at their defaults",
            json!({"text": NFC_TEXT, "prompt_audio": prompt_b64, "prompt_text": "A short prompt.", "seed": 0, "speed": 1.0}).to_string(),
        ),
    ];
    for (what, body) in &equivalents {
        let r = send(&gw, body, &[]).await;
        r.expect("HIT");
        assert_eq!(r.key(), key, "{what}: same key");
        assert_eq!(r.body, first.body, "{what}: same audio");
    }
    assert_eq!(
        requests(&sim).await,
        1,
        "equivalent requests make no backend call"
    );

    // Each field that matters gives another key: a MISS, one backend call each.
    let other_prompt = b64(&test_wav(1.1, 16000));
    let instruct = |instruction: &str| {
        json!({"text": NFC_TEXT, "mode": "instruct", "prompt_audio": prompt_b64, "instruct_text": instruction}).to_string()
    };
    let sft_with = |extra: Value| {
        let mut v = json!({"text": NFC_TEXT, "mode": "sft", "spk_id": "中文女"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v.to_string()
    };
    let variants: Vec<(&str, String, Option<&str>)> = vec![
        ("text", json!({"text": "Un caf\u{e9} noir.", "mode": "zero_shot", "prompt_audio": prompt_b64, "prompt_text": "A short prompt."}).to_string(), None),
        ("mode", json!({"text": NFC_TEXT, "mode": "cross_lingual", "prompt_audio": prompt_b64, "prompt_text": "A short prompt."}).to_string(), None),
        ("prompt_audio bytes", json!({"text": NFC_TEXT, "mode": "zero_shot", "prompt_audio": other_prompt, "prompt_text": "A short prompt."}).to_string(), None),
        ("prompt_text", json!({"text": NFC_TEXT, "mode": "zero_shot", "prompt_audio": prompt_b64, "prompt_text": "Another prompt."}).to_string(), None),
        ("instruct", instruct("Speak slowly."), None),
        ("instruct_text", instruct("Speak quickly."), None),
        ("sft", sft_with(json!({})), None),
        ("spk_id", sft_with(json!({"spk_id": "中文男"})), None),
        ("seed", sft_with(json!({"seed": 7})), None),
        ("pool", sft_with(json!({})), Some("json")),
        ("speed", sft_with(json!({"speed": 1.5})), Some("json")),
        ("another speed", sft_with(json!({"speed": 0.75})), Some("json")),
    ];
    let mut keys = HashSet::from([key.clone()]);
    let mut calls = 1;
    for (what, body, pool) in &variants {
        let headers: Vec<(&str, &str)> = pool.iter().map(|p| ("X-Cosygate-Pool", *p)).collect();
        let r = send(&gw, body, &headers).await;
        r.expect("MISS");
        calls += 1;
        assert_eq!(requests(&sim).await, calls, "{what}: one backend call");
        assert!(keys.insert(r.key()), "{what}: a key of its own ({})", r.key());
        // And it is cached under that key.
        let again = send(&gw, body, &headers).await;
        again.expect("HIT");
        assert_eq!(
            (again.key(), again.body.clone()),
            (r.key(), r.body.clone()),
            "{what}"
        );
    }
    assert_eq!(requests(&sim).await, calls);

    // `speed` is keyed by value: 1.5 spelled differently is the same key; 1 is the default.
    let r = send(
        &gw,
        &sft_with(json!({"speed": 1.50})),
        &[("X-Cosygate-Pool", "json")],
    )
    .await;
    r.expect("HIT");
    let r = send(
        &gw,
        &sft_with(json!({"speed": 1})),
        &[("X-Cosygate-Pool", "json")],
    )
    .await;
    r.expect("HIT");
    assert_eq!(requests(&sim).await, calls);
}

#[tokio::test]
async fn model_version_is_part_of_the_key_even_on_a_shared_disk() {
    let sim = Sim::start(FAST);
    let disk = tempfile::tempdir().expect("temp dir");
    let conf = |version: &str| {
        format!(
            "  cache: {{ disk: {{ path: {} }} }}\n{}",
            disk.path().display(),
            pool_yaml(
                "cosyvoice_fastapi",
                &[sim.addr()],
                &format!("      model_version: \"{version}\"\n")
            )
        )
    };
    let body = sft("Same words, new weights.");
    let v1 = Gateway::start(&conf("2025-01"));
    let old = send(&v1, &body, &[]).await;
    old.expect("MISS");
    stored(disk.path(), &old.key()).await;

    // Another gateway on the same directory with another model_version: no hit across them.
    let v2 = Gateway::start(&conf("2025-02"));
    let new = send(&v2, &body, &[]).await;
    new.expect("MISS");
    assert_ne!(new.key, old.key);
    assert_eq!(requests(&sim).await, 2);
    // Each still hits its own entry, from the shared directory too.
    send(&v2, &body, &[]).await.expect("HIT");
    send(&v1, &body, &[]).await.expect("HIT");
    drop(v1);
    let v1 = Gateway::start(&conf("2025-01"));
    let r = send(&v1, &body, &[]).await;
    r.expect("HIT");
    assert_eq!(r.key, old.key);
    assert_eq!(requests(&sim).await, 2);
}
