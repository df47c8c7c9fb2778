//! Gateways run as plain background processes, as an operator runs them, for the reload and
//! upgrade tests: the guard that kills whatever process the pid file names at the end, the
//! pid-file and liveness checks, `scripts/reload.sh`, and polling with a deadline.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
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

impl Processes {
    /// Starts cosygate on `conf` as a plain background process logging to `dir/cosygate.log`
    /// (its `pid_file` must be `dir/cosygate.pid`); waits (20 s) until the pid file names it
    /// and `GET /health` answers on `port`.
    pub async fn start(conf: &Path, dir: &Path, port: u16) -> Processes {
        let log = dir.join("cosygate.log");
        let first = Command::new(env!("CARGO_BIN_EXE_cosygate"))
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start cosygate");
        let mut procs = Processes {
            first,
            pid_file: dir.join("cosygate.pid"),
            log,
        };
        let pid = procs.first.id();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(read_pid(&procs.pid_file) == Some(pid) && health_ok(port).await) {
            assert!(
                procs.first.try_wait().expect("try_wait").is_none(),
                "cosygate exited at start"
            );
            assert!(Instant::now() < deadline, "cosygate did not start within 20 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        procs
    }

    /// Sends `signal` (`TERM`, `QUIT`, ...) to the first process.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.first.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "kill -{signal} {}", self.first.id());
    }

    /// Waits (up to `timeout`) until the first process has exited.
    pub async fn exited(&mut self, what: &str, timeout: Duration) {
        let first = &mut self.first;
        wait_until(what, timeout, || first.try_wait().expect("try_wait").is_some()).await;
    }
}
