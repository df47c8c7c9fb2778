//! Self-healing through the real binaries: the supervisor restarts a crashed or hung
//! `cosyvoice-sim` with a restart script (the shape of `scripts/restart-cosyvoice.sh`: stop by
//! pid file, start again in the background with nohup, new pid file), traffic comes back to the
//! new process, and a restart command that never helps ends in backoff, the hourly cap and the
//! `failed` state while the other backend keeps serving every request.

mod common;

use common::gateway::{free_port, Gateway};
use common::scripted_sim::ScriptedSim;
use common::sim::Sim;
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const FAST: &[&str] = &["--rtf", "0.01", "--first-chunk-ms", "5"];
/// The health settings every test here uses (quoted in the README's measurements).
const HEALTH: &str = "{ interval: 200ms, timeout: 500ms, unhealthy_after: 1, healthy_after: 1 }";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

fn gateway_with(backends: &str, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "  pools:\n    cosyvoice:\n      protocol: cosyvoice_fastapi\n      health: {HEALTH}\n      speakers: [中文女]\n      max_concurrency: 4\n      retry: {{ attempts: 2, on_timeout: true }}\n{extra}      backends:\n{backends}"
    ))
}

fn restart_yaml(command: &str, extra: &str) -> String {
    format!(
        "          restart: {{ command: {command}, after_failures: 2, cooldown: 300ms, warmup: 300ms, timeout: 5s{extra} }}\n"
    )
}

