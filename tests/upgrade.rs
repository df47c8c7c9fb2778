//! A graceful upgrade under load: while a steady mix runs (cache hits, misses, syntheses of
//! 15 to 30 s, 202 jobs being polled), `scripts/reload.sh` hands the listeners to a new process
//! with one more backend. Zero requests fail, every job is answered with its audio (the new
//! process reads the records the old one wrote while it drained), the old process exits only
//! after its last synthesis, and the new configuration is in force. Also: SIGTERM finishes a
//! synthesis in flight and an idle gateway exits at once; two instances sharing Redis answer
//! for each other's jobs.

mod common;

use common::gateway::free_port;
use common::process::{alive, health_ok, read_pid, reload, text, Processes};
use common::sim::Sim;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FAST: &[&str] = &["--rtf", "0.01", "--first-chunk-ms", "5"];
/// 5 s of synthesis per second of audio: the slow texts below take 15 to 30 s.
const SLOW: &[&str] = &["--rtf", "5", "--first-chunk-ms", "50", "--slots", "16"];

fn config(dir: &Path, port: u16, admin: u16, fast: &[&Sim], slow: &Sim) -> String {
    let fast_list: String = fast
        .iter()
        .map(|s| format!("        - addr: {}\n", s.addr()))
        .collect();
    format!(
        "threads: 2\npid_file: {d}/cosygate.pid\nupgrade_sock: {d}/upgrade.sock\ngrace_period_seconds: 90\n\
         graceful_shutdown_timeout_seconds: 1\ncosygate:\n  listen:\n    - addr: 127.0.0.1:{port}\n\
         \x20 admin: {{ addr: 127.0.0.1:{admin} }}\n\
         \x20 cache:\n    memory: {{ max: 64MiB }}\n    disk: {{ path: {d}/cache }}\n\
         \x20 default_pool: fast\n  pools:\n\
         \x20   fast:\n      protocol: cosyvoice_fastapi\n      speakers: [中文女]\n\
         \x20     health: {{ interval: 200ms, timeout: 2s, unhealthy_after: 1, healthy_after: 1 }}\n\
         \x20     backends:\n{fast_list}\
         \x20   slow:\n      protocol: cosyvoice_fastapi\n      speakers: [中文女]\n      max_concurrency: 8\n\
         \x20     timeout: 60s\n      queue: {{ async_after: 60s }}\n\
         \x20     health: {{ interval: 200ms, timeout: 2s, unhealthy_after: 3, healthy_after: 1 }}\n\
         \x20     backends:\n        - addr: {slow}\n",
        d = dir.display(),
        slow = slow.addr(),
    )
}

/// A client that does not keep a connection idle long enough to meet the old process's exit.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_idle_timeout(Duration::from_millis(500))
        .build()
        .expect("client")
}

fn body(text: &str) -> Value {
    json!({"text": text, "mode": "sft", "spk_id": "中文女"})
}

/// Failures seen by any task, with what they were.
#[derive(Default)]
struct Failures(parking_lot::Mutex<Vec<String>>);

impl Failures {
    fn add(&self, what: String) {
        self.0.lock().push(what);
    }
}

/// Sends `text` to `pool` and checks a complete WAV comes back.
async fn synthesize(http: &reqwest::Client, port: u16, pool: &str, text: &str, failures: &Failures) {
    let sent = http
        .post(format!("http://127.0.0.1:{port}/generate"))
        .header("X-Cosygate-Pool", pool)
        .json(&body(text))
        .send()
        .await;
    match sent {
        Ok(r) if r.status() == 200 => match r.bytes().await {
            Ok(wav) if cosygate_wav::parse_wav(&wav).is_ok() => {}
            Ok(_) => failures.add(format!("{pool} {text:?}: not a WAV")),
            Err(e) => failures.add(format!("{pool} {text:?}: body cut: {e}")),
        },
        Ok(r) => failures.add(format!("{pool} {text:?}: status {}", r.status())),
        Err(e) => failures.add(format!("{pool} {text:?}: {e}")),
    }
}

