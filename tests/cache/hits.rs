//! What `X-Cache` says and what the backend counts: a MISS then a HIT with the same bytes,
//! `no-store` bypassing without storing, no cache section meaning BYPASS, 20 identical concurrent
//! requests making one backend call, and failed syntheses never cached.

use crate::common::gateway::{pool_yaml, Gateway};
use crate::common::sim::Sim;
use crate::support::{cached, client, requests, send, send_to, sft, FAST, SLOW};

#[tokio::test]
async fn miss_then_hit_and_no_store_bypasses_without_storing() {
    let sim = Sim::start(FAST);
    let gw = Gateway::start(&cached(&sim, "{}"));
    let body = sft("The first lesson starts now.");

    let miss = send(&gw, &body, &[]).await;
    miss.expect("MISS");
    assert_eq!(requests(&sim).await, 1, "a MISS is one backend call");

    let hit = send(&gw, &body, &[]).await;
    hit.expect("HIT");
    assert_eq!(hit.body, miss.body, "a HIT is the exact bytes of the MISS");
    assert_eq!(hit.key, miss.key);
    assert!(
        hit.age.unwrap() <= 5,
        "Age counts seconds since synthesis: {:?}",
        hit.age
    );
    assert_eq!(requests(&sim).await, 1, "a HIT makes no backend call");

    // no-store: synthesized again, not looked up, not stored.
    let bypass = send(&gw, &body, &[("Cache-Control", "no-store")]).await;
    bypass.expect("BYPASS");
    assert_eq!(bypass.body, miss.body, "the sim is deterministic");
    assert_eq!(requests(&sim).await, 2, "a BYPASS is a backend call");
    // ...also as one directive among several.
    send(&gw, &body, &[("Cache-Control", "max-age=0, no-store")])
        .await
        .expect("BYPASS");
    assert_eq!(requests(&sim).await, 3);

    let again = send(&gw, &body, &[]).await;
    again.expect("HIT");
    assert_eq!(
        (again.body.clone(), again.key.clone()),
        (miss.body.clone(), miss.key.clone())
    );
    assert_eq!(requests(&sim).await, 3, "the original entry is still served");

    // A no-store on a new text stores nothing: the next normal request is a MISS.
    let fresh = sft("A text nobody asked for before.");
    send(&gw, &fresh, &[("Cache-Control", "no-store")])
        .await
        .expect("BYPASS");
    assert_eq!(requests(&sim).await, 4);
    let after = send(&gw, &fresh, &[]).await;
    after.expect("MISS");
    assert_eq!(requests(&sim).await, 5);
    assert_ne!(after.key, miss.key);
    send(&gw, &fresh, &[]).await.expect("HIT");
    assert_eq!(requests(&sim).await, 5);
}

#[tokio::test]
async fn without_a_cache_section_every_answer_is_a_bypass() {
    let sim = Sim::start(FAST);
    let gw = Gateway::start(&pool_yaml("cosyvoice_fastapi", &[sim.addr()], ""));
    let body = sft("No cache here.");
    for n in 1..=2 {
        let r = send(&gw, &body, &[]).await;
        r.expect("BYPASS");
        assert_eq!(r.key, None, "no key without a cache");
        assert_eq!(requests(&sim).await, n);
    }
}

#[tokio::test]
async fn concurrent_identical_requests_make_one_backend_call() {
    let sim = Sim::start(SLOW);
    let gw = Gateway::start(&cached(&sim, "{}"));
    let body = sft("Twenty students press play at once.");
    let url = gw.url("/generate");
    let c = client();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (c, url, body) = (c.clone(), url.clone(), body.clone());
            tokio::spawn(async move { send_to(&c, &url, &body, &[]).await })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.expect("task"));
    }
    assert_eq!(
        requests(&sim).await,
        1,
        "one backend call for 20 identical requests"
    );
    let misses = replies.iter().filter(|r| r.cache == "MISS").count();
    assert_eq!(
        misses,
        1,
        "exactly one MISS: {:?}",
        replies.iter().map(|r| &r.cache).collect::<Vec<_>>()
    );
    for r in &replies {
        r.expect(if r.cache == "MISS" { "MISS" } else { "HIT" });
        assert_eq!((&r.body, &r.key), (&replies[0].body, &replies[0].key));
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Errors are not cached

#[tokio::test]
async fn failed_syntheses_are_not_cached() {
    let sim = Sim::start(FAST);
    // No retry: the one backend's failure is the answer.
    let gw = Gateway::start(&format!(
        "  cache: {{}}\n{}",
        pool_yaml(
            "cosyvoice_fastapi",
            &[sim.addr()],
            "      retry: { attempts: 0 }\n"
        )
    ));

    for (n, kind) in ["error500", "truncate"].into_iter().enumerate() {
        let body = sft(&format!("This synthesis fails first ({kind})."));
        let calls = 2 * n as u64;
        sim.fault(kind, 1).await;
        let failed = send(&gw, &body, &[]).await;
        assert_eq!(
            (failed.status, failed.code.as_deref()),
            (502, Some("backend_failed")),
            "{kind}: {failed:?}"
        );
        assert_eq!(requests(&sim).await, calls + 1);
        let r = send(&gw, &body, &[]).await;
        r.expect("MISS");
        assert_eq!(
            requests(&sim).await,
            calls + 2,
            "{kind}: the failure was not cached"
        );
        send(&gw, &body, &[]).await.expect("HIT");
        assert_eq!(requests(&sim).await, calls + 2);
    }
}
