//! The Redis tier: two instances sharing audio and one synthesis, requests going on when Redis
//! goes away, and the Redis lock helper both the cache and the supervisor use.

use crate::common::gateway::Gateway;
use crate::common::redis::Redis;
use crate::common::sim::Sim;
use crate::support::{cached, client, requests, send, send_to, sft, FAST, SLOW};
use std::time::{Duration, Instant};

fn redis_cached(sim: &Sim, redis: &Redis) -> String {
    cached(
        sim,
        &format!(
            "{{ memory: {{ max: 64MiB }}, redis: {{ url: \"{}\", timeout: 200ms }} }}",
            redis.url()
        ),
    )
}

#[tokio::test]
async fn instances_share_audio_and_one_synthesis_through_redis() {
    let redis = Redis::start();
    let (sim_a, sim_b) = (Sim::start(SLOW), Sim::start(SLOW));
    let gw_a = Gateway::start(&redis_cached(&sim_a, &redis));
    let gw_b = Gateway::start(&redis_cached(&sim_b, &redis));

    let body = sft("Shared between instances.");
    let a = send(&gw_a, &body, &[]).await;
    a.expect("MISS");
    assert_eq!(requests(&sim_a).await, 1);
    let b = send(&gw_b, &body, &[]).await;
    b.expect("HIT");
    assert_eq!((b.key.clone(), b.body.clone()), (a.key.clone(), a.body.clone()));
    assert_eq!(requests(&sim_b).await, 0, "instance B used A's synthesis");

    // 10 concurrent identical requests split across both instances: one backend call in all.
    let body = sft("Ten students on two instances.");
    let c = client();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let url = if i % 2 == 0 {
                gw_a.url("/generate")
            } else {
                gw_b.url("/generate")
            };
            let (c, body) = (c.clone(), body.clone());
            tokio::spawn(async move { send_to(&c, &url, &body, &[]).await })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.expect("task"));
    }
    let calls = requests(&sim_a).await + requests(&sim_b).await;
    assert_eq!(calls, 2, "the first request, then one backend call for the 10");
    let misses = replies.iter().filter(|r| r.cache == "MISS").count();
    assert_eq!(
        misses,
        1,
        "{:?}",
        replies.iter().map(|r| &r.cache).collect::<Vec<_>>()
    );
    for r in &replies {
        r.expect(if r.cache == "MISS" { "MISS" } else { "HIT" });
        assert_eq!((&r.body, &r.key), (&replies[0].body, &replies[0].key));
    }
}

#[tokio::test]
async fn requests_go_on_when_redis_goes_away() {
    let mut redis = Redis::start();
    let sim = Sim::start(FAST);
    let gw = Gateway::start(&redis_cached(&sim, &redis));
    let warm = sft("Stored while Redis was up.");
    send(&gw, &warm, &[]).await.expect("MISS");
    send(&gw, &warm, &[]).await.expect("HIT");

    redis.stop();
    // Each Redis call is bounded by its 200 ms timeout; a request makes a handful at most.
    let bound = Duration::from_secs(3);
    let body = sft("Asked while Redis is down.");
    for (n, expected) in [(2, "MISS"), (2, "HIT"), (2, "HIT")] {
        let started = Instant::now();
        let r = send(&gw, &body, &[]).await;
        let took = started.elapsed();
        r.expect(expected);
        assert!(took < bound, "{expected} took {took:?} with Redis down");
        assert_eq!(requests(&sim).await, n);
    }
    let started = Instant::now();
    send(&gw, &warm, &[]).await.expect("HIT");
    assert!(started.elapsed() < bound);
    assert_eq!(requests(&sim).await, 2);
}

// ---------------------------------------------------------------------------------------------
// The Redis lock helper both the cache and the supervisor use

#[tokio::test]
async fn a_redis_lock_is_released_only_by_its_token() {
    use cosygate::redis_link::RedisLink;
    use cosygate::redis_lock::{self, LockAttempt, Release};
    let redis = Redis::start();
    let link = RedisLink::new(&redis.url(), Duration::from_millis(500), "test").expect("link");
    let key = "cosygate:lock:test";
    let (mine, theirs) = (redis_lock::new_token(), redis_lock::new_token());
    let hold = Duration::from_secs(30);

    assert_eq!(
        redis_lock::acquire(&link, key, &mine, hold).await,
        LockAttempt::Acquired
    );
    assert_eq!(
        redis_lock::acquire(&link, key, &theirs, hold).await,
        LockAttempt::Held
    );
    assert!(
        !redis_lock::release(&link, key, &theirs, Release::Now).await,
        "not their lock"
    );
    assert_eq!(redis_lock::is_held(&link, key).await, Some(true));
    assert!(redis_lock::release(&link, key, &mine, Release::Now).await);
    assert_eq!(redis_lock::is_held(&link, key).await, Some(false));

    // Released with a delay: still held (from others) for that long, then gone.
    assert_eq!(
        redis_lock::acquire(&link, key, &theirs, hold).await,
        LockAttempt::Acquired
    );
    let keep = Duration::from_millis(300);
    assert!(redis_lock::release(&link, key, &theirs, Release::After(keep)).await);
    assert_eq!(
        redis_lock::acquire(&link, key, &mine, hold).await,
        LockAttempt::Held
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis_lock::is_held(&link, key).await != Some(false) {
        assert!(Instant::now() < deadline, "the lock did not expire");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        redis_lock::acquire(&link, key, &mine, hold).await,
        LockAttempt::Acquired
    );

    // Redis gone: the attempt says so.
    drop(redis);
    assert_eq!(
        redis_lock::acquire(&link, "cosygate:lock:other", &mine, hold).await,
        LockAttempt::Unavailable
    );
}