/// Starts a 202 job on the slow pool and polls it until its audio comes back; its location.
async fn job(
    http: reqwest::Client,
    port: u16,
    text: String,
    failures: Arc<Failures>,
    polls: Arc<AtomicUsize>,
) -> Option<String> {
    let started = http
        .post(format!("http://127.0.0.1:{port}/generate"))
        .header("X-Cosygate-Pool", "slow")
        .header("Prefer", "respond-async")
        .json(&body(&text))
        .send()
        .await;
    let location = match started {
        Ok(r) if r.status() == 202 => r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        Ok(r) => {
            failures.add(format!("job {text:?}: status {}", r.status()));
            return None;
        }
        Err(e) => {
            failures.add(format!("job {text:?}: {e}"));
            return None;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        polls.fetch_add(1, Ordering::Relaxed);
        match http
            .get(format!("http://127.0.0.1:{port}{location}"))
            .send()
            .await
        {
            Ok(r) if r.status() == 202 => {}
            Ok(r) if r.status() == 200 => {
                let wav = r.bytes().await.unwrap_or_default();
                if cosygate_wav::parse_wav(&wav).is_err() {
                    failures.add(format!("job {text:?}: not a WAV"));
                }
                return Some(location);
            }
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                failures.add(format!("job {text:?}: poll status {status}: {body}"));
                return None;
            }
            Err(e) => {
                failures.add(format!("job {text:?}: poll: {e}"));
                return None;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    failures.add(format!("job {text:?}: not done within 90 s"));
    None
}

async fn requests_of(sim: &Sim) -> u64 {
    sim.stats().await["requests"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn an_upgrade_under_load_fails_no_request_and_answers_every_job() {
    let fast_a = Sim::start(FAST);
    let fast_b = Sim::start(FAST);
    let slow = Sim::start(SLOW);
    let dir = tempfile::tempdir().expect("dir");
    let (port, admin) = (free_port(), free_port());
    let conf = dir.path().join("cosygate.yaml");
    std::fs::write(&conf, config(dir.path(), port, admin, &[&fast_a], &slow)).expect("config");
    let mut procs = Processes::start(&conf, dir.path(), port).await;
    let first_pid = procs.first.id();
    let pid_file = procs.pid_file.clone();

    let failures = Arc::new(Failures::default());
    let (stop, sent, polls) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut long = Vec::new();
    let mut jobs = Vec::new();
    // Syntheses of 15 to 30 s (the sim's audio grows with the text), and two 202 jobs.
    for (i, chars) in [50usize, 70, 90].into_iter().enumerate() {
        let (http, failures) = (client(), failures.clone());
        let text = format!("{i} {}", "slow words ".repeat(chars / 11));
        long.push(tokio::spawn(async move {
            synthesize(&http, port, "slow", &text, &failures).await
        }));
    }
    for i in 0..2 {
        let text = format!("job {i} {}", "queued words ".repeat(5));
        jobs.push(tokio::spawn(job(
            client(),
            port,
            text,
            failures.clone(),
            polls.clone(),
        )));
    }
    // Hits (one text) and misses (a new text each time) on the fast pool, back to back.
    let mut loops = Vec::new();
    for kind in ["hit", "miss"] {
        let (http, failures, stop, sent) = (client(), failures.clone(), stop.clone(), sent.clone());
        loops.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let text = if kind == "hit" {
                    "A cached line.".to_string()
                } else {
                    format!("Miss number {n}.")
                };
                synthesize(&http, port, "fast", &text, &failures).await;
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    slow.wait_stats(Duration::from_secs(10), "five slow syntheses running", |s| {
        s["inflight"] == 5
    })
    .await;

    // The reload: one more backend in the fast pool.
    std::fs::write(&conf, config(dir.path(), port, admin, &[&fast_a, &fast_b], &slow)).expect("config");
    let before = sent.load(Ordering::Relaxed);
    let out = tokio::task::spawn_blocking(move || reload(&conf))
        .await
        .expect("reload task");
    assert!(out.status.success(), "reload failed: {}", text(&out));
    let new_pid = read_pid(&pid_file).expect("the new pid");
    assert_ne!(new_pid, first_pid);
    assert!(
        alive(first_pid),
        "the old process still drains its slow syntheses"
    );
    assert!(
        slow.stats().await["inflight"].as_u64() > Some(0),
        "they are still running"
    );

    // The new configuration serves: fast_b gets traffic, the admin plane lists it.
    let b = &fast_b;
    let waited = Instant::now() + Duration::from_secs(20);
    while requests_of(b).await == 0 {
        assert!(Instant::now() < waited, "the new backend got no request");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // For 5 s after SIGQUIT both processes accept (Pingora's hand-over), the admin listener's
    // too: poll until the new process answers it.
    let lists_b = || async {
        let rows: Value = reqwest::get(format!("http://127.0.0.1:{admin}/admin/backends"))
            .await
            .expect("backends")
            .json()
            .await
            .expect("json");
        rows.as_array()
            .is_some_and(|r| r.iter().any(|b| b["addr"] == fast_b.addr().to_string()))
    };
    while !lists_b().await {
        assert!(
            Instant::now() < waited,
            "the admin plane never listed the new backend"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for task in long {
        task.await.expect("a long request's task");
    }
    let mut locations = Vec::new();
    for task in jobs {
        locations.extend(task.await.expect("a job's task"));
    }
    procs
        .exited("the old process exits after its drain", Duration::from_secs(30))
        .await;
    stop.store(true, Ordering::Relaxed);
    for task in loops {
        task.await.expect("a loop's task");
    }
    // Only the new process is left: it answers both jobs from the old one's records.
    for location in &locations {
        let r = client()
            .get(format!("http://127.0.0.1:{port}{location}"))
            .send()
            .await
            .expect("the new process answers");
        assert_eq!(r.status(), 200, "{location} from the new process");
        let wav = r.bytes().await.expect("body");
        assert!(cosygate_wav::parse_wav(&wav).is_ok());
    }
    assert_eq!(locations.len(), 2, "both jobs were answered");
    let failures = failures.0.lock().clone();
    assert!(
        failures.is_empty(),
        "{} failed requests: {failures:#?}",
        failures.len()
    );
    assert!(
        sent.load(Ordering::Relaxed) > before + 20,
        "the loops kept running across the reload"
    );
    assert!(polls.load(Ordering::Relaxed) > 4, "the jobs were polled");
    assert!(alive(new_pid));
    let old_log = std::fs::read_to_string(&procs.log).unwrap_or_default();
    assert!(
        old_log.contains("drained in"),
        "the old process drained:\n{old_log}"
    );
}

#[tokio::test]
async fn sigterm_finishes_the_synthesis_in_flight_and_an_idle_gateway_exits_at_once() {
    let slow = Sim::start(&["--rtf", "2", "--first-chunk-ms", "50"]);
    let dir = tempfile::tempdir().expect("dir");
    let (port, admin) = (free_port(), free_port());
    let conf = dir.path().join("cosygate.yaml");
    std::fs::write(&conf, config(dir.path(), port, admin, &[&slow], &slow)).expect("config");

    // Busy: a synthesis of a few seconds is answered whole although SIGTERM came first.
    let mut procs = Processes::start(&conf, dir.path(), port).await;
    let failures = Arc::new(Failures::default());
    let (http, f) = (client(), failures.clone());
    let request = tokio::spawn(async move {
        synthesize(
            &http,
            port,
            "fast",
            "A synthesis that outlives the stop signal.",
            &f,
        )
        .await;
        Instant::now()
    });
    slow.wait_stats(Duration::from_secs(10), "the synthesis running", |s| {
        s["inflight"] == 1
    })
    .await;
    procs.signal("TERM");
    let answered = request.await.expect("request task");
    procs
        .exited("the gateway exits after its drain", Duration::from_secs(30))
        .await;
    let exited = Instant::now();
    assert!(failures.0.lock().is_empty(), "{:?}", failures.0.lock());
    assert!(exited >= answered, "it exited after the answer");
    assert!(
        exited.duration_since(answered) < Duration::from_secs(2),
        "and soon after it: {:?}",
        exited.duration_since(answered)
    );
    assert!(!health_ok(port).await, "nothing listens any more");

    // Idle: out within a second of SIGTERM although grace_period_seconds is 90.
    let mut procs = Processes::start(&conf, dir.path(), port).await;
    let signalled = Instant::now();
    procs.signal("TERM");
    procs
        .exited("the idle gateway exits", Duration::from_secs(5))
        .await;
    assert!(
        signalled.elapsed() < Duration::from_secs(1),
        "{:?}",
        signalled.elapsed()
    );
}

#[tokio::test]
async fn instances_sharing_redis_answer_for_each_others_jobs() {
    let redis = common::redis::Redis::start();
    let sim = Sim::start(&["--rtf", "1", "--first-chunk-ms", "20"]);
    let pools = common::gateway::pool_yaml(
        "cosyvoice_fastapi",
        &[sim.addr()],
        "      queue: { async_after: 60s }\n",
    );
    let yaml = format!(
        "  cache:\n    memory: {{ max: 16MiB }}\n    redis: {{ url: \"{}\" }}\n{pools}",
        redis.url()
    );
    let a = common::gateway::Gateway::start(&yaml);
    let b = common::gateway::Gateway::start(&yaml);
    let http = client();
    let started = http
        .post(a.url("/generate"))
        .header("Prefer", "respond-async")
        .json(&body("A job started on one instance."))
        .send()
        .await
        .expect("a answers");
    assert_eq!(started.status(), 202);
    let location = started.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    // b has never seen the job: it answers from the record a wrote to Redis.
    let first = http.get(b.url(&location)).send().await.expect("b answers");
    assert_eq!(first.status(), 202, "running on a, as b reads it");
    let deadline = Instant::now() + Duration::from_secs(30);
    let wav = loop {
        let r = http.get(b.url(&location)).send().await.expect("b answers");
        if r.status() == 200 {
            break r.bytes().await.expect("body");
        }
        assert_eq!(r.status(), 202);
        assert!(Instant::now() < deadline, "the job did not finish within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let from_a = http.get(a.url(&location)).send().await.expect("a answers");
    assert_eq!(from_a.status(), 200);
    assert_eq!(
        from_a.bytes().await.expect("body"),
        wav,
        "the same audio from both"
    );
    // A job nobody started: 404 from b too.
    let unknown = http
        .get(b.url("/v1/jobs/0123456789abcdef0123456789abcdef"))
        .send()
        .await;
    assert_eq!(unknown.expect("b answers").status(), 404);
}
