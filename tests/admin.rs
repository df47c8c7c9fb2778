//! The admin plane through the real binaries: a scripted run (misses, hits, a 429, a backend
//! failure, a crash and the supervisor's restart) whose scraped metrics equal what the test
//! sent, counts not presence; every access-log line of the run parses as JSON with every field;
//! the admin token (Bearer and Basic), `/admin/backends`, purge, and `X-Request-Id`.

mod common;

use common::gateway::{check_config, free_port, Gateway};
use common::metrics::{parse_metrics, sum, Sample};
use common::scripted_sim::ScriptedSim;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const ADMIN_TOKEN: &str = "admin-secret-for-tests";
const USER_TOKEN: &str = "school-a-token";

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

struct Admin {
    base: String,
    http: reqwest::Client,
}

impl Admin {
    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("the admin listener answers")
    }

    async fn metrics(&self) -> Vec<Sample> {
        let resp = self.get("/metrics").await;
        assert_eq!(resp.status(), 200);
        parse_metrics(&resp.text().await.expect("metrics text"))
    }

    async fn backends(&self) -> Value {
        self.get("/admin/backends")
            .await
            .json()
            .await
            .expect("backends JSON")
    }

    async fn purge(&self, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}/admin/cache/purge", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("purge answers")
    }
}

/// What one `/generate` answered.
struct Answer {
    status: u16,
    cache: String,
    request_id: String,
    key: String,
    seconds: f64,
}

async fn generate(gw: &Gateway, text: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = reqwest::Client::new()
        .post(gw.url("/generate"))
        .json(&json!({"text": text, "mode": "sft", "spk_id": "中文女"}))
        .timeout(Duration::from_secs(30));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("the gateway answers");
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (status, cache, request_id, key) = (
        resp.status().as_u16(),
        header("x-cache"),
        header("x-request-id"),
        header("x-cache-key"),
    );
    let body = resp.bytes().await.expect("a body");
    let seconds = if status == 200 {
        cosygate_wav::parse_wav(&body).expect("a WAV").duration_secs()
    } else {
        0.0
    };
    Answer {
        status,
        cache,
        request_id,
        key,
        seconds,
    }
}

fn gateway(sim: &ScriptedSim, admin_port: u16) -> Gateway {
    Gateway::start(&format!(
        "  admin: {{ addr: 127.0.0.1:{admin_port}, token_sha256: \"{admin}\" }}\n\
         \x20 auth:\n    allow_anonymous: true\n    tokens:\n      - {{ name: school-a, sha256: \"{user}\", tenant: school-a, rate_limit: {{ capacity: 1, refill: 1, per: 1h }} }}\n\
         \x20 rate_limit:\n    per_ip: {{ capacity: 1000, refill: 1000, per: 1m }}\n\
         \x20 cache:\n    memory: {{ max: 64MiB }}\n\
         \x20 pools:\n    cosyvoice:\n      protocol: cosyvoice_fastapi\n      speakers: [中文女]\n\
         \x20     health: {{ interval: 200ms, timeout: 500ms, unhealthy_after: 1, healthy_after: 1 }}\n\
         \x20     retry: {{ attempts: 0 }}\n      backends:\n        - addr: {addr}\n\
         \x20         restart: {{ command: {command}, after_failures: 2, cooldown: 300ms, warmup: 300ms, timeout: 5s }}\n",
        admin = digest(ADMIN_TOKEN),
        user = digest(USER_TOKEN),
        addr = sim.addr,
        command = sim.command_yaml(),
    ))
}

