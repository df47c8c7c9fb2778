//! What outlives a process: the voice directory across a restart, and Redis shared by two
//! instances (a flush heals, an outage keeps serving from disk).

use crate::common::gateway::Gateway;
use crate::common::metrics::{scrape, sum};
use crate::common::redis::Redis;
use crate::common::sim::{test_wav, Sim};
use crate::support::*;
use serde_json::json;

#[tokio::test]
async fn voices_survive_a_restart() {
    let sim = Sim::start(FAST);
    let dir = tempfile::tempdir().expect("dir");
    let conf = config(&sim, &voices_at(dir.path(), ""), "");
    let wav = test_wav(1.0, 16000);
    let mut gw = Gateway::start(&conf);
    assert_eq!(
        register(&gw, Some(TOKEN_A), "anna", &wav, TRANSCRIPT)
            .await
            .status,
        201
    );
    gw.kill9();
    let admin_port = crate::common::gateway::free_port();
    let gw = Gateway::start(&conf.replace(
        "  voices:",
        &format!("  admin: {{ addr: 127.0.0.1:{admin_port} }}\n  voices:"),
    ));
    assert_eq!(names(&list(&gw, Some(TOKEN_A)).await), ["anna"]);
    let samples = scrape(admin_port).await;
    assert_eq!(
        sum(&samples, "cosygate_voices", &[]),
        1.0,
        "loaded from the directory"
    );
    assert_eq!(sum(&samples, "cosygate_voice_bytes", &[]), wav.len() as f64);
    let r = generate(
        &gw,
        Some(TOKEN_A),
        json!({"text": "After the restart.", "voice_id": "anna"}),
    )
    .await;
    assert_eq!((r.status, r.cache.as_str()), (200, "MISS"), "{:?}", r.json);
    assert_eq!(requests(&sim).await, 1);
}

#[tokio::test]
async fn instances_share_voices_through_redis() {
    let redis = Redis::start();
    let sim = Sim::start(FAST);
    let pair = Instances::new(&redis);
    let (gw_a, gw_b) = (pair.start(&sim, A), pair.start(&sim, B));
    let wav = test_wav(1.0, 16000);
    let id = sha256_hex(&wav);

    assert_eq!(
        register(&gw_a, Some(TOKEN_A), "anna", &wav, TRANSCRIPT)
            .await
            .status,
        201
    );
    assert_eq!(
        names(&list(&gw_b, Some(TOKEN_A)).await),
        ["anna"],
        "B knows A's voice"
    );
    assert!(
        names(&list(&gw_b, Some(TOKEN_B)).await).is_empty(),
        "per tenant in Redis too"
    );
    let on_b = generate(
        &gw_b,
        Some(TOKEN_A),
        json!({"text": "Used on B.", "voice_id": id}),
    )
    .await;
    assert_eq!(on_b.status, 200, "{:?}", on_b.json);
    let inline = json!({"text": "Used on B.", "prompt_audio": b64(&wav), "prompt_text": TRANSCRIPT});
    let on_a = generate(&gw_a, Some(TOKEN_A), inline).await;
    assert_eq!(
        (on_a.key.as_str(), on_a.bytes.clone()),
        (on_b.key.as_str(), on_b.bytes.clone())
    );

    // Deleted through B: gone on A as well, file included.
    assert_eq!(delete(&gw_b, Some(TOKEN_A), "anna").await.status, 204);
    assert!(names(&list(&gw_a, Some(TOKEN_A)).await).is_empty());
    let after = generate(
        &gw_a,
        Some(TOKEN_A),
        json!({"text": "Used on A.", "voice_id": id}),
    )
    .await;
    assert_eq!((after.status, after.code()), (422, "unknown_voice"));
    // Restarted, A does not bring it back from its directory.
    drop(gw_a);
    let gw_a = pair.start(&sim, A);
    assert!(names(&list(&gw_a, Some(TOKEN_A)).await).is_empty());
    assert!(names(&list(&gw_b, Some(TOKEN_A)).await).is_empty());
}

/// FLUSHALL on the test's Redis.
/// The cache section's Redis tier, which voices share too.
/// Instance A's and instance B's index in [`Instances`].
const A: usize = 0;
const B: usize = 1;

/// Two gateway instances, each with a voice directory of its own, sharing one Redis.
struct Instances {
    dirs: [tempfile::TempDir; 2],
    redis_conf: String,
}

impl Instances {
    fn new(redis: &Redis) -> Self {
        Self {
            dirs: [0, 1].map(|_| tempfile::tempdir().expect("dir")),
            redis_conf: format!(", redis: {{ url: \"{}\", timeout: 500ms }}", redis.url()),
        }
    }

    /// Starts (or restarts) instance `which` on its directory.
    fn start(&self, sim: &Sim, which: usize) -> Gateway {
        Gateway::start(&config(
            sim,
            &voices_at(self.dirs[which].path(), ""),
            &self.redis_conf,
        ))
    }
}

async fn flush(redis: &Redis) {
    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
    let () = redis::cmd("FLUSHALL")
        .query_async(&mut conn)
        .await
        .expect("FLUSHALL");
}

#[tokio::test]
async fn voices_outlive_a_redis_flush_and_an_outage() {
    let mut redis = Redis::start();
    let sim = Sim::start(FAST);
    let pair = Instances::new(&redis);
    let (gw_a, gw_b) = (pair.start(&sim, A), pair.start(&sim, B));
    let wav = test_wav(1.0, 16000);
    assert_eq!(
        register(&gw_a, Some(TOKEN_A), "anna", &wav, TRANSCRIPT)
            .await
            .status,
        201
    );

    // Redis loses everything: A still has the voice in its directory and shares it again.
    flush(&redis).await;
    assert!(names(&list(&gw_b, Some(TOKEN_A)).await).is_empty());
    assert_eq!(names(&list(&gw_a, Some(TOKEN_A)).await), ["anna"]);
    assert_eq!(names(&list(&gw_b, Some(TOKEN_A)).await), ["anna"], "shared again");

    // Redis away: A serves and registers from its directory; a delete is refused, since the
    // voice would come back from Redis.
    redis.stop();
    let r = generate(
        &gw_a,
        Some(TOKEN_A),
        json!({"text": "Redis is away.", "voice_id": "anna"}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    assert_eq!(
        register(&gw_a, Some(TOKEN_A), "bob", &test_wav(1.01, 16000), TRANSCRIPT)
            .await
            .status,
        201
    );
    assert_eq!(names(&list(&gw_a, Some(TOKEN_A)).await), ["anna", "bob"]);
    let refused = delete(&gw_a, Some(TOKEN_A), "anna").await;
    assert_eq!((refused.status, refused.code()), (503, "voice_store_unavailable"));
    assert_eq!(names(&list(&gw_a, Some(TOKEN_A)).await), ["anna", "bob"]);
}
