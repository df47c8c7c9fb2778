//! The routes on one instance: register, list, generate with `voice_id`, delete; anonymous
//! callers; the feature off; the configuration check.

use crate::common::gateway::{check_config, pool_yaml, Gateway};
use crate::common::sim::{test_wav, Sim};
use crate::support::*;
use serde_json::json;

#[tokio::test]
async fn register_list_generate_and_delete() {
    let sim = Sim::start(FAST);
    let dir = tempfile::tempdir().expect("dir");
    let gw = Gateway::start(&config(&sim, &voices_at(dir.path(), ""), ""));
    let wav = test_wav(1.0, 16000);
    let id = sha256_hex(&wav);

    let created = register(&gw, Some(TOKEN_A), "anna", &wav, TRANSCRIPT).await;
    assert_eq!(created.status, 201, "{:?}", created.json);
    assert_eq!(created.json["voice_id"], id.as_str());
    assert_eq!(created.json["name"], "anna");
    assert_eq!(created.json["bytes"], wav.len() as u64);
    assert_eq!(created.json["seconds"], 1.0);
    // The same audio again: the name and transcript are updated, nothing new is created.
    let again = register(&gw, Some(TOKEN_A), "anna-v2", &wav, TRANSCRIPT).await;
    assert_eq!(
        (again.status, again.json["voice_id"].as_str()),
        (200, Some(id.as_str()))
    );
    assert_eq!(again.json["created"], created.json["created"]);

    let listed = list(&gw, Some(TOKEN_A)).await;
    assert_eq!(names(&listed), ["anna-v2"]);
    let v = &listed.json["voices"][0];
    assert_eq!(v["voice_id"], id.as_str());
    assert_eq!(v["prompt_text"], TRANSCRIPT);
    assert_eq!(v["bytes"], wav.len() as u64);
    assert!(v["created"].as_str().is_some_and(|c| c.ends_with('Z')), "{v}");

    // voice_id, then the same sample sent inline: one synthesis, one key, the same bytes.
    let by_id = generate(
        &gw,
        Some(TOKEN_A),
        json!({"text": "Good morning.", "voice_id": id}),
    )
    .await;
    assert_eq!(
        (by_id.status, by_id.cache.as_str()),
        (200, "MISS"),
        "{:?}",
        by_id.json
    );
    assert!(by_id.bytes.starts_with(b"RIFF"));
    let inline = json!({"text": "Good morning.", "prompt_audio": b64(&wav), "prompt_text": TRANSCRIPT});
    let inline = generate(&gw, Some(TOKEN_A), inline).await;
    assert_eq!((inline.status, inline.cache.as_str()), (200, "HIT"));
    assert_eq!(inline.key, by_id.key);
    assert_eq!(inline.bytes, by_id.bytes);
    let by_name = generate(
        &gw,
        Some(TOKEN_A),
        json!({"text": "Good morning.", "voice_id": "anna-v2"}),
    )
    .await;
    assert_eq!((by_name.status, by_name.key.as_str()), (200, by_id.key.as_str()));
    // A stream with a voice: the same audio from the cache, after a streaming WAV header
    // (sizes unknown up front).
    let streamed = json!({"text": "Good morning.", "voice_id": id, "stream": true});
    let streamed = generate(&gw, Some(TOKEN_A), streamed).await;
    assert_eq!((streamed.status, streamed.cache.as_str()), (200, "HIT"));
    assert!(streamed.bytes.starts_with(b"RIFF"));
    assert_eq!(streamed.bytes[44..], by_id.bytes[44..], "the same PCM");
    assert_eq!(requests(&sim).await, 1, "the sim synthesized once");
    // The sample the backend received is the registered one.
    let last = sim.last().await;
    assert_eq!(last["prompt_wav_sha256"], id.as_str(), "{last}");
    assert_eq!(last["fields"]["prompt_text"], TRANSCRIPT, "{last}");

    let conflicting = json!({"text": "x", "voice_id": id, "prompt_text": "y"});
    assert_eq!(
        generate(&gw, Some(TOKEN_A), conflicting).await.code(),
        "conflicting_fields"
    );
    let sft = json!({"text": "x", "voice_id": id, "mode": "sft", "spk_id": "中文女"});
    assert_eq!(
        generate(&gw, Some(TOKEN_A), sft).await.code(),
        "conflicting_fields"
    );
    let odd = json!({"text": "x", "voice_id": "no such/voice"});
    assert_eq!(
        generate(&gw, Some(TOKEN_A), odd).await.code(),
        "invalid_voice_name"
    );

    let gone = delete(&gw, Some(TOKEN_A), &id).await;
    assert_eq!(gone.status, 204);
    assert!(gone.bytes.is_empty());
    assert!(names(&list(&gw, Some(TOKEN_A)).await).is_empty());
    let after = generate(
        &gw,
        Some(TOKEN_A),
        json!({"text": "Good morning.", "voice_id": id}),
    )
    .await;
    assert_eq!((after.status, after.code()), (422, "unknown_voice"));
    let twice = delete(&gw, Some(TOKEN_A), &id).await;
    assert_eq!((twice.status, twice.code()), (404, "voice_not_found"));
    assert!(
        std::fs::read_dir(dir.path().join("v1"))
            .expect("layout")
            .flatten()
            .all(|d| std::fs::read_dir(d.path()).expect("scope dir").next().is_none()),
        "the file is gone"
    );
    let wrong_method = call(reqwest::Method::PUT, gw.url("/v1/voices"), Some(TOKEN_A), None).await;
    assert_eq!(
        (wrong_method.status, wrong_method.code()),
        (405, "method_not_allowed")
    );
}