#[tokio::test]
async fn a_scripted_run_is_counted_exactly_and_logged_line_by_line() {
    let sim = ScriptedSim::start();
    sim.wait_up().await;
    let admin_port = free_port();
    let gw = gateway(&sim, admin_port);
    let admin = Admin {
        base: format!("http://127.0.0.1:{admin_port}"),
        http: reqwest::Client::new(),
    };
    let backend = sim.addr.to_string();
    let bearer = format!("Bearer {USER_TOKEN}");

    // 1. Three misses; the first with a client-chosen request id, which reaches the backend.
    let mut backend_seconds = 0.0;
    let mut first_key = String::new();
    for (i, text) in ["Admin run one.", "Admin run two, longer.", "Admin run three."]
        .iter()
        .enumerate()
    {
        let headers: &[(&str, &str)] = if i == 0 {
            &[("X-Request-Id", "scripted-run.1")]
        } else {
            &[]
        };
        let a = generate(&gw, text, headers).await;
        assert_eq!((a.status, a.cache.as_str()), (200, "MISS"));
        backend_seconds += a.seconds;
        if i == 0 {
            assert_eq!(a.request_id, "scripted-run.1", "a sane X-Request-Id is echoed");
            let last: Value = reqwest::get(sim.url("/__sim/last"))
                .await
                .expect("last")
                .json()
                .await
                .expect("json");
            assert_eq!(last["request_id"], "scripted-run.1", "and sent to the backend");
            first_key = a.key;
        }
    }
    // 2. Two hits, and an insane request id replaced by the gateway's own.
    let mut cache_seconds = 0.0;
    for (text, id) in [("Admin run one.", "bad id!"), ("Admin run two, longer.", "")] {
        let headers: &[(&str, &str)] = if id.is_empty() {
            &[]
        } else {
            &[("X-Request-Id", id)]
        };
        let a = generate(&gw, text, headers).await;
        assert_eq!((a.status, a.cache.as_str()), (200, "HIT"));
        assert!(a.request_id.len() == 32 && a.request_id.bytes().all(|b| b.is_ascii_hexdigit()));
        cache_seconds += a.seconds;
    }
    // 3. The tenant's token: one hit, then 429 from its one-token bucket.
    let a = generate(&gw, "Admin run three.", &[("Authorization", &bearer)]).await;
    assert_eq!((a.status, a.cache.as_str()), (200, "HIT"));
    cache_seconds += a.seconds;
    assert_eq!(
        generate(&gw, "Admin run three.", &[("Authorization", &bearer)])
            .await
            .status,
        429
    );
    // 4. A backend failure (no retry configured): 502.
    sim.fault("error500", 1).await;
    assert_eq!(generate(&gw, "Admin run four fails.", &[]).await.status, 502);
    // 5. A crash: the supervisor restarts the backend; then one more miss.
    let old_pid = sim.pid().expect("pid");
    let _ = std::process::Command::new("kill")
        .arg("-9")
        .arg(&old_pid)
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = admin.backends().await;
        let row = &rows[0];
        let back = row["supervisor"] == "ok" || row["supervisor"] == "warming";
        if row["restarts"] == 1 && row["healthy"] == true && back && sim.pid().is_some_and(|p| p != old_pid) {
            assert_eq!(row["addr"], backend);
            assert_eq!(row["pool"], "cosyvoice");
            assert_eq!(row["max_concurrency"], 8);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no restart within 20 s: {rows}\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = generate(&gw, "Admin run five, after the restart.", &[]).await;
    assert_eq!((a.status, a.cache.as_str()), (200, "MISS"));
    backend_seconds += a.seconds;

    let m = admin.metrics().await;
    let anon = [("pool", "cosyvoice"), ("tenant", "anonymous")];
    let count = |name: &str, labels: &[(&str, &str)]| sum(&m, name, labels);
    assert_eq!(
        count(
            "cosygate_requests_total",
            &[anon[0], anon[1], ("status_class", "2xx")]
        ),
        6.0
    );
    assert_eq!(
        count(
            "cosygate_requests_total",
            &[anon[0], anon[1], ("status_class", "5xx")]
        ),
        1.0
    );
    let tenant = [("pool", "cosyvoice"), ("tenant", "school-a")];
    assert_eq!(
        count(
            "cosygate_requests_total",
            &[tenant[0], tenant[1], ("status_class", "2xx")]
        ),
        1.0
    );
    assert_eq!(
        count(
            "cosygate_requests_total",
            &[tenant[0], tenant[1], ("status_class", "4xx")]
        ),
        1.0
    );
    assert_eq!(count("cosygate_rate_limited_total", &[]), 1.0);
    assert_eq!(
        count("cosygate_rejected_total", &[("reason", "rate_limited")]),
        1.0
    );
    assert_eq!(count("cosygate_cache_hits_total", &[]), 3.0);
    assert_eq!(count("cosygate_cache_lookups_total", &[]), 8.0);
    assert_eq!(
        count(
            "cosygate_cache_requests_total",
            &[("tier", "memory"), ("result", "hit")]
        ),
        3.0
    );
    let duration = "cosygate_request_duration_milliseconds_count";
    assert_eq!(
        count(
            duration,
            &[("route", "/generate"), ("status", "200"), ("cache", "MISS")]
        ),
        4.0
    );
    assert_eq!(
        count(
            duration,
            &[("route", "/generate"), ("status", "200"), ("cache", "HIT")]
        ),
        3.0
    );
    assert_eq!(count(duration, &[("route", "/generate"), ("status", "429")]), 1.0);
    assert_eq!(count(duration, &[("route", "/generate"), ("status", "502")]), 1.0);
    assert_eq!(
        count(
            "cosygate_backend_error_count",
            &[("backend", &backend), ("kind", "status_5xx")]
        ),
        1.0
    );
    assert_eq!(
        count(
            "cosygate_backend_restarts_total",
            &[("backend", &backend), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        count("cosygate_queue_wait_milliseconds_count", &[("pool", "cosyvoice")]),
        5.0
    );
    assert_eq!(
        count(
            "cosygate_backend_duration_milliseconds_count",
            &[("pool", "cosyvoice")]
        ),
        4.0
    );
    let audio = |source| {
        count(
            "cosygate_audio_seconds_total",
            &[("pool", "cosyvoice"), ("source", source)],
        )
    };
    assert!(
        (audio("backend") - backend_seconds).abs() < 1e-6,
        "{} vs {backend_seconds}",
        audio("backend")
    );
    assert!(
        (audio("cache") - cache_seconds).abs() < 1e-6,
        "{} vs {cache_seconds}",
        audio("cache")
    );
    assert_eq!(audio("fallback"), 0.0);
    assert!((count("cosygate_cache_hit_ratio", &[]) - 3.0 / 8.0).abs() < 1e-9);
    assert_eq!(count("cosygate_backend_healthy", &[("backend", &backend)]), 1.0);
    assert_eq!(
        count("cosygate_pool_backends_healthy", &[("pool", "cosyvoice")]),
        1.0
    );
    assert_eq!(count("cosygate_circuit_open", &[("backend", &backend)]), 0.0);
    assert_eq!(count("cosygate_concurrent_requests", &[]), 0.0);
    assert_eq!(count("cosygate_bodies_in_flight", &[]), 0.0);
    assert_eq!(count("cosygate_queue_depth", &[("pool", "cosyvoice")]), 0.0);
    assert_eq!(count("cosygate_queue_capacity", &[("pool", "cosyvoice")]), 64.0);

    // Every access line parses, with every field; one per /generate request of the run.
    let fields = [
        "time",
        "request_id",
        "client_ip",
        "peer",
        "tenant",
        "method",
        "route",
        "status",
        "error",
        "cache",
        "cache_tier",
        "degraded",
        "pool",
        "backend",
        "attempts",
        "queue_wait_ms",
        "total_ms",
        "audio_seconds",
        "bytes_in",
        "bytes_out",
    ];
    let log = gw.log();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("access line {l:?}: {e}")))
        .collect();
    for line in &lines {
        for f in fields {
            assert!(line.get(f).is_some(), "access line without {f}: {line}");
        }
    }
    let generates: Vec<&Value> = lines.iter().filter(|l| l["route"] == "/generate").collect();
    assert_eq!(generates.len(), 9, "one line per /generate:\n{log}");
    let ids: HashSet<&str> = generates
        .iter()
        .filter_map(|l| l["request_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 9, "request ids are unique");
    let first = generates
        .iter()
        .find(|l| l["request_id"] == "scripted-run.1")
        .expect("the chosen id is logged");
    assert_eq!(
        (first["cache"].as_str(), first["backend"].as_str()),
        (Some("MISS"), Some(backend.as_str()))
    );
    assert_eq!(
        (first["attempts"].as_u64(), first["status"].as_u64()),
        (Some(1), Some(200))
    );
    assert!(
        first["audio_seconds"].as_f64().is_some_and(|s| s > 0.0) && first["bytes_out"].as_u64() > Some(44)
    );
    assert!(first["bytes_in"].as_u64() > Some(20));
    let limited = generates
        .iter()
        .find(|l| l["status"] == 429)
        .expect("the 429 is logged");
    assert_eq!(
        (limited["tenant"].as_str(), limited["error"].as_str()),
        (Some("school-a"), Some("rate_limited"))
    );
    let failed = generates
        .iter()
        .find(|l| l["status"] == 502)
        .expect("the 502 is logged");
    assert_eq!(
        (failed["error"].as_str(), failed["attempts"].as_u64()),
        (Some("backend_failed"), Some(1))
    );
    assert_eq!(
        generates.iter().filter(|l| l["cache_tier"] == "memory").count(),
        3
    );

    // Purge one key: its next request is a miss again.
    let purged: Value = admin
        .purge(json!({"key": first_key}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(purged["purged"], true);
    assert_eq!(generate(&gw, "Admin run one.", &[]).await.cache, "MISS");
    assert_eq!(admin.purge(json!({"key": "nothex"})).await.status(), 400);
    assert_eq!(
        admin.purge(json!({"key": first_key, "all": true})).await.status(),
        400
    );
    assert_eq!(admin.purge(json!({"all": true})).await.status(), 200);
    assert_eq!(generate(&gw, "Admin run two, longer.", &[]).await.cache, "MISS");
}

#[tokio::test]
async fn the_admin_token_is_required_as_bearer_or_basic() {
    let sim = ScriptedSim::start();
    sim.wait_up().await;
    let admin_port = free_port();
    let _gw = gateway(&sim, admin_port);
    let url = |p: &str| format!("http://127.0.0.1:{admin_port}{p}");
    let http = reqwest::Client::new();
    for path in ["/metrics", "/admin/backends", "/admin/status", "/"] {
        let r = http.get(url(path)).send().await.expect("answers");
        assert_eq!(r.status(), 401, "{path} without a token");
        let challenges: Vec<&str> = r
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert!(
            challenges.iter().any(|c| c.starts_with("Basic"))
                && challenges.iter().any(|c| c.starts_with("Bearer"))
        );
        let wrong = http
            .get(url(path))
            .bearer_auth("wrong")
            .send()
            .await
            .expect("answers");
        assert_eq!(wrong.status(), 401);
        let basic = http
            .get(url(path))
            .basic_auth("anyone", Some(ADMIN_TOKEN))
            .send()
            .await
            .expect("answers");
        assert_eq!(basic.status(), 200, "{path} with Basic");
    }
    let page = http
        .get(url("/"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("page");
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let html = page.text().await.expect("html");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page loads nothing from elsewhere"
    );
    let status: Value = http
        .get(url("/admin/status"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status["backends"][0]["addr"], sim.addr.to_string());
    assert_eq!(status["pools"][0]["queue_capacity"], 64);
    let r = http
        .get(url("/nope"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 404);
    let r = http
        .post(url("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 405);
}

#[test]
fn an_admin_address_shared_with_the_public_one_or_open_without_a_token_is_refused() {
    let head = "threads: 1\ncosygate:\n  listen:\n    - addr: 0.0.0.0:8080\n";
    let pools = "  pools:\n    cosyvoice:\n      protocol: cosyvoice_fastapi\n      backends:\n        - addr: 127.0.0.1:50000\n";
    let (code, out) = check_config(&format!("{head}  admin: {{ addr: 127.0.0.1:8080 }}\n{pools}"));
    assert_ne!(code, 0);
    assert!(
        out.contains("would share the public address 0.0.0.0:8080"),
        "{out}"
    );
    let (code, out) = check_config(&format!("{head}  admin: {{ addr: 0.0.0.0:9090 }}\n{pools}"));
    assert_ne!(code, 0);
    assert!(
        out.contains("reachable from other hosts and has no token_sha256"),
        "{out}"
    );
    let token = digest("t");
    let (code, out) = check_config(&format!(
        "{head}  admin: {{ addr: 0.0.0.0:9090, token_sha256: \"{token}\" }}\n{pools}"
    ));
    assert_eq!(code, 0, "{out}");
}
