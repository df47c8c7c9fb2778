//! The fallback voice (espeak-ng): it answers when no backend can, its audio is cached only
//! with `fallback_cache: true`, joiners are marked degraded too, and without a fallback no
//! backend is a JSON 503.

use crate::common::gateway::{eventually, free_port, pool_yaml, Gateway};
use crate::common::sim::Sim;
use crate::support::{health, post, sft, FAST};
use std::net::SocketAddr;
use std::time::Duration;

const ESPEAK: &str =
    "  fallback:\n    command: [\"espeak-ng\", \"-v\", \"en-us\", \"-w\", \"{out}\", \"--stdin\"]\n";

async fn wait_health(gw: &Gateway, status: u16, word: &str) {
    eventually(Duration::from_secs(10), "every backend marked down", || async {
        let (s, v) = health(gw).await;
        s == status && v["status"] == word && v["backends_healthy"] == 0
    })
    .await;
}

#[tokio::test]
async fn the_fallback_voice_answers_when_no_backend_can_and_is_not_cached() {
    let (a, b) = (Sim::start(FAST), Sim::start(FAST));
    let gw = Gateway::start(&format!(
        "  cache: {{ ttl: 1h }}\n{ESPEAK}{}",
        pool_yaml("cosyvoice_fastapi", &[a.addr(), b.addr()], "")
    ));
    let real = post(&gw, &sft("Cached from a real backend."), &[]).await;
    real.wav(24000);
    assert_eq!(real.header("x-cache"), Some("MISS"));
    assert_eq!(real.header("x-degraded"), None);

    a.kill();
    b.kill();
    // Every attempt fails (connection refused) before the health checks notice: fallback.
    let body = sft("Hello from the fallback voice.");
    let first = post(&gw, &body, &[]).await;
    first.wav(22050);
    assert_eq!(first.header("x-degraded"), Some("fallback"));
    assert_eq!(first.header("x-cache"), Some("MISS"));

    // Every backend down, and /health still says ok because the fallback can serve.
    wait_health(&gw, 200, "ok").await;
    let again = post(&gw, &body, &[]).await;
    again.wav(22050);
    assert_eq!(again.header("x-degraded"), Some("fallback"));
    assert_eq!(
        again.header("x-cache"),
        Some("MISS"),
        "fallback audio is not cached"
    );
    // Audio cached from a real backend is still served, before any fallback.
    let hit = post(&gw, &sft("Cached from a real backend."), &[]).await;
    assert_eq!(hit.wav(24000), real.wav(24000));
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(hit.header("x-degraded"), None);
}

#[tokio::test]
async fn fallback_audio_is_cached_only_with_fallback_cache_true() {
    let dead = [
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    ];
    let disk = tempfile::tempdir().expect("temp dir");
    let conf = format!(
        "  cache: {{ ttl: 1h, disk: {{ path: {} }} }}\n{ESPEAK}    cache: true\n{}",
        disk.path().display(),
        pool_yaml("cosyvoice_fastapi", &dead, "")
    );
    let gw = Gateway::start(&conf);
    wait_health(&gw, 200, "ok").await;
    let body = sft("Cache the robot voice.");
    let first = post(&gw, &body, &[]).await;
    first.wav(22050);
    assert_eq!(first.header("x-degraded"), Some("fallback"));
    assert_eq!(first.header("x-cache"), Some("MISS"));
    let second = post(&gw, &body, &[]).await;
    assert_eq!(second.wav(22050), first.wav(22050));
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(
        second.header("x-degraded"),
        Some("fallback"),
        "a cached fallback answer says so"
    );
    // From the disk tier too, after a restart (the entry is stored after the first answer).
    eventually(Duration::from_secs(5), "the entry on disk", || {
        std::future::ready(has_entry_file(disk.path()))
    })
    .await;
    drop(gw);
    let gw = Gateway::start(&conf);
    wait_health(&gw, 200, "ok").await;
    let third = post(&gw, &body, &[]).await;
    assert_eq!(third.wav(22050), first.wav(22050));
    assert_eq!(third.header("x-cache-tier"), Some("disk"));
    assert_eq!(third.header("x-degraded"), Some("fallback"));
}

/// Whether a disk cache directory holds an entry file.
fn has_entry_file(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).into_iter().flatten().flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            has_entry_file(&p)
        } else {
            p.extension().is_some_and(|x| x == "entry")
        }
    })
}

#[tokio::test]
async fn identical_requests_that_join_a_fallback_synthesis_are_marked_degraded_too() {
    let dead = [
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    ];
    // A slow fallback voice, so the identical requests join the first one's synthesis.
    let slow = "  fallback:\n    command: [\"sh\", \"-c\", \"sleep 0.5; exec espeak-ng -v en-us -w \\\"$0\\\" --stdin\", \"{out}\"]\n";
    let gw = Gateway::start(&format!(
        "  cache: {{ ttl: 1h }}\n{slow}{}",
        pool_yaml("cosyvoice_fastapi", &dead, "")
    ));
    wait_health(&gw, 200, "ok").await;
    let body = sft("Everyone hears the robot voice.");
    let answers = futures_util::future::join_all((0..4).map(|_| post(&gw, &body, &[]))).await;
    let mut caches: Vec<_> = answers
        .iter()
        .map(|r| {
            r.wav(22050);
            assert_eq!(r.header("x-degraded"), Some("fallback"), "joined or not");
            (r.header("x-cache"), r.header("x-cache-tier"))
        })
        .collect();
    caches.sort();
    assert_eq!(
        caches,
        [
            (Some("HIT"), Some("inflight")),
            (Some("HIT"), Some("inflight")),
            (Some("HIT"), Some("inflight")),
            (Some("MISS"), None)
        ],
        "one synthesis, three joined"
    );
}

#[tokio::test]
async fn without_a_fallback_no_backend_is_a_json_503() {
    let dead = [
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    ];
    let gw = Gateway::start(&pool_yaml("cosyvoice_fastapi", &dead, ""));
    wait_health(&gw, 503, "unavailable").await;
    let r = post(&gw, &sft("Nobody can say this."), &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.code(), "no_backend_available");
    assert!(r.retry_after() >= 1);
    assert_eq!(r.header("x-degraded"), None);
}
