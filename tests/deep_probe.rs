//! The deep health probe (`health.synthesize_every`) through the real binaries: a backend whose
//! `/docs` answers 200 but whose every synthesis is cut after its 200 is taken out of traffic
//! (the other backend serves every request) and shown as unable to synthesize; it comes back
//! when it synthesizes again; with `restart:` configured, the supervisor restarts it.

mod common;

use common::gateway::{free_port, Gateway};
use common::scripted_sim::ScriptedSim;
use common::sim::Sim;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const FAST: &[&str] = &["--rtf", "0.01", "--first-chunk-ms", "5"];
const HEALTH: &str =
    "{ interval: 200ms, timeout: 2s, unhealthy_after: 1, healthy_after: 1, synthesize_every: 1s }";

async fn backends(admin: u16) -> Vec<Value> {
    let v: Value = reqwest::get(format!("http://127.0.0.1:{admin}/admin/backends"))
        .await
        .expect("admin answers")
        .json()
        .await
        .expect("json");
    v.as_array().cloned().unwrap_or_default()
}

/// Polls `/admin/backends` until `addr`'s row satisfies `check`.
async fn until_row(admin: u16, addr: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = backends(admin).await;
        if let Some(row) = rows.iter().find(|r| r["addr"] == addr && check(r)) {
            return row.clone();
        }
        assert!(Instant::now() < deadline, "{what}: {rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `cosygate_deep_probes_total{backend=addr, result="failed"}`.
async fn failed_probes(admin: u16, addr: &str) -> u64 {
    let samples = common::metrics::scrape(admin).await;
    common::metrics::sum(
        &samples,
        "cosygate_deep_probes_total",
        &[("backend", addr), ("result", "failed")],
    ) as u64
}

async fn generate(gw: &Gateway, text: &str) -> u16 {
    reqwest::Client::new()
        .post(gw.url("/generate"))
        .json(&json!({"text": text, "mode": "sft", "spk_id": "中文女"}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_backend_that_cannot_synthesize_gets_no_traffic_until_it_can() {
    let good = Sim::start(FAST);
    let broken = Sim::start(FAST);
    let admin = free_port();
    let gw = Gateway::start(&format!(
        "  admin: {{ addr: 127.0.0.1:{admin} }}\n  pools:\n    cosyvoice:\n      protocol: cosyvoice_fastapi\n      \
         speakers: [中文女]\n      retry: {{ attempts: 0 }}\n      health: {HEALTH}\n      backends:\n        \
         - addr: {}\n        - addr: {}\n",
        good.addr(),
        broken.addr()
    ));
    let broken_addr = broken.addr().to_string();
    // Every synthesis on `broken` answers 200 and then cuts; its /docs stays 200.
    broken.fault("truncate", 1_000_000).await;
    let row = until_row(admin, &broken_addr, "marked unable to synthesize", |r| {
        r["synthesizes"] == false
    })
    .await;
    assert_eq!(row["healthy"], false, "no traffic for it");
    let docs = reqwest::get(broken.url("/docs")).await.expect("docs");
    assert_eq!(docs.status(), 200, "its liveness check still passes");

    let before = broken.stats().await["requests"].as_u64().unwrap_or(0);
    let probes_before = failed_probes(admin, &broken_addr).await;
    for i in 0..10 {
        assert_eq!(generate(&gw, &format!("Deep probe request {i}.")).await, 200);
    }
    let after = broken.stats().await["requests"].as_u64().unwrap_or(0);
    let probes_after = failed_probes(admin, &broken_addr).await;
    // Every request it got was a probe (one may be on its way while the counters are read).
    assert!(
        after - before <= probes_after - probes_before + 1,
        "{} requests reached it, {} of them probes",
        after - before,
        probes_after - probes_before
    );
    let served: Vec<String> = gw
        .log()
        .lines()
        .filter(|l| {
            l.starts_with('{') && l.contains("\"route\":\"/generate\"") && l.contains("\"status\":200")
        })
        .map(str::to_string)
        .collect();
    assert_eq!(served.len(), 10);
    assert!(
        served.iter().all(|l| !l.contains(&broken_addr)),
        "none served by the broken one"
    );
    let samples = common::metrics::scrape(admin).await;
    let of_broken = [("backend", broken_addr.as_str())];
    assert_eq!(
        common::metrics::sum(&samples, "cosygate_backend_cannot_synthesize", &of_broken),
        1.0
    );
    let failed = [("backend", broken_addr.as_str()), ("result", "failed")];
    assert!(common::metrics::sum(&samples, "cosygate_deep_probes_total", &failed) >= 1.0);

    // Repaired: the next probes (every health interval while failing) bring it back.
    broken.reset().await;
    until_row(admin, &broken_addr, "synthesizes again", |r| {
        r["synthesizes"] == true && r["healthy"] == true
    })
    .await;
}

#[tokio::test]
async fn the_supervisor_restarts_a_backend_that_cannot_synthesize() {
    let sim = ScriptedSim::start();
    sim.wait_up().await;
    let other = Sim::start(FAST);
    let admin = free_port();
    let _gw = Gateway::start(&format!(
        "  admin: {{ addr: 127.0.0.1:{admin} }}\n  pools:\n    cosyvoice:\n      protocol: cosyvoice_fastapi\n      \
         speakers: [中文女]\n      health: {HEALTH}\n      backends:\n        - addr: {}\n          \
         restart: {{ command: {}, after_failures: 2, cooldown: 300ms, warmup: 300ms, timeout: 5s }}\n        \
         - addr: {}\n",
        sim.addr,
        sim.command_yaml(),
        other.addr()
    ));
    let addr = sim.addr.to_string();
    let old_pid = sim.pid().expect("pid");
    // The restarted process starts without the fault.
    sim.fault("truncate", 1_000_000).await;
    let row = until_row(admin, &addr, "restarted and synthesizing", |r| {
        r["restarts"] == 1 && r["synthesizes"] == true && r["healthy"] == true
    })
    .await;
    assert_ne!(row["supervisor"], "failed");
    assert!(sim.pid().is_some_and(|p| p != old_pid), "a new process");
}
