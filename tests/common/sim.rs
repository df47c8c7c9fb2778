//! Test harness for the real `cosyvoice-sim` binary: starts it on a free (or given) port,
//! learns its address from the one line it prints on stdout (with a deadline), keeps its
//! stderr in a temp file (printed when a test panics), talks to its `/__sim/*` hooks, and kills
//! it on drop. Also `test_wav`, a valid mono 16-bit WAV to use as prompt audio.
//!
//! Used by the gateway's tests (`tests/common/`) and by the simulator's own
//! (`sim/tests/sim.rs`, through `#[path]`), so it names no gateway code. The binary belongs to
//! the workspace's `cosyvoice-sim` package: see [`sim_binary`].

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

/// How long the sim may take to announce its address.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// The `cosyvoice-sim` executable. In the simulator's own tests cargo names it
/// (`CARGO_BIN_EXE_cosyvoice-sim`); a test of another package (the gateway's) cannot have it
/// named, so it is the one in this test executable's target directory
/// (`target/debug/deps/TEST` → `target/debug/cosyvoice-sim`), which `cargo build --workspace`,
/// `cargo test` / `cargo nextest run` at the workspace root and `scripts/test.sh` build.
/// `COSYVOICE_SIM_BIN` overrides both.
pub fn sim_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("COSYVOICE_SIM_BIN") {
        return PathBuf::from(path);
    }
    if let Some(path) = option_env!("CARGO_BIN_EXE_cosyvoice-sim") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable's own path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap_or_else(|| panic!("no target directory above {}", exe.display()));
    let bin = profile_dir.join(format!("cosyvoice-sim{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "the simulator binary {} is missing: it belongs to the workspace's `sim/` package \
         (`cosyvoice-sim`), which a test of the gateway cannot make cargo build for it. Run \
         `cargo build --workspace` first (scripts/test.sh does), or test the whole workspace \
         (`cargo nextest run --workspace`), or set COSYVOICE_SIM_BIN to a built cosyvoice-sim",
        bin.display()
    );
    bin
}

