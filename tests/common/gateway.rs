//! Test harness for the real `cosygate` binary: writes a config into a temp dir, starts the
//! gateway on a free port, waits (with a deadline) until it accepts connections, and kills it on
//! drop. Its stderr (the log) is kept and printed when a test fails.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Ports handed out by [`free_port`]: below Linux's ephemeral range (32768-60999), so neither a
/// client's source port nor a sim binding port 0 can take one between our check and the bind.
const TEST_PORTS: std::ops::Range<u16> = 12000..32000;

/// A free TCP port on loopback (bound then released; the gateway binds it right after), chosen
/// at random outside the ephemeral range.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = TEST_PORTS.start + rand::random::<u16>() % (TEST_PORTS.end - TEST_PORTS.start);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {TEST_PORTS:?}")
}

/// The speakers the harness's sims offer (`Sim::start` passes them as `--speakers`) and its
/// pools list (`pool_yaml`), as an operator who added CosyVoice2's presets would.
pub const TEST_SPEAKERS: &[&str] = &["中文女", "中文男", "英文女", "英文男"];

/// A `pools:` section with one pool named `cosyvoice`. Lists [`TEST_SPEAKERS`] as the pool's
/// `speakers` unless `extra` sets `speakers:` or `model:` itself, and fast health checks unless
/// `extra` sets `health:`.
pub fn pool_yaml(protocol: &str, backends: &[SocketAddr], extra: &str) -> String {
    let list: String = backends
        .iter()
        .map(|b| format!("\n        - addr: {b}"))
        .collect();
    let speakers = if extra.contains("speakers:") || extra.contains("model:") {
        String::new()
    } else {
        format!("      speakers: [{}]\n", TEST_SPEAKERS.join(", "))
    };
    // Fast health checks, so a killed backend (refused at once) is noticed within 200 ms, but
    // patient ones, so a loaded sim on a busy machine is not; `extra` may set its own.
    let health = if extra.contains("health:") {
        ""
    } else {
        "      health: { interval: 200ms, timeout: 2s, unhealthy_after: 1, healthy_after: 1 }\n"
    };
    format!("  pools:\n    cosyvoice:\n      protocol: {protocol}\n{health}{speakers}{extra}      backends:{list}\n")
}

pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts the gateway with `cosygate_body` (YAML lines under `cosygate:`, indented two
    /// spaces, without `listen`, which the harness adds).
    pub fn start(cosygate_body: &str) -> Gateway {
        // Another test may take the port between the check and the bind: then try another.
        for _ in 0..5 {
            let port = free_port();
            let dir = tempfile::tempdir().expect("temp dir");
            let yaml = format!(
                "threads: 2\npid_file: {d}/cosygate.pid\nupgrade_sock: {d}/upgrade.sock\ngrace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 1\ncosygate:\n  listen:\n    - addr: 127.0.0.1:{port}\n{cosygate_body}",
                d = dir.path().display()
            );
            match Self::spawn(yaml, dir).try_ready(port) {
                Ok(gw) => return gw,
                Err(gw) if gw.log().contains("in use") => continue,
                Err(gw) => panic!("cosygate exited early; log:\n{}", gw.log()),
            }
        }
        panic!("cosygate found no free port in 5 tries")
    }

    /// Starts the gateway with a whole config file's text, expecting it to run.
    fn spawn(yaml: String, dir: tempfile::TempDir) -> Gateway {
        let conf = dir.path().join("cosygate.yaml");
        std::fs::write(&conf, &yaml).expect("write config");
        let log = std::fs::File::create(dir.path().join("stderr.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_cosygate"))
            .arg("-c")
            .arg(&conf)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start cosygate");
        Gateway {
            child,
            addr: "127.0.0.1:0".parse().expect("addr"),
            dir,
        }
    }

    /// Waits until the gateway answers on `port`; `Err(self)` when it exited first.
    fn try_ready(mut self, port: u16) -> Result<Gateway, Gateway> {
        self.addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Err(self);
            }
            if answers_http(self.addr) {
                return Ok(self);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "cosygate did not listen on {} within 20 s; log:\n{}",
            self.addr,
            self.log()
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The gateway's log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("stderr.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Kills the gateway with SIGKILL (what `Child::kill` sends on Unix) and reaps it: no
    /// shutdown and no flushing, as a crash or the OOM killer would leave things.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("cosygate.yaml")
    }
}

/// Whether an HTTP server answers `GET /health` on `addr`. A bare connect is not proof: before
/// the gateway listens, a connect to a loopback port can succeed against another socket (a
/// self-connect when the kernel picks the same port as the source), and a test's first request
/// then meets a reset or a refusal.
fn answers_http(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: cosygate\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 9];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 ")
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- cosygate log ---\n{}", self.log());
        }
    }
}

/// Runs `cosygate -t -c FILE` on the given whole config text; returns (exit code, stdout+stderr).
pub fn check_config(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("cosygate.yaml");
    std::fs::write(&conf, yaml).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_cosygate"))
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .env_remove("COSYGATE_TEST_UNSET")
        .output()
        .expect("run cosygate -t");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .replace(&conf.display().to_string(), "cosygate.yaml");
    (out.status.code().unwrap_or(-1), text)
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}
