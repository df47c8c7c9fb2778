//! The Redis tier: audio shared by every gateway instance, and the short-lived lock that makes
//! one instance synthesize a key while the others wait for its result. Each entry is a hash
//! `cosygate:cache:<key>` with fields `wav`, `created` (unix ms) and `sha256`, expiring with the
//! cache TTL; values above `max_value` are not sent. Every call is bounded by the link's timeout;
//! when Redis is away the request goes on without this tier. The lock is `redis_lock`'s (a token,
//! released by compare), on `cosygate:lock:<key>`. The degradation ladder's shared index is a
//! list per family, `cosygate:approx:<family>` (see `cache::approx`).

use super::approx::PER_FAMILY;
use super::entry::{CacheKey, CachedWav};
use super::key::Families;
use crate::api::wav;
use crate::redis_link::RedisLink;
use crate::redis_lock::{self, LockAttempt, Release};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct RedisTier {
    link: RedisLink,
    ttl: Duration,
    max_value: u64,
}

/// The fields of an entry's hash, as `HMGET` returns them: wav, created (Unix ms), sha256, degraded.
type EntryFields = (Option<Vec<u8>>, Option<u64>, Option<String>, Option<u8>);

fn entry_key(key: &CacheKey) -> String {
    format!("cosygate:cache:{}", key.hex())
}

/// The list of a family's most recent exact keys (see `cache::approx`).
fn family_key(family: &CacheKey) -> String {
    format!("cosygate:approx:{}", family.hex())
}

fn lock_key(key: &CacheKey) -> String {
    format!("cosygate:lock:{}", key.hex())
}

impl RedisTier {
    pub fn new(link: RedisLink, ttl: Duration, max_value: u64) -> Self {
        Self { link, ttl, max_value }
    }

    /// The entry, if Redis has a valid one (checksum and WAV structure verified).
    pub async fn get(&self, key: &CacheKey) -> Option<CachedWav> {
        let cmd = redis::cmd("HMGET")
            .arg(entry_key(key))
            .arg("wav")
            .arg("created")
            .arg("sha256")
            .arg("degraded")
            .clone();
        let (wav, created, sha, degraded): EntryFields = self.link.query(&cmd).await?;
        let (wav, created, sha) = (wav?, created?, sha?);
        if hex::encode(Sha256::digest(&wav)) != sha || wav::parse_wav(&wav).is_err() {
            log::warn!("redis cache entry {key} is damaged; dropping it");
            self.remove(key).await;
            return None;
        }
        Some(CachedWav {
            wav: Bytes::from(wav),
            created: UNIX_EPOCH + Duration::from_millis(created),
            degraded: degraded == Some(1),
        })
    }

    /// Stores the entry with the remaining TTL (skipped above `max_value`).
    pub async fn put(&self, key: &CacheKey, entry: &CachedWav) {
        if entry.wav.len() as u64 > self.max_value {
            return;
        }
        let age = SystemTime::now()
            .duration_since(entry.created)
            .unwrap_or_default();
        let left = self.ttl.saturating_sub(age);
        if left.is_zero() {
            return;
        }
        let created = entry
            .created
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let k = entry_key(key);
        let pipe = redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(&k)
            .arg("wav")
            .arg(entry.wav.as_ref())
            .arg("created")
            .arg(created)
            .arg("sha256")
            .arg(hex::encode(Sha256::digest(&entry.wav)))
            .arg("degraded")
            .arg(u8::from(entry.degraded))
            .ignore()
            .cmd("PEXPIRE")
            .arg(&k)
            .arg(left.as_millis() as u64)
            .ignore()
            .clone();
        let _: Option<()> = self.link.query(&pipe).await;
    }

    /// Files `key` first in both of its families' lists (once each, at most `PER_FAMILY`),
    /// which expire with the cache TTL.
    pub async fn file_families(&self, key: &CacheKey, families: Families) {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for family in [families.same_voice, families.same_text] {
            let list = family_key(&family);
            pipe.cmd("LREM").arg(&list).arg(0).arg(key.hex()).ignore();
            pipe.cmd("LPUSH").arg(&list).arg(key.hex()).ignore();
            pipe.cmd("LTRIM").arg(&list).arg(0).arg(PER_FAMILY - 1).ignore();
            pipe.cmd("PEXPIRE")
                .arg(&list)
                .arg(self.ttl.as_millis() as u64)
                .ignore();
        }
        let _: Option<()> = self.link.query(&pipe).await;
    }

    /// The exact keys filed under `family` by any instance, most recent first (none when Redis
    /// is away).
    pub async fn family_candidates(&self, family: &CacheKey) -> Vec<CacheKey> {
        let cmd = redis::cmd("LRANGE")
            .arg(family_key(family))
            .arg(0)
            .arg(PER_FAMILY - 1)
            .clone();
        let keys: Option<Vec<String>> = self.link.query(&cmd).await;
        keys.unwrap_or_default()
            .iter()
            .filter_map(|k| CacheKey::from_hex(k))
            .collect()
    }

    pub async fn remove(&self, key: &CacheKey) -> bool {
        let n: Option<u64> = self.link.query(redis::cmd("UNLINK").arg(entry_key(key))).await;
        n.unwrap_or(0) > 0
    }

    /// Removes every cache entry and the approximate indexes; returns the entries removed.
    pub async fn purge_all(&self) -> usize {
        self.unlink_matching("cosygate:approx:*").await;
        self.unlink_matching("cosygate:cache:*").await
    }

    /// Removes every key matching `pattern` (SCAN, then UNLINK in batches).
    async fn unlink_matching(&self, pattern: &str) -> usize {
        let mut cursor = 0u64;
        let mut removed = 0;
        loop {
            let scan = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(500)
                .clone();
            let Some((next, keys)): Option<(u64, Vec<String>)> = self.link.query(&scan).await else {
                break;
            };
            if !keys.is_empty() {
                let n: Option<usize> = self.link.query(redis::cmd("UNLINK").arg(&keys)).await;
                removed += n.unwrap_or(0);
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        removed
    }

    /// Tries to become the one instance that synthesizes `key`, for at most `hold`. Some(token)
    /// when this instance holds the lock; None when another does. Redis being away counts as
    /// holding it (no coordination is possible, so synthesize locally).
    pub async fn try_lock(&self, key: &CacheKey, hold: Duration) -> Option<String> {
        let token = redis_lock::new_token();
        match redis_lock::acquire(&self.link, &lock_key(key), &token, hold).await {
            LockAttempt::Acquired | LockAttempt::Unavailable => Some(token),
            LockAttempt::Held => None,
        }
    }

    /// Whether some instance still holds the lock for `key` (false when Redis is away).
    pub async fn is_locked(&self, key: &CacheKey) -> bool {
        redis_lock::is_held(&self.link, &lock_key(key))
            .await
            .unwrap_or(false)
    }

    /// Releases the lock for `key` if `token` still holds it.
    pub async fn unlock(&self, key: &CacheKey, token: &str) {
        redis_lock::release(&self.link, &lock_key(key), token, Release::Now).await;
    }
}
