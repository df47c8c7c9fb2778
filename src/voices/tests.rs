//! The store in process, without Redis: register, update, list, find by id and by name, scopes,
//! quotas, delete, and reopening the directory.

use super::*;
use crate::api::{RequestLimits, VoiceRegistration};
use base64::Engine;

const LIMITS: RequestLimits = RequestLimits {
    max_text_chars: 200,
    max_prompt_seconds: 30.0,
};

fn conf(dir: &std::path::Path) -> GatewayConf {
    let yaml = format!(
        "cosygate:\n  listen:\n    - addr: 127.0.0.1:1\n  voices: {{ path: \"{}\", allow_anonymous: true, max_per_tenant: 2 }}\n  pools:\n    p:\n      protocol: cosyvoice_fastapi\n      backends:\n        - addr: 127.0.0.1:2\n",
        dir.display()
    );
    crate::config::parse("t.yaml", &yaml).expect("parses").1
}

fn registration(name: &str, frames: usize) -> VoiceRegistration {
    let wav = crate::api::wav::pcm16_to_wav(&vec![1u8; frames * 2], 16000).expect("wav");
    let body = serde_json::json!({
        "name": name,
        "prompt_audio": base64::engine::general_purpose::STANDARD.encode(&wav),
        "prompt_text": "Hello.",
    });
    VoiceRegistration::parse(body.to_string().as_bytes(), LIMITS).expect("valid")
}

#[tokio::test]
async fn register_find_list_delete_and_reopen() {
    let dir = tempfile::tempdir().expect("dir");
    let store = VoiceStore::open(&conf(dir.path())).expect("open");
    assert!(store.enabled() && store.allow_anonymous());
    let anna = registration("anna", 16000);
    let id = anna.id.clone();
    let (info, created) = store.register("tenant:a", anna).await.expect("registered");
    assert!(created);
    assert_eq!((info.voice_id.as_str(), info.bytes), (id.as_str(), 32044));
    let (again, created) = store
        .register("tenant:a", registration("anna2", 16000))
        .await
        .expect("updated");
    assert!(!created, "the same audio is an update");
    assert_eq!(again.created_unix_ms, info.created_unix_ms);

    for key in [id.as_str(), "anna2"] {
        let voice = store.find("tenant:a", key).await.expect("found");
        assert_eq!((voice.id.as_str(), voice.name.as_str()), (id.as_str(), "anna2"));
        assert_eq!(hex::encode(Sha256::digest(&voice.prompt_audio)), id);
    }
    assert!(store.find("tenant:b", &id).await.is_none(), "another scope");
    assert!(store.find("tenant:a", "anna").await.is_none(), "renamed");

    store
        .register("tenant:a", registration("bob", 16001))
        .await
        .expect("second");
    assert_eq!(
        store
            .register("tenant:a", registration("cleo", 16002))
            .await
            .err(),
        Some(VoiceError::TooMany { max_count: 2 })
    );
    let names: Vec<_> = store.list("tenant:a").await.into_iter().map(|v| v.name).collect();
    assert_eq!(names, ["anna2", "bob"], "sorted by name");

    // Reopened (a restart): the same voices, samples read from the files.
    drop(store);
    let store = VoiceStore::open(&conf(dir.path())).expect("reopen");
    assert_eq!(store.list("tenant:a").await.len(), 2);
    assert!(store.find("tenant:a", "bob").await.is_some());
    assert_eq!(
        store.delete("tenant:b", "bob").await.err(),
        Some(VoiceError::NotFound)
    );
    assert_eq!(
        store.delete("tenant:a", "bob").await.map(|v| v.name).ok(),
        Some("bob".into())
    );
    assert!(store.find("tenant:a", "bob").await.is_none());
    drop(store);
    let store = VoiceStore::open(&conf(dir.path())).expect("reopen");
    let names: Vec<_> = store.list("tenant:a").await.into_iter().map(|v| v.name).collect();
    assert_eq!(names, ["anna2"], "the delete reached the disk");
}

#[tokio::test]
async fn without_a_section_the_store_is_off() {
    let store = VoiceStore::default();
    assert!(!store.enabled());
    assert!(store.find("anonymous:", "x").await.is_none());
    assert!(store.list("anonymous:").await.is_empty());
}
