//! A lock in Redis held with a token: `SET key token NX PX hold` takes it, and only the holder,
//! compared by token inside one Lua script, can release it (delete it now, or let it expire
//! after a while). Used by the cache (one instance synthesizes a key while the others wait) and
//! by the supervisor (one instance restarts a backend). Every call is bounded by the link's
//! timeout; what "Redis did not answer" means is each caller's decision.

use crate::redis_link::RedisLink;
use std::sync::LazyLock;
use std::time::Duration;

/// Deletes the lock (ARGV[2] = "0") or lets it expire ARGV[2] ms from now, only while ARGV[1],
/// the caller's token, still holds it. Returns 1 if it did.
static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"#,
    )
});

/// What came of an attempt to take a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockAttempt {
    Acquired,
    /// Another token holds it.
    Held,
    /// Redis did not answer.
    Unavailable,
}

/// How the holder gives a lock up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Delete it now.
    Now,
    /// Keep it (from others) for this long from now, then let it expire.
    After(Duration),
}

/// A fresh random token (128 bits, hex): the value that proves who holds a lock.
pub fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Milliseconds for `PX`/`PEXPIRE`: at least 1 (0 would be an error or mean "delete").
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Takes the lock `key` with `token` for at most `hold`.
pub async fn acquire(link: &RedisLink, key: &str, token: &str, hold: Duration) -> LockAttempt {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(token).arg("NX").arg("PX").arg(millis(hold));
    match link.query::<Option<String>>(&cmd).await {
        Some(Some(_)) => LockAttempt::Acquired,
        Some(None) => LockAttempt::Held,
        None => LockAttempt::Unavailable,
    }
}

/// Whether anyone holds the lock `key` (None: Redis did not answer).
pub async fn is_held(link: &RedisLink, key: &str) -> Option<bool> {
    link.query::<bool>(redis::cmd("EXISTS").arg(key)).await
}

/// Gives the lock `key` up as `how` says, if `token` still holds it; true if it did (false also
/// when Redis did not answer: the lock then expires on its own).
pub async fn release(link: &RedisLink, key: &str, token: &str, how: Release) -> bool {
    let ms = match how {
        Release::Now => 0,
        Release::After(keep) => millis(keep),
    };
    let done: Option<i64> = link
        .run_script(&RELEASE, &[key], &[token.to_string(), ms.to_string()])
        .await;
    done == Some(1)
}