#[tokio::test]
async fn anonymous_voices_when_allowed_and_none_without_the_section() {
    let sim = Sim::start(FAST);
    let dir = tempfile::tempdir().expect("dir");
    let gw = Gateway::start(&config(
        &sim,
        &voices_at(dir.path(), ", allow_anonymous: true"),
        "",
    ));
    let wav = test_wav(1.0, 16000);
    assert_eq!(register(&gw, None, "shared", &wav, TRANSCRIPT).await.status, 201);
    assert_eq!(names(&list(&gw, None).await), ["shared"]);
    assert!(
        names(&list(&gw, Some(TOKEN_A)).await).is_empty(),
        "anonymous is its own scope"
    );
    let r = generate(&gw, None, json!({"text": "Hi.", "voice_id": "shared"})).await;
    assert_eq!(r.status, 200, "{:?}", r.json);

    let off = Gateway::start(&format!(
        "  cache: {{ memory: {{ max: 64MiB }} }}\n{}",
        pool_yaml("cosyvoice_fastapi", &[sim.addr()], "")
    ));
    for r in [
        list(&off, None).await,
        register(&off, None, "x", &wav, TRANSCRIPT).await,
        delete(&off, None, "x").await,
        generate(&off, None, json!({"text": "Hi.", "voice_id": "x"})).await,
    ] {
        assert_eq!((r.status, r.code()), (404, "voices_disabled"));
        let message = r.json["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("voices:"), "{message}");
    }
}

#[test]
fn the_voices_section_is_checked() {
    let yaml = "pid_file: /tmp/x.pid\ncosygate:\n  listen:\n    - addr: 127.0.0.1:1\n  voices: { max_per_tenant: 3 }\n  pools:\n    p:\n      protocol: cosyvoice_fastapi\n      backends:\n        - addr: 127.0.0.1:2\n";
    let (code, out) = check_config(yaml);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("cosygate.yaml:5:") && out.contains("voices.path"),
        "{out}"
    );
    let (code, out) = check_config(&yaml.replace("max_per_tenant: 3", "colour: red"));
    assert_ne!(code, 0);
    assert!(out.contains("colour"), "{out}");
    let with_disk = yaml.replace(
        "  voices:",
        "  cache: { disk: { path: /tmp/cosygate-test-cache } }\n  voices:",
    );
    let (code, out) = check_config(&with_disk);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("nobody could use voices"), "{out}");
    let anonymous = with_disk.replace("max_per_tenant: 3", "max_per_tenant: 3, allow_anonymous: true");
    let (code, out) = check_config(&anonymous);
    assert_eq!(code, 0, "{out}");
}
