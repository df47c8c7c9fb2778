//! The status page in a real browser: headless Chromium (Debian `chromium`) opens the admin
//! listener's `GET /`, runs its script against `/admin/status`, and the rendered page shows both
//! backends of the pool, the one killed before as down and the other as healthy. A screenshot
//! is saved as `target/status-page.png` (the README shows the copy in `docs/`).

mod common;

use common::gateway::{free_port, pool_yaml, Gateway};
use common::sim::Sim;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const FAST: &[&str] = &["--rtf", "0.01", "--first-chunk-ms", "5"];

/// The browser: `CHROMIUM` when set, else `chromium` on PATH. Missing is a failure, never a skip.
fn chromium() -> String {
    let bin = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_string());
    let found = Command::new(&bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{bin} is not installed: scripts/test.sh installs Debian's `chromium` (apt-get install -y chromium)"
    );
    bin
}

/// Runs headless Chromium on `url` with `extra` flags, killed after 90 s.
fn browse(url: &str, extra: &[&str]) -> Output {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,860",
            // Let the page's script fetch /admin/status and draw before the DOM is taken.
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().expect("chromium status").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("chromium output")
}

/// The `<tr>` of `addr` in the rendered backends table.
fn backend_row<'a>(dom: &'a str, addr: &str) -> &'a str {
    let start = dom
        .find(&format!("data-backend=\"{addr}\""))
        .unwrap_or_else(|| panic!("backend {addr} is not on the page:\n{dom}"));
    let end = dom[start..].find("</tr>").map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

#[tokio::test]
async fn the_status_page_shows_a_killed_backend_as_down() {
    let up = Sim::start(FAST);
    let doomed = Sim::start(FAST);
    let admin_port = free_port();
    let gw = Gateway::start(&format!(
        "  admin: {{ addr: 127.0.0.1:{admin_port} }}\n  cache:\n    memory: {{ max: 16MiB }}\n{}",
        pool_yaml("cosyvoice_fastapi", &[up.addr(), doomed.addr()], "")
    ));
    let admin = format!("http://127.0.0.1:{admin_port}");
    let resp = reqwest::Client::new()
        .post(gw.url("/generate"))
        .json(&serde_json::json!({"text": "Status page.", "mode": "sft", "spk_id": "中文女"}))
        .send()
        .await
        .expect("generate");
    assert_eq!(resp.status(), 200);

    doomed.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows: Value = reqwest::get(format!("{admin}/admin/backends"))
            .await
            .expect("backends")
            .json()
            .await
            .expect("json");
        let down = rows
            .as_array()
            .expect("a list")
            .iter()
            .any(|r| r["addr"] == doomed.addr().to_string() && r["healthy"] == false);
        if down {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed backend is still healthy: {rows}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let url = format!("{admin}/");
    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || browse(&url, &["--dump-dom"])
    })
    .await
    .expect("browser task");
    let html = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(
        html.contains("data-loaded=\"true\""),
        "the page's script did not load /admin/status:\n{html}\n{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let alive = backend_row(&html, &up.addr().to_string());
    assert!(
        alive.contains("data-health=\"healthy\"") && alive.contains(">healthy<"),
        "{alive}"
    );
    let dead = backend_row(&html, &doomed.addr().to_string());
    assert!(
        dead.contains("data-health=\"down\"") && dead.contains(">down<"),
        "{dead}"
    );
    assert!(
        html.contains("data-pool=\"cosyvoice\""),
        "the queue table lists the pool"
    );
    assert!(html.contains(">1 / 2<"), "the healthy count reads 1 / 2:\n{html}");

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let flag = format!("--screenshot={}", shot.display());
    let out = tokio::task::spawn_blocking(move || browse(&url, &[&flag]))
        .await
        .expect("browser task");
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot at {}: {e}\n{}",
            shot.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "a real PNG"
    );
}
