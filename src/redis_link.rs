//! A connection to Redis that never holds a request up: it connects lazily (at most one attempt
//! every few seconds while Redis is down), bounds every round trip by a short timeout, and
//! reports failures so the caller can go on without Redis. Shared by the features that keep
//! state in Redis (rate limits now; the cache tier and locks later).
//!
//! Redis URLs may carry a password (`redis://:PASSWORD@host:6379/0`, or `?pass=` on a unix
//! socket URL). [`mask_url_secrets`] masks them in any text; every message that could contain a
//! URL (invalid URLs, connection errors, config errors) goes through it, so a password never
//! reaches a log line, a `cosygate -t` message or an answer.

use log::warn;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::{Duration, Instant};

/// How long to wait after a failed connection attempt before trying again.
const RECONNECT_BACKOFF: Duration = Duration::from_secs(2);
/// After a failed call, calls go on without Redis for this long.
const SKIP_AFTER_FAILURE: Duration = Duration::from_millis(500);
/// At most one warning per this interval, so an outage does not flood the log.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

pub struct RedisLink {
    client: redis::Client,
    timeout: Duration,
    what: &'static str,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    next_attempt: Mutex<Option<Instant>>,
    skip_until: Mutex<Option<Instant>>,
    last_warning: Mutex<Option<Instant>>,
}

impl RedisLink {
    /// Checks the URL; does not connect yet. `what` names the user in logs and metrics.
    pub fn new(url: &str, timeout: Duration, what: &'static str) -> Result<Self, String> {
        // The URL is not quoted: a malformed one may not show where its password is.
        let client = redis::Client::open(url)
            .map_err(|e| mask_url_secrets(&format!("{what}: not a valid Redis URL: {e}")))?;
        Ok(Self {
            client,
            timeout,
            what,
            conn: tokio::sync::Mutex::new(None),
            next_attempt: Mutex::new(None),
            skip_until: Mutex::new(None),
            last_warning: Mutex::new(None),
        })
    }

    /// A connection, or None while Redis is unreachable (without waiting longer than `timeout`).
    async fn connection(&self) -> Option<ConnectionManager> {
        let mut guard = self.conn.lock().await;
        if let Some(conn) = guard.as_ref() {
            return Some(conn.clone());
        }
        let now = Instant::now();
        {
            let mut next = self.next_attempt.lock();
            if next.is_some_and(|t| now < t) {
                return None;
            }
            *next = Some(now + RECONNECT_BACKOFF);
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(RECONNECT_BACKOFF);
        let attempt = self.client.get_connection_manager_with_config(config);
        match tokio::time::timeout(self.timeout * 4, attempt).await {
            Ok(Ok(conn)) => {
                *guard = Some(conn.clone());
                Some(conn)
            }
            Ok(Err(e)) => {
                self.failed(&format!("cannot connect: {e}"));
                None
            }
            Err(_) => {
                self.failed("cannot connect: timed out");
                None
            }
        }
    }

    /// Runs `script` with `keys` and `args` in one round trip, or None if Redis did not answer
    /// in time (counted and logged).
    pub async fn run_script<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[&str],
        args: &[String],
    ) -> Option<T> {
        let mut invocation = script.prepare_invoke();
        for k in keys {
            invocation.key(*k);
        }
        for a in args {
            invocation.arg(a.as_str());
        }
        self.call(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await
    }

    /// Runs a command or pipeline (`redis::cmd(..).query_async`, `redis::pipe()...`) within the
    /// timeout, or None if Redis did not answer in time (counted and logged).
    pub async fn query<T: redis::FromRedisValue>(&self, q: &(impl ToQuery + Sync)) -> Option<T> {
        self.call(|mut conn| async move { q.run(&mut conn).await }).await
    }

    async fn call<T, F, Fut>(&self, f: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        // Right after a failure, skip Redis for a moment instead of paying the timeout on
        // every call of every request while it is down.
        if self
            .skip_until
            .lock()
            .as_ref()
            .copied()
            .is_some_and(|t| Instant::now() < t)
        {
            return None;
        }
        let conn = self.connection().await?;
        match tokio::time::timeout(self.timeout, f(conn)).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                None
            }
            Err(_) => {
                self.failed(&format!("no answer within {} ms", self.timeout.as_millis()));
                None
            }
        }
    }

    fn failed(&self, why: &str) {
        {
            let mut skip = self.skip_until.lock();
            *skip = Some(Instant::now() + SKIP_AFTER_FAILURE);
        }
        crate::metrics::REDIS_ERRORS.with_label_values(&[self.what]).inc();
        let now = Instant::now();
        {
            let mut last = self.last_warning.lock();
            if last.is_none_or(|t| now.duration_since(t) >= WARN_INTERVAL) {
                *last = Some(now);
                let why = mask_url_secrets(why);
                warn!("redis ({}): {why}; going on without Redis", self.what);
            }
        }
    }
}

