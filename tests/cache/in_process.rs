//! `cosygate::cache::Cache` driven in-process, as the admin purge will: purge and purge_all
//! across every tier, and a miss looked up once with its joiners needing no store.

use crate::common::redis::Redis;
use crate::support::{on_disk, stored, walk};
use bytes::Bytes;
use cosygate::cache::{Cache, CacheKey, CachedWav};
use cosygate::config::CacheConf;
use cosygate::synth::{Source, Synthesized};
use serde_json::json;
use std::time::SystemTime;

fn conf(yaml: &str) -> CacheConf {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("cache conf {yaml:?}: {e}"))
}

fn entry(seed: u8) -> CachedWav {
    let pcm: Vec<u8> = (0..4800u32).map(|i| (i as u8).wrapping_mul(seed)).collect();
    CachedWav {
        wav: Bytes::from(cosygate::api::wav::pcm16_to_wav(&pcm, 24000).expect("a WAV")),
        created: SystemTime::now(),
        degraded: false,
    }
}

#[tokio::test]
async fn purge_removes_an_entry_from_every_tier() {
    let redis = Redis::start();
    let disk = tempfile::tempdir().expect("temp dir");
    let full = conf(&format!(
        "{{ ttl: 1h, memory: {{ max: 1MiB }}, disk: {{ path: {}, max: 10MiB }}, redis: {{ url: \"{}\", timeout: 500ms }} }}",
        disk.path().display(),
        redis.url()
    ));
    let cache = Cache::open(&full).await.expect("open the cache");
    // Fresh views of one tier each (their memory is empty, so a lookup reaches that tier).
    let disk_only = conf(&format!("{{ disk: {{ path: {} }} }}", disk.path().display()));
    let redis_only = conf(&format!(
        "{{ redis: {{ url: \"{}\", timeout: 500ms }} }}",
        redis.url()
    ));
    let found_in = |c: CacheConf, key: CacheKey| async move {
        let view = Cache::open(&c).await.expect("open a view");
        view.lookup(&key).await.map(|(hit, tier)| (hit.wav, tier))
    };

    let req = cosygate::api::GenerateRequest::parse(
        br#"{"text":"purge me","mode":"sft","spk_id":"a"}"#,
        cosygate::api::RequestLimits {
            max_text_chars: 200,
            max_prompt_seconds: 30.0,
        },
    )
    .expect("a valid request");
    let (key, _) = cache.key("anonymous:", "cosyvoice", "", &req);
    let other = CacheKey([0x5a; 32]);
    let (e1, e2) = (entry(3), entry(5));
    cache.store(&key, &e1, &json!({"text": "purge me"})).await;
    cache.store(&other, &e2, &json!({})).await;

    let (hit, tier) = cache.lookup(&key).await.expect("stored");
    assert_eq!((hit.wav.clone(), tier), (e1.wav.clone(), "memory"));
    assert_eq!(
        found_in(disk_only.clone(), key).await,
        Some((e1.wav.clone(), "disk"))
    );
    assert_eq!(
        found_in(redis_only.clone(), key).await,
        Some((e1.wav.clone(), "redis"))
    );
    assert!(on_disk(disk.path(), &key.hex()));

    assert!(cache.purge(&key).await, "purge reports that an entry was there");
    assert!(cache.lookup(&key).await.is_none(), "gone from every tier");
    assert_eq!(found_in(disk_only.clone(), key).await, None);
    assert_eq!(found_in(redis_only.clone(), key).await, None);
    assert!(!on_disk(disk.path(), &key.hex()));
    assert!(!cache.purge(&key).await, "nothing left to purge");
    // The other entry is untouched.
    assert_eq!(
        cache.lookup(&other).await.map(|(h, _)| h.wav),
        Some(e2.wav.clone())
    );

    // purge_all empties every tier, including entries another instance stored.
    let writer = Cache::open(&full).await.expect("a second instance");
    let third = CacheKey([0xa5; 32]);
    writer.store(&third, &e1, &json!({})).await;
    cache.purge_all().await;
    for k in [key, other, third] {
        assert!(cache.lookup(&k).await.is_none(), "{k} after purge_all");
        assert_eq!(found_in(disk_only.clone(), k).await, None, "{k} on disk");
        assert_eq!(found_in(redis_only.clone(), k).await, None, "{k} in Redis");
    }
    let leftovers: Vec<_> = walk(disk.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "entry"))
        .collect();
    assert!(leftovers.is_empty(), "files left after purge_all: {leftovers:?}");
    // The cache still works afterwards.
    cache.store(&key, &e1, &json!({})).await;
    assert!(cache.lookup(&key).await.is_some());
}

#[tokio::test]
async fn a_miss_is_looked_up_once_and_its_joiners_need_no_store() {
    let disk = tempfile::tempdir().expect("temp dir");
    let cache = std::sync::Arc::new(
        Cache::open(&conf(&format!(
            "{{ ttl: 1h, memory: {{ max: 1MiB }}, disk: {{ path: {} }} }}",
            disk.path().display()
        )))
        .await
        .expect("open the cache"),
    );
    let counted = |tier: &str| {
        cosygate::metrics::CACHE_REQUESTS
            .with_label_values(&[tier, "miss"])
            .get()
    };
    let (memory, on_disk_before) = (counted("memory"), counted("disk"));
    let key = CacheKey([0x3c; 32]);
    let e = entry(7);
    let made = Synthesized {
        wav: e.wav.clone(),
        source: Source::Backend("127.0.0.1:9".parse().expect("addr")),
        degraded: false,
        created: e.created,
        key: None,
        approximate: None,
    };
    let miss = cache
        .get_or_synthesize(key, json!({}), |_| async move { Ok((made, true)) }, None)
        .await
        .expect("synthesized");
    assert_eq!(miss.source, Source::Backend("127.0.0.1:9".parse().expect("addr")));
    assert_eq!(miss.key, Some(key));
    assert_eq!(
        (counted("memory") - memory, counted("disk") - on_disk_before),
        (1, 1),
        "one lookup per tier for one miss"
    );
    // Whatever the store's progress, an identical request is answered from that synthesis.
    let again = cache
        .get_or_synthesize(
            key,
            json!({}),
            |_| async { Err(cosygate::synth::SynthError::Internal("synthesized twice".into())) },
            None,
        )
        .await
        .expect("answered from the first synthesis");
    assert_eq!(again.wav, e.wav);
    assert!(
        matches!(again.source, Source::Tier("memory") | Source::InFlight),
        "{:?}",
        again.source
    );
    // And the store catches up: the entry reaches the disk.
    stored(disk.path(), &key.hex()).await;
}
