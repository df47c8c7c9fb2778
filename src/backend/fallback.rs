//! The fallback voice: a local engine (espeak-ng by default) run as a subprocess when no backend
//! can serve. Its argv comes from the config and is never passed through a shell. Placeholders:
//! `{out}` becomes a fresh temp WAV path (always absolute, so never an option); the request text
//! is always written to the engine's **stdin** (espeak-ng reads it with `--stdin`), and `{text}`
//! in an argument is allowed only where it cannot be read as an option, a file name or code (see
//! [`check_command`]): as a whole argument after a `--` end-of-options argument, or after the
//! `=` of a `--name=` argument. `cosygate -t` refuses any other placement. At most
//! `concurrency` processes run at once, each killed after `timeout`. The WAV it writes is
//! checked like any backend answer. The answer is marked `X-Degraded: fallback`.

use crate::api::wav;
use crate::config::FallbackConf;
use crate::synth::SynthError;
use bytes::Bytes;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

/// Programs that run their arguments as code (`sh -c '... {text}'`): `--name={text}` is not
/// safe with them, only a whole `{text}` after `--` (a positional parameter) or stdin.
const INTERPRETERS: &[&str] = &[
    "sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "fish", "csh", "tcsh", "busybox", "env", "xargs",
    "python", "python3", "perl", "ruby", "node", "php", "lua", "awk", "gawk",
];

/// Checks where `{text}` and `{out}` stand in a fallback argv; the error says what to write
/// instead. Runs at config load (`cosygate -t`) and again when the fallback is built.
pub fn check_command(argv: &[String]) -> Result<(), String> {
    const FIX: &str = "the text arrives on stdin: use [\"espeak-ng\", \"-v\", \"en-us\", \"-w\", \"{out}\", \"--stdin\"], or put {text} as a whole argument after \"--\"";
    let Some((program, args)) = argv.split_first() else {
        return Err("fallback.command is empty".into());
    };
    if program.contains("{text}") || program.contains("{out}") {
        return Err(format!(
            "fallback.command: the program {program:?} cannot contain a placeholder"
        ));
    }
    if !args.iter().any(|a| a.contains("{out}")) {
        return Err(
            "fallback.command has no {out} argument: the engine must write its WAV there (espeak-ng: -w {out})"
                .into(),
        );
    }
    let name = program.rsplit('/').next().unwrap_or(program);
    let interpreter = INTERPRETERS.contains(&name)
        || INTERPRETERS.iter().any(|i| {
            name.strip_prefix(i)
                .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
        });
    let mut after_end_of_options = false;
    for arg in args {
        if arg == "--" {
            after_end_of_options = true;
            continue;
        }
        if !arg.contains("{text}") {
            continue;
        }
        if arg == "{text}" && after_end_of_options {
            continue;
        }
        if !interpreter && !after_end_of_options && is_long_option_value(arg) {
            continue;
        }
        let why = if interpreter {
            format!("{name} runs its arguments as code")
        } else if arg == "{text}" {
            "a text starting with '-' would be read as an option (\"-f/etc/passwd\" reads that file)".into()
        } else {
            "only \"--name={text}\" or a whole {text} after \"--\" keeps the text from being read as an option".into()
        };
        return Err(format!(
            "fallback.command: {{text}} in {arg:?} is not safe: {why}; {FIX}"
        ));
    }
    Ok(())
}

/// `--name=...{text}...`: the text is inside the value of a long option, after its `=`.
fn is_long_option_value(arg: &str) -> bool {
    let Some((name, value)) = arg.split_once('=') else {
        return false;
    };
    let Some(name) = name.strip_prefix("--") else {
        return false;
    };
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && value.contains("{text}")
}

pub struct Fallback {
    argv: Vec<String>,
    /// Why the argv is refused, if it is (normally caught by `cosygate -t` already).
    unsafe_command: Option<String>,
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
    /// Built once at startup from `fallback:`.
    pub fn new(conf: &FallbackConf) -> Self {
        Self {
            argv: conf.command.0.clone(),
            unsafe_command: check_command(&conf.command.0).err(),
            permits: Semaphore::new(conf.concurrency.max(1)),
            timeout: conf.timeout.0,
            cacheable: conf.cache,
        }
    }