/// The sim's flags for a backend of a gateway pool speaking `protocol`: a `generate_json`
/// pool probes `/health`, which CosyVoice's FastAPI server, and so the sim by default, lacks
/// (`--json-health` adds it); a `cosyvoice_fastapi` pool probes `/docs`.
pub fn args_for(protocol: &str, args: &[&'static str]) -> Vec<&'static str> {
    let mut out = args.to_vec();
    if protocol == "generate_json" {
        out.push("--json-health");
    }
    out
}

/// A running `cosyvoice-sim` process.
pub struct Sim {
    child: Mutex<Child>,
    addr: SocketAddr,
    log: tempfile::NamedTempFile,
}

impl Sim {
    /// Starts the sim on a free loopback port with `extra_args` (for example
    /// `&["--rtf", "0.01", "--first-chunk-ms", "5"]`). Unless they say `--speakers` or
    /// `--model`, the sim gets the harness's `--speakers` (`TEST_SPEAKERS`, those `pool_yaml`
    /// lists); CosyVoice3 itself ships none.
    pub fn start(extra_args: &[&str]) -> Sim {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), extra_args)
    }

    /// Starts the sim on a known address (to bring a backend back on its old port). Retries
    /// until the deadline while the port is still held by the previous process.
    pub fn start_on(addr: SocketAddr, extra_args: &[&str]) -> Sim {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match Self::try_start(addr, extra_args, deadline) {
                Ok(sim) => return sim,
                Err((msg, log))
                    if addr.port() != 0 && Instant::now() < deadline && log.contains("in use") =>
                {
                    eprintln!("cosyvoice-sim did not start yet ({msg}); retrying");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err((msg, log)) => panic!("cosyvoice-sim did not start: {msg}\n--- sim stderr ---\n{log}"),
            }
        }
    }

    fn try_start(addr: SocketAddr, extra_args: &[&str], deadline: Instant) -> Result<Sim, (String, String)> {
        let log = tempfile::NamedTempFile::new().expect("temp file for the sim's stderr");
        let stderr = log.reopen().expect("reopen the sim's log file");
        let defaults: &[&str] = if extra_args
            .iter()
            .any(|a| a.starts_with("--speakers") || a.starts_with("--model"))
        {
            &[]
        } else {
            &["--speakers", "中文女,中文男,英文女,英文男"]
        };
        let mut child = Command::new(sim_binary())
            .arg("--listen")
            .arg(addr.to_string())
            .args(defaults)
            .args(extra_args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", sim_binary().display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = tx.send(reader.read_line(&mut line).map(|_| line));
            // Keep draining so the sim never writes into a closed pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let wait = deadline.saturating_duration_since(Instant::now());
        let read_log =
            |log: &tempfile::NamedTempFile| std::fs::read_to_string(log.path()).unwrap_or_default();
        let fail = |mut child: Child, msg: String| {
            let _ = child.kill();
            let _ = child.wait();
            Err((msg, read_log(&log)))
        };
        let line = match rx.recv_timeout(wait) {
            Ok(Ok(line)) if !line.is_empty() => line,
            Ok(Ok(_)) => return fail(child, "stdout closed without the address line".into()),
            Ok(Err(e)) => return fail(child, format!("cannot read its stdout: {e}")),
            Err(_) => return fail(child, format!("no address line within {START_DEADLINE:?}")),
        };
        let Some(url) = line.trim().strip_prefix("cosyvoice-sim listening on http://") else {
            return fail(child, format!("unexpected first line {line:?}"));
        };
        let addr: SocketAddr = match url.parse() {
            Ok(a) => a,
            Err(e) => return fail(child, format!("bad address in {line:?}: {e}")),
        };
        Ok(Sim {
            child: Mutex::new(child),
            addr,
            log,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The sim's stderr so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.log.path()) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("reqwest client")
    }

    async fn call(&self, req: reqwest::RequestBuilder, what: &str) -> Value {
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => panic!(
                "{what}: no answer from the sim: {e}\n--- sim stderr ---\n{}",
                self.log()
            ),
        };
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
        assert!(status.is_success(), "{what}: {status} {body}");
        body
    }

    /// `GET /__sim/stats`: `{"requests","inflight","max_inflight","missing_endofprompt"}`.
    pub async fn stats(&self) -> Value {
        self.call(Self::client().get(self.url("/__sim/stats")), "GET /__sim/stats")
            .await
    }

    /// `GET /__sim/last`: the last synthesis request as the sim received it (null before any).
    pub async fn last(&self) -> Value {
        self.call(Self::client().get(self.url("/__sim/last")), "GET /__sim/last")
            .await
    }

    /// Makes the next `count` synthesis requests fail with `kind`: `error500`, `truncate`,
    /// `hang` or `crash`.
    pub async fn fault(&self, kind: &str, count: u64) {
        let req = Self::client()
            .post(self.url("/__sim/fault"))
            .json(&json!({"kind": kind, "count": count}));
        let v = self.call(req, "POST /__sim/fault").await;
        assert_eq!(v["ok"], true, "fault {kind} armed");
    }

    /// Clears the counters, the last request and any armed fault.
    pub async fn reset(&self) {
        self.call(Self::client().post(self.url("/__sim/reset")), "POST /__sim/reset")
            .await;
    }

    /// Polls `/__sim/stats` until `check` holds, or panics after `timeout`; returns the stats.
    pub async fn wait_stats(&self, timeout: Duration, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let stats = self.stats().await;
            if check(&stats) {
                return stats;
            }
            if Instant::now() >= deadline {
                panic!("timed out after {timeout:?} waiting for {what}; last stats {stats}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kills the process (no-op if it has already exited).
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Whether the process is still alive.
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        matches!(child.try_wait(), Ok(None))
    }

    /// Polls until the process exits, at most `timeout`; its exit status if it did.
    pub async fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.lock().unwrap_or_else(|p| p.into_inner()).try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- cosyvoice-sim {} stderr ---\n{}", self.addr, self.log());
        }
    }
}

/// A valid mono 16-bit PCM WAV of `round(seconds × sample_rate)` frames: a 220 Hz tone with a
/// slow vibrato. Its size is exactly 44 + 2 × frames bytes.
pub fn test_wav(seconds: f64, sample_rate: u32) -> Vec<u8> {
    let frames = (seconds * f64::from(sample_rate)).round().max(0.0) as usize;
    let sr = f64::from(sample_rate.max(1));
    let mut pcm = Vec::with_capacity(frames * 2);
    let mut phase = 0.0f64;
    for i in 0..frames {
        let t = i as f64 / sr;
        phase += std::f64::consts::TAU * (220.0 + 8.0 * (std::f64::consts::TAU * 5.0 * t).sin()) / sr;
        let s = (phase.sin() * 9000.0) as i16;
        pcm.extend_from_slice(&s.to_le_bytes());
    }
    cosygate_wav::pcm16_to_wav(&pcm, sample_rate).expect("PCM wraps into a WAV")
}