/// `text` with the password of every URL in it replaced by `****`:
/// `redis://:pw@host:6379/0` becomes `redis://:****@host:6379/0`, `redis://user:pw@host` becomes
/// `redis://user:****@host`, a user-info without `:` (`redis://pw@host`) is masked whole, and
/// `pass=`/`password=` query parameters (unix-socket URLs) are masked too. It does not need a
/// well-formed URL (a config error may quote a mangled one): whatever stands before an `@`
/// back to a space, quote, bracket or `/` is user-info. Pure; any text.
pub fn mask_url_secrets(text: &str) -> String {
    let is_delimiter = |c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '/' | '"' | '\'' | '`' | ',' | '[' | ']' | '{' | '}' | '(' | ')' | '<' | '>' | '=' | '\\'
            )
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.find(is_delimiter).unwrap_or(rest.len());
        let segment = &rest[..end];
        match segment.rfind('@') {
            Some(at) if at > 0 => {
                let userinfo = &segment[..at];
                match userinfo.find(':') {
                    Some(colon) if colon + 1 < userinfo.len() => {
                        out.push_str(&userinfo[..=colon]);
                        out.push_str("****");
                    }
                    Some(_) => out.push_str(userinfo),
                    None => out.push_str("****"),
                }
                out.push_str(&segment[at..]);
            }
            _ => out.push_str(segment),
        }
        // The delimiter itself (one character), if any.
        let mut tail = rest[end..].chars();
        if let Some(c) = tail.next() {
            out.push(c);
        }
        rest = tail.as_str();
    }
    mask_query_passwords(&out)
}

/// Masks the values of `pass=` and `password=` query parameters.
fn mask_query_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let found = ["pass=", "password="]
            .iter()
            .filter_map(|key| {
                rest.match_indices(key)
                    .find(|(i, _)| *i > 0 && matches!(rest.as_bytes()[i - 1], b'?' | b'&'))
                    .map(|(i, _)| (i, key.len()))
            })
            .min();
        let Some((i, key_len)) = found else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..i + key_len]);
        let value = &rest[i + key_len..];
        let end = value
            .find(|c: char| matches!(c, '&' | '#' | '"' | '\'' | '`') || c.is_whitespace())
            .unwrap_or(value.len());
        out.push_str("****");
        rest = &value[end..];
    }
}

/// A command or a pipeline, ready to send.
pub trait ToQuery {
    fn run<T: redis::FromRedisValue>(
        &self,
        conn: &mut ConnectionManager,
    ) -> impl std::future::Future<Output = redis::RedisResult<T>> + Send;
}

impl ToQuery for redis::Cmd {
    fn run<T: redis::FromRedisValue>(
        &self,
        conn: &mut ConnectionManager,
    ) -> impl std::future::Future<Output = redis::RedisResult<T>> + Send {
        self.query_async(conn)
    }
}

impl ToQuery for redis::Pipeline {
    fn run<T: redis::FromRedisValue>(
        &self,
        conn: &mut ConnectionManager,
    ) -> impl std::future::Future<Output = redis::RedisResult<T>> + Send {
        self.query_async(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_masked() {
        for (url, masked) in [
            ("redis://:pw@127.0.0.1:6379/0", "redis://:****@127.0.0.1:6379/0"),
            ("redis://user:p%40ss@host/1", "redis://user:****@host/1"),
            ("rediss://secret@host", "rediss://****@host"),
            ("redis://a:b@c@host:1", "redis://a:****@host:1"),
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            (
                "redis+unix:///run/r.sock?db=1&pass=pw",
                "redis+unix:///run/r.sock?db=1&pass=****",
            ),
            ("unix:///s?password=pw#x", "unix:///s?password=****#x"),
        ] {
            assert_eq!(mask_url_secrets(url), masked);
        }
        let text = "invalid type: string \"redis://:hunter2@h:1/0\", then redis://x:y@z and bypass=1";
        let masked = mask_url_secrets(text);
        assert!(!masked.contains("hunter2") && !masked.contains(":y@"), "{masked}");
        assert!(masked.ends_with("bypass=1"), "{masked}");
        assert_eq!(
            mask_url_secrets("no urls here, 中文 ://"),
            "no urls here, 中文 ://"
        );
        // Mangled URLs, as a config error may quote them (found by the config fuzz target).
        for mangled in [
            "url: 9redis: //:hunter2@127.0.0.1:6379/0",
            "\"redis:/*a/:hunter2@127.0.0.1:6379/0\"",
            "redis:/hunter2@h",
            "redis://:p@hunter2@h",
            "{ url: redis://u:hunter2@h }",
        ] {
            let masked = mask_url_secrets(mangled);
            assert!(!masked.contains("hunter2"), "{mangled} gave {masked}");
        }
    }

    #[test]
    fn an_invalid_url_error_does_not_show_the_password() {
        let err = RedisLink::new("redis://:hunter2@[bad", Duration::from_millis(10), "test")
            .err()
            .expect("invalid");
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("not a valid Redis URL"), "{err}");
    }
}
