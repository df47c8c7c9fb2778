//! The fallback voice: a local engine (espeak-ng by default) run as a subprocess when no backend
//! can serve. Its argv comes from the config and is never passed through a shell; `{out}` becomes
//! a fresh temp WAV path and `{text}` the text (a separate argument, so no quoting issues). At
//! most `concurrency` processes run at once, each killed after `timeout`. The WAV it writes is
//! checked like any backend answer. The answer is marked `X-Degraded: fallback`.

use crate::api::{wav, ApiError};
use crate::config::FallbackConf;
use bytes::Bytes;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::Semaphore;

pub struct Fallback {
    argv: Vec<String>,
    permits: Semaphore,
    timeout: Duration,
    /// Whether fallback audio may be cached (`fallback.cache`).
    pub cacheable: bool,
}

/// Deletes the temp WAV however the call ends.
struct TempWav(PathBuf);

impl Drop for TempWav {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Fallback {
    pub fn new(conf: &FallbackConf) -> Self {
        Self {
            argv: conf.command.0.clone(),
            permits: Semaphore::new(conf.concurrency.max(1)),
            timeout: conf.timeout.0,
            cacheable: conf.cache,
        }
    }

    /// Speaks `text`, or says why the fallback could not.
    pub async fn speak(&self, text: &str) -> Result<Bytes, ApiError> {
        let fail = |why: String| {
            ApiError::new(
                502,
                "fallback_failed",
                format!("no backend could serve and the fallback voice failed: {why}"),
            )
        };
        let _permit = self.permits.acquire().await.map_err(|e| fail(e.to_string()))?;
        let out = TempWav(
            std::env::temp_dir().join(format!("cosygate-fallback-{:032x}.wav", rand::random::<u128>())),
        );
        let out_str = out.0.to_string_lossy().into_owned();
        let args: Vec<String> = self
            .argv
            .iter()
            .map(|a| a.replace("{out}", &out_str).replace("{text}", text))
            .collect();
        let (program, rest) = args.split_first().ok_or_else(|| fail("empty command".into()))?;
        let mut child = tokio::process::Command::new(program)
            .args(rest)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("cannot run {program}: {e}")))?;
        let status = match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Err(_) => {
                return Err(fail(format!(
                    "{program} took longer than {} s",
                    self.timeout.as_secs_f64()
                )))
            }
        };
        if !status.success() {
            return Err(fail(format!("{program} exited with {status}")));
        }
        let bytes = tokio::fs::read(&out.0)
            .await
            .map_err(|e| fail(format!("no WAV written: {e}")))?;
        wav::parse_wav(&bytes).map_err(|e| fail(format!("the WAV is not valid: {e}")))?;
        Ok(Bytes::from(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfDuration, NonEmpty};

    fn conf(argv: &[&str]) -> FallbackConf {
        FallbackConf {
            command: NonEmpty(argv.iter().map(|s| s.to_string()).collect()),
            concurrency: 1,
            timeout: ConfDuration(Duration::from_millis(500)),
            cache: false,
        }
    }

    #[tokio::test]
    async fn failures_are_clear_errors() {
        let e = Fallback::new(&conf(&["/nonexistent/voice"]))
            .speak("hi")
            .await
            .expect_err("missing program");
        assert_eq!((e.status, e.code), (502, "fallback_failed"));
        let e = Fallback::new(&conf(&["sleep", "5"]))
            .speak("hi")
            .await
            .expect_err("too slow");
        assert!(e.message.contains("longer than"), "{}", e.message);
        let e = Fallback::new(&conf(&["sh", "-c", "printf junk > \"$0\"", "{out}"]))
            .speak("hi")
            .await
            .expect_err("bad wav");
        assert!(e.message.contains("not valid"), "{}", e.message);
    }

    #[tokio::test]
    async fn the_text_is_one_argument_never_shell_code() {
        // `sh -c 'script' {out} {text}`: the script sees the text only as $1.
        let script = "printf 'RIFF' > \"$0\"; [ \"$1\" = 'a; rm -rf / #' ] || exit 3";
        let e = Fallback::new(&conf(&["sh", "-c", script, "{out}", "{text}"]))
            .speak("a; rm -rf / #")
            .await
            .expect_err("not a wav");
        assert!(
            e.message.contains("not valid"),
            "the script ran with the text as one argument: {}",
            e.message
        );
    }
}