    /// Speaks `text` (already validated), or says why the fallback could not. Runs the engine
    /// with the text on stdin; never passes it through a shell or where it could be an option.
    pub async fn speak(&self, text: &str) -> Result<Bytes, SynthError> {
        let fail = SynthError::FallbackFailed;
        if let Some(why) = &self.unsafe_command {
            return Err(fail(format!("it is configured unsafely ({why})")));
        }
        let _permit = self.permits.acquire().await.map_err(|e| fail(e.to_string()))?;
        let out = TempWav(
            std::env::temp_dir().join(format!("cosygate-fallback-{:032x}.wav", rand::random::<u128>())),
        );
        let out_str = out.0.to_string_lossy().into_owned();
        // `{out}` first, then `{text}`: a text containing "{out}" stays text.
        let args: Vec<String> = self
            .argv
            .iter()
            .map(|a| a.replace("{out}", &out_str).replace("{text}", text))
            .collect();
        let (program, rest) = args.split_first().ok_or_else(|| fail("empty command".into()))?;
        let mut child = tokio::process::Command::new(program)
            .args(rest)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("cannot run {program}: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            // Written beside the wait: an engine that does not read stdin must not block us
            // (the write then fails with a broken pipe, which is fine).
            let input = text.as_bytes().to_vec();
            tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
                let _ = stdin.shutdown().await;
            });
        }
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

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn conf(a: &[&str]) -> FallbackConf {
        FallbackConf {
            command: NonEmpty(argv(a)),
            concurrency: 1,
            timeout: ConfDuration(Duration::from_millis(500)),
            cache: false,
        }
    }

    #[test]
    fn text_may_stand_only_where_it_cannot_be_an_option() {
        for ok in [
            &["espeak-ng", "-v", "en-us", "-w", "{out}", "--stdin"][..],
            &["espeak-ng", "-w", "{out}", "--", "{text}"],
            &["piper", "--output_file={out}", "--text={text}"],
            &["engine", "--out", "{out}", "--say=<speak>{text}</speak>"],
            &["sh", "-c", "engine -w \"$0\" -- \"$1\"", "{out}", "--", "{text}"],
        ] {
            assert_eq!(check_command(&argv(ok)), Ok(()), "{ok:?}");
        }
        for (bad, says) in [
            (
                &["espeak-ng", "-v", "en-us", "-w", "{out}", "{text}"][..],
                "read as an option",
            ),
            (
                &["espeak-ng", "-w", "{out}", "-f{text}"],
                "only \"--name={text}\"",
            ),
            (&["espeak-ng", "-w", "{out}", "x{text}"], "only \"--name={text}\""),
            (
                &["espeak-ng", "-w", "{out}", "--text", "{text}"],
                "read as an option",
            ),
            (
                &["espeak-ng", "-w", "{out}", "--={text}"],
                "only \"--name={text}\"",
            ),
            (
                &["sh", "-c", "espeak-ng -w {out} {text}"],
                "sh runs its arguments as code",
            ),
            (
                &["/bin/bash", "-c", "--x={text}", "{out}"],
                "bash runs its arguments as code",
            ),
            (
                &["python3.11", "-c", "{text}", "{out}"],
                "python3.11 runs its arguments as code",
            ),
            (&["{text}", "{out}"], "cannot contain a placeholder"),
            (&["espeak-ng", "--stdin"], "no {out} argument"),
        ] {
            let e = check_command(&argv(bad)).expect_err("refused");
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[tokio::test]
    async fn failures_are_clear_errors() {
        let e = Fallback::new(&conf(&["/nonexistent/voice", "{out}"]))
            .speak("hi")
            .await
            .expect_err("missing program");
        assert!(matches!(e, SynthError::FallbackFailed(_)), "{e}");
        let e = Fallback::new(&conf(&["sh", "-c", "sleep 5", "{out}"]))
            .speak("hi")
            .await
            .expect_err("too slow");
        assert!(e.to_string().contains("longer than"), "{e}");
        let e = Fallback::new(&conf(&["sh", "-c", "printf junk > \"$0\"", "{out}"]))
            .speak("hi")
            .await
            .expect_err("bad wav");
        assert!(e.to_string().contains("not valid"), "{e}");
        let e = Fallback::new(&conf(&["espeak-ng", "-w", "{out}", "{text}"]))
            .speak("-f/etc/hostname")
            .await
            .expect_err("an unsafe command never runs");
        assert!(e.to_string().contains("configured unsafely"), "{e}");
    }

    #[tokio::test]
    async fn the_text_arrives_on_stdin_as_it_is() {
        // The script fails unless stdin holds exactly the text; the WAV check then fails on
        // purpose ("not valid"), which proves the script got that far.
        let text = "-f /etc/hostname; rm -rf / # $(id) `id`";
        let script =
            "printf 'RIFF' > \"$0\"; [ \"$(cat)\" = '-f /etc/hostname; rm -rf / # $(id) `id`' ] || exit 3";
        let e = Fallback::new(&conf(&["sh", "-c", script, "{out}"]))
            .speak(text)
            .await
            .expect_err("not a wav");
        assert!(
            e.to_string().contains("not valid"),
            "stdin held the text as is: {}",
            e
        );
        // The same text after "--" is one positional argument, never shell code.
        // (`sh -c SCRIPT A B C`: A is $0, the "--" is $1, the text $2.)
        let script =
            "printf 'RIFF' > \"$0\"; [ \"$2\" = '-f /etc/hostname; rm -rf / # $(id) `id`' ] || exit 3";
        let e = Fallback::new(&conf(&["sh", "-c", script, "{out}", "--", "{text}"]))
            .speak(text)
            .await
            .expect_err("not a wav");
        assert!(
            e.to_string().contains("not valid"),
            "$2 held the text as is: {}",
            e
        );
    }
}
