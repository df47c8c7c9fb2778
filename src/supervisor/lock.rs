//! The restart lock shared by gateway instances through Redis: `SET key id NX PX ttl` before a
//! restart; after it, the holder keeps the key for one more `cooldown` (compare-and-`PEXPIRE`),
//! so the cooldown holds across instances too and an instance whose health checks have not yet
//! seen the restarted backend does not restart it again. Whoever holds it restarts; the others
//! leave the backend alone. When Redis does not answer, nobody restarts (fail closed: two instances
//! killing each other's fresh server is worse than waiting). The lock itself is `redis_lock`'s,
//! shared with the cache.

use crate::config::RedisConf;
use crate::redis_link::RedisLink;
use crate::redis_lock::{self, Release};
use std::net::SocketAddr;
use std::time::Duration;

/// What came of an attempt to take the lock (`Unavailable`: Redis did not answer).
pub use crate::redis_lock::LockAttempt as Lock;

pub struct RestartLock {
    link: RedisLink,
    /// This instance's token, the lock's value.
    id: String,
}

impl RestartLock {
    pub fn new(conf: &RedisConf) -> Result<Self, String> {
        Ok(Self {
            link: RedisLink::new(conf.url.expose(), conf.timeout.0, "restart_lock")?,
            id: redis_lock::new_token(),
        })
    }

    fn key(addr: SocketAddr) -> String {
        format!("cosygate:restart-lock:{addr}")
    }

    /// Takes the lock on `addr` for at most `ttl`.
    pub async fn acquire(&self, addr: SocketAddr, ttl: Duration) -> Lock {
        redis_lock::acquire(&self.link, &Self::key(addr), &self.id, ttl).await
    }

    /// Lets the lock on `addr` expire `keep` from now, if this instance still holds it.
    pub async fn release(&self, addr: SocketAddr, keep: Duration) {
        redis_lock::release(&self.link, &Self::key(addr), &self.id, Release::After(keep)).await;
    }
}
