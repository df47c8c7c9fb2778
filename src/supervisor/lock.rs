//! The restart lock shared by gateway instances through Redis: `SET key id NX PX ttl` before a
//! restart; after it, the holder keeps the key for one more `cooldown` (compare-and-`PEXPIRE`),
//! so the cooldown holds across instances too and an instance whose health checks have not yet
//! seen the restarted backend does not restart it again. Whoever holds it restarts; the others
//! leave the backend alone. When Redis does not answer, nobody restarts (fail closed: two instances
//! killing each other's fresh server is worse than waiting).

use crate::config::RedisConf;
use crate::redis_link::RedisLink;
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;

static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end",
    )
});

/// What came of an attempt to take the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    Acquired,
    /// Another instance holds it.
    Held,
    /// Redis did not answer.
    Unavailable,
}

pub struct RestartLock {
    link: RedisLink,
    /// This instance's token, the lock's value.
    id: String,
}

impl RestartLock {
    pub fn new(conf: &RedisConf) -> Result<Self, String> {
        Ok(Self {
            link: RedisLink::new(conf.url.expose(), conf.timeout.0, "restart_lock")?,
            id: format!("{:032x}", rand::random::<u128>()),
        })
    }

    fn key(addr: SocketAddr) -> String {
        format!("cosygate:restart-lock:{addr}")
    }

    /// Takes the lock on `addr` for at most `ttl`.
    pub async fn acquire(&self, addr: SocketAddr, ttl: Duration) -> Lock {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = redis::cmd("SET");
        cmd.arg(Self::key(addr)).arg(&self.id).arg("NX").arg("PX").arg(ms);
        match self.link.query::<Option<String>>(&cmd).await {
            Some(Some(_)) => Lock::Acquired,
            Some(None) => Lock::Held,
            None => Lock::Unavailable,
        }
    }

    /// Lets the lock on `addr` expire `keep` from now, if this instance still holds it.
    pub async fn release(&self, addr: SocketAddr, keep: Duration) {
        let ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX).max(1);
        let _: Option<i64> = self
            .link
            .run_script(&RELEASE, &[&Self::key(addr)], &[self.id.clone(), ms.to_string()])
            .await;
    }
}
