//! Running one restart command: argv without a shell, in its directory with its environment,
//! bounded by its timeout, its output logged line by line under the backend's name. The
//! command is expected to start the server in the background and exit; a server that keeps the
//! command's stdout or stderr open does not hold the supervisor up (the output is read only
//! until the command itself has exited, plus a short grace).

use crate::config::RestartConf;
use log::{info, warn};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

/// How long output is still read after the command exited.
const OUTPUT_GRACE: Duration = Duration::from_millis(300);
/// At most this many lines of each stream are logged per run.
const MAX_LINES: usize = 200;

/// Why a restart command did not do its job; the `outcome` label of the restart metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// It could not start, or exited unsuccessfully.
    Failed(String),
    /// It ran past `restart.timeout` and was killed.
    Timeout(Duration),
}

impl CommandError {
    pub fn outcome(&self) -> &'static str {
        match self {
            CommandError::Failed(_) => "command_failed",
            CommandError::Timeout(_) => "timeout",
        }
    }
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::Failed(why) => f.write_str(why),
            CommandError::Timeout(t) => write!(f, "still running after {} ms; killed", t.as_millis()),
        }
    }
}

/// Runs `conf.command` to completion (or its timeout); `name` labels the log lines.
pub async fn run(conf: &RestartConf, name: &str) -> Result<(), CommandError> {
    let argv = &conf.command.0;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .envs(&conf.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = &conf.dir {
        cmd.current_dir(dir);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| CommandError::Failed(format!("cannot start {:?}: {e}", argv[0])))?;
    let readers = [
        child
            .stdout
            .take()
            .map(|s| log_lines(s, name.to_string(), "stdout")),
        child
            .stderr
            .take()
            .map(|s| log_lines(s, name.to_string(), "stderr")),
    ];
    let result = match tokio::time::timeout(conf.timeout.0, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(CommandError::Failed(format!("{:?} {status}", argv[0]))),
        Ok(Err(e)) => Err(CommandError::Failed(format!("waiting for {:?}: {e}", argv[0]))),
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            Err(CommandError::Timeout(conf.timeout.0))
        }
    };
    for reader in readers.into_iter().flatten() {
        let abort = reader.abort_handle();
        if tokio::time::timeout(OUTPUT_GRACE, reader).await.is_err() {
            // A background child inherited the pipe; stop listening to it.
            abort.abort();
        }
    }
    result
}

fn log_lines(
    stream: impl AsyncRead + Unpin + Send + 'static,
    name: String,
    which: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        let mut n = 0;
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    n += 1;
                    if n <= MAX_LINES {
                        info!("restart of backend {name}: {which}: {line}");
                    } else if n == MAX_LINES + 1 {
                        warn!("restart of backend {name}: {which}: more output not logged");
                    }
                }
                Ok(None) | Err(_) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfDuration, NonEmpty};

    fn conf(argv: &[&str], timeout_ms: u64) -> RestartConf {
        let yaml = format!(
            "command: [{}]\ntimeout: {timeout_ms}ms",
            argv.iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut c: RestartConf = serde_yaml::from_str(&yaml).expect("restart conf");
        c.command = NonEmpty(argv.iter().map(|s| s.to_string()).collect());
        c.timeout = ConfDuration(Duration::from_millis(timeout_ms));
        c
    }

    #[tokio::test]
    async fn success_failure_and_timeout() {
        assert_eq!(run(&conf(&["true"], 5000), "t").await, Ok(()));
        let e = run(&conf(&["false"], 5000), "t").await.unwrap_err();
        assert_eq!(e.outcome(), "command_failed");
        let e = run(&conf(&["/nonexistent/restart"], 5000), "t")
            .await
            .unwrap_err();
        assert_eq!(e.outcome(), "command_failed");
        let e = run(&conf(&["sleep", "5"], 200), "t").await.unwrap_err();
        assert_eq!(e.outcome(), "timeout");
    }

    #[tokio::test]
    async fn dir_and_env_apply_and_a_background_child_does_not_hold_it_up() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut c = conf(
            &["sh", "-c", "echo \"$GREETING\" > out.txt; sleep 5 & exit 0"],
            5000,
        );
        c.dir = Some(dir.path().to_path_buf());
        c.env.insert("GREETING".into(), "hello".into());
        let started = std::time::Instant::now();
        assert_eq!(run(&c, "t").await, Ok(()));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let out = std::fs::read_to_string(dir.path().join("out.txt")).expect("written in dir");
        assert_eq!(out.trim(), "hello");
    }
}
