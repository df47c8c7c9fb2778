//! A `cosyvoice-sim` started and restarted only through a restart script, as a real CosyVoice
//! server is (the shape of `scripts/restart-cosyvoice.sh`: stop by pid file, start again in the
//! background with nohup, write the new pid file): for the supervisor's and the admin plane's
//! tests.

use super::gateway::free_port;
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The sim flags of a fast backend.
pub const FAST: &[&str] = &["--rtf", "0.01", "--first-chunk-ms", "5"];

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A sim started and restarted only through a restart script, as a real CosyVoice server is.
pub struct ScriptedSim {
    dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl ScriptedSim {
    pub fn start() -> ScriptedSim {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let script = format!(
            r#"#!/bin/sh
# Restart the simulated backend: stop the old process (pid file), start a new one in the
# background, write the new pid file, exit 0 at once.
DIR="$1"
PIDFILE="$DIR/sim.pid"
alive() {{ s=$(awk '{{print $3}}' "/proc/$1/stat" 2>/dev/null); [ -n "$s" ] && [ "$s" != Z ]; }}
if [ -f "$PIDFILE" ]; then
  PID=$(cat "$PIDFILE")
  kill -9 "$PID" 2>/dev/null
  i=0
  while alive "$PID" && [ $i -lt 40 ]; do sleep 0.05; i=$((i+1)); done
fi
# A real model takes a while to load; START_DELAY (seconds) imitates it.
if [ -n "${{START_DELAY:-}}" ]; then sleep "$START_DELAY"; fi
nohup "{sim}" --listen {addr} --speakers 中文女 {fast} >>"$DIR/sim.log" 2>&1 </dev/null &
echo $! >"$PIDFILE"
echo "started cosyvoice-sim on {addr} with pid $!"
"#,
            sim = super::sim::sim_binary().display(),
            fast = FAST.join(" "),
        );
        std::fs::write(dir.path().join("restart.sh"), script).expect("write the restart script");
        let sim = ScriptedSim { dir, addr };
        let status = Command::new("sh")
            .arg(sim.script())
            .arg(sim.dir.path())
            .status()
            .expect("run the restart script");
        assert!(status.success(), "the restart script starts the sim");
        sim
    }

    pub fn script(&self) -> PathBuf {
        self.dir.path().join("restart.sh")
    }

    /// The `restart:` command for the gateway.
    pub fn command_yaml(&self) -> String {
        format!(
            "[\"sh\", \"{}\", \"{}\"]",
            self.script().display(),
            self.dir.path().display()
        )
    }

    pub fn pid(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("sim.pid"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `requests` from `/__sim/stats`, or None while nothing answers.
    pub async fn requests(&self) -> Option<u64> {
        let resp = reqwest::Client::new()
            .get(self.url("/__sim/stats"))
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .ok()?;
        let v: serde_json::Value = resp.json().await.ok()?;
        v["requests"].as_u64()
    }

    pub async fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.requests().await.is_none() {
            assert!(
                Instant::now() < deadline,
                "the scripted sim did not come up:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn fault(&self, kind: &str, count: u64) {
        let resp = client()
            .post(self.url("/__sim/fault"))
            .json(&json!({"kind": kind, "count": count}))
            .send()
            .await
            .expect("fault armed");
        assert!(resp.status().is_success());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sim.log")).unwrap_or_default()
    }
}

impl Drop for ScriptedSim {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").arg("-9").arg(&pid).status();
        }
    }
}
