//! The memory tier: hot entries in a byte-bounded moka cache (TinyLFU admission, LRU eviction).
//! An entry expires `ttl` after it was synthesized, not after it was promoted here.

use super::entry::{CacheKey, CachedWav};
use moka::future::Cache;
use moka::Expiry;
use std::time::{Duration, Instant, SystemTime};

pub struct MemoryTier {
    cache: Cache<CacheKey, CachedWav>,
}

struct FromCreation(Duration);

impl Expiry<CacheKey, CachedWav> for FromCreation {
    fn expire_after_create(&self, _key: &CacheKey, value: &CachedWav, _now: Instant) -> Option<Duration> {
        let age = SystemTime::now()
            .duration_since(value.created)
            .unwrap_or_default();
        Some(self.0.saturating_sub(age))
    }
}

impl MemoryTier {
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_k, v: &CachedWav| u32::try_from(v.wav.len()).unwrap_or(u32::MAX))
            .expire_after(FromCreation(ttl))
            .build();
        Self { cache }
    }

    pub async fn get(&self, key: &CacheKey) -> Option<CachedWav> {
        self.cache.get(key).await
    }

    pub async fn put(&self, key: &CacheKey, entry: &CachedWav) {
        self.cache.insert(*key, entry.clone()).await;
    }

    /// (entries, WAV bytes) held now, after moka's pending housekeeping (its counts lag writes
    /// until then).
    pub async fn size(&self) -> (u64, u64) {
        self.cache.run_pending_tasks().await;
        (self.cache.entry_count(), self.cache.weighted_size())
    }

    pub async fn remove(&self, key: &CacheKey) -> bool {
        self.cache.remove(key).await.is_some()
    }

    pub fn purge_all(&self) {
        self.cache.invalidate_all();
    }
}
