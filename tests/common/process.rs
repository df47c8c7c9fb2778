//! Gateways run as plain background processes, as an operator runs them, for the reload and
//! upgrade tests: the guard that kills whatever process the pid file names at the end, the
//! pid-file and liveness checks, `scripts/reload.sh`, and polling with a deadline.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// Kills, at the end (or on a panic), the first gateway and whatever process the pid file names
/// then: the reload's new process is not our child.
pub struct Processes {
    pub first: Child,
    pub pid_file: PathBuf,
    pub log: PathBuf,
}

impl Drop for Processes {
    fn drop(&mut self) {
        if let Some(pid) = read_pid(&self.pid_file) {
            if pid != self.first.id() {
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            }
        }
        let _ = self.first.kill();
        let _ = self.first.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- cosygate log ---\n{log}");
        }
    }
}

pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

pub fn reload(conf: &Path) -> Output {
    Command::new("scripts/reload.sh")
        .arg("-c")
        .arg(conf)
        .arg("--bin")
        .arg(env!("CARGO_BIN_EXE_cosygate"))
        .arg("--timeout")
        .arg("30")
        .output()
        .expect("run scripts/reload.sh")
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn health_ok(port: u16) -> bool {
    reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}