async fn generate(gw: &Gateway, i: usize) -> u16 {
    let body = json!({"text": format!("Self healing number {i}."), "mode": "sft", "spk_id": "中文女"});
    client()
        .post(gw.url("/generate"))
        .json(&body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Sends requests (each must be 200) until the scripted sim runs under a new pid and has
/// served at least one of them; returns when that happened.
async fn until_new_process_serves(
    gw: &Gateway,
    sim: &ScriptedSim,
    old_pid: &str,
    deadline: Duration,
) -> Instant {
    let give_up = Instant::now() + deadline;
    let mut i = 0;
    loop {
        i += 1;
        let status = generate(gw, i).await;
        assert_eq!(
            status, 200,
            "request {i} must be served (by the other backend meanwhile)"
        );
        if sim.pid().is_some_and(|p| p != old_pid) && sim.requests().await.is_some_and(|n| n > 0) {
            return Instant::now();
        }
        assert!(
            Instant::now() < give_up,
            "the restarted backend did not serve within {deadline:?}; sim log:\n{}\ngateway log:\n{}",
            sim.log(),
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_crashed_backend_is_restarted_and_serves_again() {
    let sim = ScriptedSim::start();
    sim.wait_up().await;
    let other = Sim::start(FAST);
    let backends = format!(
        "        - addr: {}\n{}        - addr: {}\n",
        sim.addr,
        restart_yaml(&sim.command_yaml(), ""),
        other.addr()
    );
    let gw = gateway_with(&backends, "");
    let old_pid = sim.pid().expect("pid file");
    sim.fault("crash", 1).await;
    // Requests until one reaches the sim and crashes it (each still answered by the other).
    let mut i = 0;
    while sim.requests().await.is_some() {
        i += 1;
        assert_eq!(generate(&gw, 1000 + i).await, 200);
        assert!(i < 50, "the crash fault never fired");
    }
    let crashed = Instant::now();
    let serving = until_new_process_serves(&gw, &sim, &old_pid, Duration::from_secs(20)).await;
    eprintln!(
        "crash: from the crash to the restarted backend serving again: {} ms (health {HEALTH}, after_failures 2)",
        (serving - crashed).as_millis()
    );
    let log = gw.log();
    if std::env::var_os("SUPERVISOR_TIMELINE").is_some() {
        for l in log
            .lines()
            .filter(|l| l.contains("supervisor") || l.contains("health"))
        {
            eprintln!("{l}");
        }
    }
    assert!(log.contains("supervisor: restarting backend cosyvoice/"), "{log}");
    assert!(
        log.contains("failed health checks in a row") || log.contains("failed requests in a row"),
        "{log}"
    );
    assert!(log.contains("ok: healthy again"), "{log}");
    assert!(log.contains(&format!(
        "restart of backend cosyvoice/{}: stdout: started cosyvoice-sim",
        sim.addr
    )));
    // Slow start: the warm-up ends with all slots.
    common::gateway::eventually(Duration::from_secs(5), "warm-up over", || {
        let log = gw.log();
        async move { log.contains("warmed up: all 4 slots") }
    })
    .await;
}

#[tokio::test]
async fn a_hung_backend_is_restarted_on_failed_requests() {
    let sim = ScriptedSim::start();
    sim.wait_up().await;
    let other = Sim::start(FAST);
    let backends = format!(
        "        - addr: {}\n{}        - addr: {}\n",
        sim.addr,
        restart_yaml(&sim.command_yaml(), ""),
        other.addr()
    );
    // `gateway_with` retries a timed-out attempt (not the default), so every request is served.
    let gw = gateway_with(&backends, "      timeout: 1s\n");
    let old_pid = sim.pid().expect("pid file");
    sim.fault("hang", 1000).await;
    let hung = Instant::now();
    let serving = until_new_process_serves(&gw, &sim, &old_pid, Duration::from_secs(30)).await;
    eprintln!(
        "hang: from arming the hang to the restarted backend serving again: {} ms (pool timeout 1s, health {HEALTH}, after_failures 2)",
        (serving - hung).as_millis()
    );
    let log = gw.log();
    assert!(
        log.contains("failed requests in a row"),
        "the passive signal triggered it: {log}"
    );
    assert!(log.contains("ok: healthy again"), "{log}");
}

#[tokio::test]
async fn restarts_that_never_help_back_off_then_give_up_while_the_other_backend_serves() {
    let good = Sim::start(FAST);
    let dead_a = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let dead_b = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let backends = format!(
        "        - addr: {dead_a}\n{}        - addr: {dead_b}\n{}        - addr: {}\n",
        restart_yaml("[\"false\"]", ", max_per_hour: 2"),
        restart_yaml("[\"true\"]", ", max_per_hour: 2, ready_within: 500ms"),
        good.addr()
    );
    let gw = gateway_with(&backends, "");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    loop {
        i += 1;
        assert_eq!(generate(&gw, i).await, 200, "request {i}; log:\n{}", gw.log());
        let log = gw.log();
        if log.matches("GIVING UP on backend").count() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no give-up within 30 s; log:\n{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A few more requests after giving up: still all served.
    for j in 0..5 {
        assert_eq!(generate(&gw, 10_000 + j).await, 200);
    }
    let log = gw.log();
    let a = format!("backend cosyvoice/{dead_a}");
    let b = format!("backend cosyvoice/{dead_b}");
    let lines = |needle: &str, who: &str| {
        log.lines()
            .filter(|l| l.contains(needle) && l.contains(who))
            .count()
    };
    assert_eq!(
        lines("restarting backend", &a),
        2,
        "exactly max_per_hour restarts:\n{log}"
    );
    assert_eq!(
        lines("restarting backend", &b),
        2,
        "exactly max_per_hour restarts:\n{log}"
    );
    assert_eq!(lines("failed (command_failed)", &a), 2, "{log}");
    assert_eq!(lines("failed (unhealthy)", &b), 2, "{log}");
    // Backoff: the second wait is twice the first.
    assert_eq!(lines("next restart not before 300 ms", &a), 1, "{log}");
    assert_eq!(lines("next restart not before 600 ms", &a), 1, "{log}");
    assert!(log
        .lines()
        .any(|l| l.contains("ERROR") && l.contains("GIVING UP") && l.contains(&a)));
}

#[tokio::test]
async fn two_instances_sharing_redis_restart_a_backend_once() {
    let redis = common::redis::Redis::start();
    let sim = ScriptedSim::start();
    sim.wait_up().await;
    let other = Sim::start(FAST);
    let backends = format!(
        "        - addr: {}\n          restart: {{ command: {}, env: {{ START_DELAY: \"1\" }}, after_failures: 2, cooldown: 3s, warmup: 300ms, timeout: 5s }}\n        - addr: {}\n",
        sim.addr,
        sim.command_yaml(),
        other.addr()
    );
    let supervisor = format!(
        "  supervisor: {{ redis: {{ url: \"{}\", timeout: 500ms }} }}\n",
        redis.url()
    );
    let gw_a = Gateway::start(&format!(
        "{supervisor}  pools:\n    cosyvoice:\n      protocol: cosyvoice_fastapi\n      health: {HEALTH}\n      speakers: [中文女]\n      max_concurrency: 4\n      backends:\n{backends}"
    ));
    let gw_b = Gateway::start(&format!(
        "{supervisor}  pools:\n    cosyvoice:\n      protocol: cosyvoice_fastapi\n      health: {HEALTH}\n      speakers: [中文女]\n      max_concurrency: 4\n      backends:\n{backends}"
    ));
    let old_pid = sim.pid().expect("pid file");
    sim.fault("crash", 1).await;
    let mut i = 0;
    while sim.requests().await.is_some() {
        i += 1;
        assert_eq!(generate(&gw_a, 2000 + i).await, 200);
        assert!(i < 50, "the crash fault never fired");
    }
    until_new_process_serves(&gw_a, &sim, &old_pid, Duration::from_secs(20)).await;
    // Both instances saw the backend down; give the second one time to (not) act.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarts = |gw: &Gateway| gw.log().matches("supervisor: restarting backend").count();
    let both = format!("{}{}", gw_a.log(), gw_b.log());
    assert!(
        both.contains("another gateway instance is restarting it"),
        "the other instance met the lock:\n{both}"
    );
    assert_eq!(
        restarts(&gw_a) + restarts(&gw_b),
        1,
        "exactly one instance restarted it\n--- a ---\n{}\n--- b ---\n{}",
        gw_a.log(),
        gw_b.log()
    );
    assert_eq!(generate(&gw_b, 1).await, 200);
}

#[test]
fn restart_settings_are_checked() {
    let base = |backend: &str| {
        format!(
            "cosygate:\n  listen:\n    - addr: 127.0.0.1:8080\n  supervisor: {{ enabled: false }}\n  pools:\n    p:\n      protocol: cosyvoice_fastapi\n      backends:\n        - addr: 127.0.0.1:50000\n{backend}"
        )
    };
    let (code, out) = common::gateway::check_config(&base(
        "          restart: { command: [\"/bin/true\"], after_failures: 3, cooldown: 60s, timeout: 30s, ready_within: 5m, dir: /tmp, env: { A: b }, max_per_hour: 6, warmup: 10s }\n",
    ));
    assert_eq!(code, 0, "{out}");
    let (code, out) = common::gateway::check_config(&base("          restart: { command: [] }\n"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cosygate.yaml:10:"), "{out}");
    let (code, out) =
        common::gateway::check_config(&base("          restart: { command: [\"x\"], cooldwn: 1s }\n"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unknown field `cooldwn`"), "{out}");
}
