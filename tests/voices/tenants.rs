//! Scopes and quotas: one tenant's voices do not exist for another; count and byte quotas;
//! names; bad samples refused with `/generate`'s codes.

use crate::common::gateway::Gateway;
use crate::common::sim::{test_wav, Sim};
use crate::support::*;
use serde_json::json;

#[tokio::test]
async fn tenants_cannot_see_use_or_delete_each_others_voices() {
    let sim = Sim::start(FAST);
    let dir = tempfile::tempdir().expect("dir");
    let gw = Gateway::start(&config(&sim, &voices_at(dir.path(), ""), ""));
    let wav = test_wav(1.0, 16000);
    let id = register(&gw, Some(TOKEN_A), "anna", &wav, TRANSCRIPT).await.json["voice_id"]
        .as_str()
        .expect("id")
        .to_string();

    assert!(names(&list(&gw, Some(TOKEN_B)).await).is_empty());
    for voice in [id.as_str(), "anna"] {
        let used = generate(&gw, Some(TOKEN_B), json!({"text": "Hi.", "voice_id": voice})).await;
        assert_eq!((used.status, used.code()), (422, "unknown_voice"));
        let deleted = delete(&gw, Some(TOKEN_B), voice).await;
        assert_eq!((deleted.status, deleted.code()), (404, "voice_not_found"));
        let one = call(
            reqwest::Method::GET,
            gw.url(&format!("/v1/voices/{voice}")),
            Some(TOKEN_B),
            None,
        )
        .await;
        assert_eq!(one.status, 404);
    }
    assert_eq!(requests(&sim).await, 0);
    assert_eq!(
        names(&list(&gw, Some(TOKEN_A)).await),
        ["anna"],
        "still there for A"
    );
    let one = call(
        reqwest::Method::GET,
        gw.url("/v1/voices/anna"),
        Some(TOKEN_A),
        None,
    )
    .await;
    assert_eq!(
        (one.status, one.json["voice_id"].as_str()),
        (200, Some(id.as_str()))
    );
    // B may register the same sample under the same name in its own scope.
    assert_eq!(
        register(&gw, Some(TOKEN_B), "anna", &wav, TRANSCRIPT)
            .await
            .status,
        201
    );

    // Anonymous callers: refused (voices.allow_anonymous is off), on every route.
    let anon = register(&gw, None, "mine", &wav, TRANSCRIPT).await;
    assert_eq!((anon.status, anon.code()), (401, "voice_token_required"));
    assert_eq!(list(&gw, None).await.code(), "voice_token_required");
    let anon = generate(&gw, None, json!({"text": "Hi.", "voice_id": id})).await;
    assert_eq!((anon.status, anon.code()), (401, "voice_token_required"));
}

#[tokio::test]
async fn quotas_names_and_bad_samples() {
    let sim = Sim::start(FAST);
    let dir = tempfile::tempdir().expect("dir");
    // Two voices, 100 KB: two 1 s 16 kHz samples (32 KB each) fit, a 2 s 24 kHz one (96 KB) does not.
    let limits = ", max_per_tenant: 2, max_bytes_per_tenant: 100KiB";
    let gw = Gateway::start(&config(&sim, &voices_at(dir.path(), limits), ""));
    let (one, two, three) = (test_wav(1.0, 16000), test_wav(1.01, 16000), test_wav(0.99, 16000));
    assert_eq!(
        register(&gw, Some(TOKEN_A), "one", &one, TRANSCRIPT).await.status,
        201
    );
    let taken = register(&gw, Some(TOKEN_A), "one", &two, TRANSCRIPT).await;
    assert_eq!((taken.status, taken.code()), (409, "voice_name_taken"));
    let big = register(&gw, Some(TOKEN_A), "big", &test_wav(2.0, 24000), TRANSCRIPT).await;
    assert_eq!((big.status, big.code()), (409, "voice_quota_exceeded"));
    let message = big.json["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("102400") && message.contains("DELETE"),
        "{message}"
    );
    assert_eq!(
        register(&gw, Some(TOKEN_A), "two", &two, TRANSCRIPT).await.status,
        201
    );
    let third = register(&gw, Some(TOKEN_A), "three", &three, TRANSCRIPT).await;
    assert_eq!((third.status, third.code()), (409, "voice_quota_exceeded"));
    assert!(third.json["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("DELETE"));
    // Re-registering one of them is an update, not a third voice.
    assert_eq!(
        register(&gw, Some(TOKEN_A), "uno", &one, TRANSCRIPT).await.status,
        200
    );
    // Quotas are per tenant.
    assert_eq!(
        register(&gw, Some(TOKEN_B), "three", &three, TRANSCRIPT)
            .await
            .status,
        201
    );
    // Deleting makes room.
    assert_eq!(delete(&gw, Some(TOKEN_A), "two").await.status, 204);
    assert_eq!(
        register(&gw, Some(TOKEN_A), "three", &three, TRANSCRIPT)
            .await
            .status,
        201
    );

    // Samples are checked as /generate checks them, with the same codes.
    for (wav, status, code) in [
        (test_wav(1.0, 8000), 422, "sample_rate_too_low"),
        (test_wav(31.0, 16000), 422, "prompt_too_long"),
        (b"not a wav".to_vec(), 400, "invalid_prompt_audio"),
    ] {
        let r = register(&gw, Some(TOKEN_B), "bad", &wav, TRANSCRIPT).await;
        assert_eq!((r.status, r.code()), (status, code));
    }
    let post = |body: String| {
        call(
            reqwest::Method::POST,
            gw.url("/v1/voices"),
            Some(TOKEN_B),
            Some(body),
        )
    };
    let b = b64(&one);
    for (body, code) in [
        (
            json!({"name": "x", "prompt_audio": "@@", "prompt_text": "t"}),
            "invalid_base64",
        ),
        (
            json!({"name": "x", "prompt_audio": b, "prompt_text": "<speak>t"}),
            "forbidden_characters",
        ),
        (json!({"name": "x", "prompt_audio": b}), "missing_field"),
        (
            json!({"name": "x y", "prompt_audio": b, "prompt_text": "t"}),
            "invalid_voice_name",
        ),
        (
            json!({"name": "x", "prompt_audio": b, "prompt_text": "t", "seed": 1}),
            "unknown_field",
        ),
    ] {
        let r = post(body.to_string()).await;
        assert_eq!((r.status, r.code()), (400, code));
    }
    let form = client()
        .post(gw.url("/v1/voices"))
        .bearer_auth(TOKEN_B)
        .header("Content-Type", "text/plain")
        .body("x")
        .send()
        .await
        .expect("answer");
    assert_eq!(form.status().as_u16(), 415);
    assert_eq!(
        names(&list(&gw, Some(TOKEN_B)).await),
        ["three"],
        "nothing bad was stored"
    );
}

#[tokio::test]
async fn concurrent_registrations_cannot_pass_the_quota() {
    let sim = Sim::start(FAST);
    let dir = tempfile::tempdir().expect("dir");
    let gw = std::sync::Arc::new(Gateway::start(&config(
        &sim,
        &voices_at(dir.path(), ", max_per_tenant: 3"),
        "",
    )));
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let gw = gw.clone();
            tokio::spawn(async move {
                let wav = test_wav(1.0 + f64::from(i) / 100.0, 16000);
                register(&gw, Some(TOKEN_A), &format!("v{i}"), &wav, TRANSCRIPT)
                    .await
                    .status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("task"));
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 201, 201, 409, 409, 409, 409, 409, 409, 409]);
    assert_eq!(names(&list(&gw, Some(TOKEN_A)).await).len(), 3);
}
