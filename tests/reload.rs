//! `scripts/reload.sh`: a graceful upgrade to a new configuration. The gateway runs as a plain
//! background process with its own config file, pid_file and upgrade_sock in a temp dir; a
//! reload to a file with a larger `max_text_chars` hands over to a new process (new pid in the
//! pid file) that serves the new limit; reloads to a file with a YAML error or with a TLS key
//! that does not match its certificate fail before anything is signalled, and the old process
//! keeps serving under its old pid.

mod common;

use common::gateway::{free_port, pool_yaml};
use common::process::{alive, read_pid, reload, text, wait_until, Processes};
use common::sim::Sim;
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const FAST: &[&str] = &["--rtf", "0.01", "--first-chunk-ms", "5"];

fn config(dir: &Path, port: u16, sim: SocketAddr, max_text_chars: usize, tls: &str) -> String {
    format!(
        "threads: 1\npid_file: {d}/cosygate.pid\nupgrade_sock: {d}/upgrade.sock\ngrace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 1\ncosygate:\n  listen:\n    - addr: 127.0.0.1:{port}\n{tls}  limits: {{ max_text_chars: {max_text_chars} }}\n{}",
        pool_yaml("cosyvoice_fastapi", &[sim], ""),
        d = dir.display()
    )
}

async fn generate(port: u16, chars: usize) -> u16 {
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/generate"))
        .timeout(Duration::from_secs(30))
        .json(&json!({"text": "a".repeat(chars), "mode": "sft", "spk_id": "中文女"}))
        .send()
        .await
        .expect("the gateway answers")
        .status()
        .as_u16()
}

#[tokio::test]
async fn reload_hands_over_to_a_new_process_and_refuses_broken_configs() {
    let sim = Sim::start(FAST);
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let conf = dir.path().join("cosygate.yaml");
    std::fs::write(&conf, config(dir.path(), port, sim.addr(), 20, "")).expect("write config");
    let mut procs = Processes::start(&conf, dir.path(), port).await;
    let first_pid = procs.first.id();
    let pid_file = procs.pid_file.clone();
    assert_eq!(generate(port, 10).await, 200);
    assert_eq!(generate(port, 50).await, 422, "over the first max_text_chars");

    // A YAML error: refused by the check, nothing signalled.
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        config(dir.path(), port, sim.addr(), 100, "").replace("limits: {", "limits: ["),
    )
    .expect("write");
    let out = reload(&broken);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("broken.yaml:"),
        "names the file and line: {}",
        text(&out)
    );
    assert!(text(&out).contains("nothing was changed"), "{}", text(&out));

    // A TLS key from another pair: refused by the check too.
    let (cert, _) = common::tls::make_pair(&dir.path().join("a"));
    let (_, other_key) = common::tls::make_pair(&dir.path().join("b"));
    let mismatched = dir.path().join("mismatched.yaml");
    let tls_entry = format!(
        "    - addr: 127.0.0.1:{}\n      tls: {{ cert: {}, key: {} }}\n",
        free_port(),
        cert.display(),
        other_key.display()
    );
    std::fs::write(&mismatched, config(dir.path(), port, sim.addr(), 100, &tls_entry)).expect("write");
    let out = reload(&mismatched);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("does not match the certificate"),
        "{}",
        text(&out)
    );

    assert_eq!(
        read_pid(&pid_file),
        Some(first_pid),
        "the pid file still names the first process"
    );
    assert!(
        procs.first.try_wait().expect("try_wait").is_none(),
        "the first process still runs"
    );
    assert_eq!(generate(port, 50).await, 422, "still the old configuration");

    // The good reload.
    std::fs::write(&conf, config(dir.path(), port, sim.addr(), 100, "")).expect("write config");
    let out = reload(&conf);
    assert!(out.status.success(), "reload failed: {}", text(&out));
    assert!(text(&out).contains("reloaded"), "{}", text(&out));
    let new_pid = read_pid(&pid_file).expect("a pid in the pid file");
    assert_ne!(new_pid, first_pid, "the pid changed");
    assert!(alive(new_pid), "the new process runs");
    // The old one drains (5 s of accepting, then grace_period_seconds 0) and exits; the new
    // limit holds for every request after that.
    let first = &mut procs.first;
    wait_until("the old process exits", Duration::from_secs(30), || {
        first.try_wait().expect("try_wait").is_some()
    })
    .await;
    assert_eq!(generate(port, 50).await, 200, "the new max_text_chars");
    assert_eq!(generate(port, 150).await, 422);
    assert!(alive(new_pid));
}
