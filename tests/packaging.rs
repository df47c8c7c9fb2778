//! conf/systemd/cosygate.service: `systemd-analyze verify` accepts it (a copy whose ExecStart,
//! ExecStartPre and ExecReload point at the built binary and this checkout's reload script, so
//! the executables it names exist), with no warning; it keeps the settings the README promises;
//! and `systemd-analyze security --offline=true` rates its exposure low. A missing
//! systemd-analyze fails the test (Debian package `systemd`; scripts/test.sh installs it).

use std::process::Command;

const UNIT: &str = "conf/systemd/cosygate.service";

fn unit_for_this_build(dir: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(UNIT).expect("read the unit");
    let reload = std::fs::canonicalize("scripts/reload.sh").expect("scripts/reload.sh");
    let text = text
        .replace("/usr/local/bin/cosygate", env!("CARGO_BIN_EXE_cosygate"))
        .replace("/usr/local/lib/cosygate/reload.sh", &reload.display().to_string());
    let path = dir.join("cosygate.service");
    std::fs::write(&path, text).expect("write the unit copy");
    path
}

fn systemd_analyze(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .env("SYSTEMD_COLORS", "0")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run systemd-analyze ({e}): install the Debian package `systemd` (scripts/test.sh does)")
        });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_unit_verifies_without_warnings() {
    let dir = tempfile::tempdir().expect("dir");
    let unit = unit_for_this_build(dir.path());
    let (ok, stdout, stderr) = systemd_analyze(&["verify", &unit.display().to_string()]);
    assert!(ok, "systemd-analyze verify failed:\n{stdout}{stderr}");
    assert!(
        stderr.trim().is_empty() && stdout.trim().is_empty(),
        "systemd-analyze verify warned:\n{stdout}{stderr}"
    );

    // The verification is not vacuous: a misspelt key and a missing binary are reported.
    let bad = std::fs::read_to_string(&unit)
        .expect("read")
        .replace("Type=exec", "Typ=exec")
        .replace(env!("CARGO_BIN_EXE_cosygate"), "/nonexistent/cosygate");
    let bad_dir = tempfile::tempdir().expect("dir");
    let bad_unit = bad_dir.path().join("cosygate.service");
    std::fs::write(&bad_unit, bad).expect("write");
    let (ok, stdout, stderr) = systemd_analyze(&["verify", &bad_unit.display().to_string()]);
    assert!(!ok, "a unit with a missing binary verified:\n{stdout}{stderr}");
    assert!(
        stderr.contains("Unknown key") && stderr.contains("Typ"),
        "{stderr}"
    );
}

#[test]
fn the_unit_keeps_what_the_readme_promises() {
    let text = std::fs::read_to_string(UNIT).expect("read the unit");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for setting in [
        "Type=exec",
        "User=cosygate",
        "ExecStartPre=/usr/local/bin/cosygate -t -c /etc/cosygate/cosygate.yaml",
        "ExecStart=/usr/local/bin/cosygate -c /etc/cosygate/cosygate.yaml",
        "NotifyAccess=all",
        "KillSignal=SIGTERM",
        "Restart=on-failure",
        "LimitNOFILE=65536",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/cache/cosygate /run/cosygate",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces=yes",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "SystemCallArchitectures=native",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "RuntimeDirectory=cosygate",
        "CacheDirectory=cosygate",
    ] {
        assert!(lines.contains(&setting), "{UNIT} lacks {setting}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l
                .starts_with("ExecReload=/usr/local/lib/cosygate/reload.sh -c /etc/cosygate/cosygate.yaml")),
        "ExecReload goes through the reload script"
    );
    // Longer than the drain: grace_period_seconds plus graceful_shutdown_timeout_seconds.
    let stop: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec")
        .parse()
        .expect("TimeoutStopSec in seconds");
    // The default drain deadline with default pools is 185 s, then 10 s for the runtimes.
    assert!(stop > 195, "TimeoutStopSec={stop} leaves no time to drain");
}

#[test]
fn the_unit_exposure_is_low() {
    let dir = tempfile::tempdir().expect("dir");
    let unit = unit_for_this_build(dir.path());
    let (_, stdout, stderr) = systemd_analyze(&["security", "--offline=true", &unit.display().to_string()]);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{stdout}{stderr}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    assert!(score <= 2.5, "exposure {score} (README says 1.9): {line}");
}
