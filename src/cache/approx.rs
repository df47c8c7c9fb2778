//! The approximate indexes beside the exact keys, and the lookups of the degradation ladder
//! (`pools.NAME.degrade`). Each stored entry is filed under its [`Families`] (same voice, same
//! text); a family remembers the exact keys of its [`PER_FAMILY`] most recent entries.
//!
//! - This process: one LRU map of at most [`MAX_FAMILIES`] families, filled as entries are
//!   stored and, at start, from the disk tier's entries (their descriptions carry their
//!   families). It serves the memory and the disk tier alike: a candidate is looked up in
//!   every tier.
//! - Redis (when configured): a list per family, `cosygate:approx:<family>`, trimmed to
//!   [`PER_FAMILY`] and expiring with the cache TTL, so every instance finds every instance's
//!   entries.
//!
//! Entries evicted or purged drop out lazily: a candidate that no tier holds any more is removed
//! from the local index when a lookup meets it (Redis lists expire and are trimmed); purging
//! the whole cache clears both indexes. Fallback audio is never filed, nor is an approximate
//! answer ever stored under the key it stood in for.

use super::entry::{CacheKey, CachedWav};
use super::key::Families;
use super::Cache;
use crate::config::Rung;
use lru::LruCache;
use parking_lot::Mutex;
use std::num::NonZeroUsize;

/// Exact keys remembered per family (the most recent first).
pub const PER_FAMILY: usize = 4;
/// Families remembered by this process (least recently used dropped first): with
/// [`PER_FAMILY`] keys each, about 25 MB at most.
pub const MAX_FAMILIES: usize = 100_000;

/// The local index: family key -> exact keys, most recent first.
pub struct ApproxIndex {
    families: Mutex<LruCache<CacheKey, Vec<CacheKey>>>,
}

impl Default for ApproxIndex {
    fn default() -> Self {
        Self::with_capacity(MAX_FAMILIES)
    }
}

impl ApproxIndex {
    pub fn with_capacity(max_families: usize) -> Self {
        let cap = NonZeroUsize::new(max_families).unwrap_or(NonZeroUsize::MIN);
        Self {
            families: Mutex::new(LruCache::new(cap)),
        }
    }

    /// The index of the disk tier's entries found at start (empty without a disk tier).
    pub(super) fn restored(disk: Option<&super::disk::DiskTier>) -> Self {
        let index = Self::default();
        for (key, families) in disk.map(|d| d.take_found_families()).unwrap_or_default() {
            index.file(key, families);
        }
        index
    }

    /// Files `exact` under both of its families, as the most recent entry of each.
    pub fn file(&self, exact: CacheKey, families: Families) {
        let mut map = self.families.lock();
        for family in [families.same_voice, families.same_text] {
            let keys = map.get_or_insert_mut(family, Vec::new);
            keys.retain(|k| *k != exact);
            keys.insert(0, exact);
            keys.truncate(PER_FAMILY);
        }
    }

    /// The exact keys filed under `family`, most recent first.
    pub fn candidates(&self, family: &CacheKey) -> Vec<CacheKey> {
        self.families.lock().get(family).cloned().unwrap_or_default()
    }

    /// Removes `exact` from `family` (no tier holds it any more).
    pub fn forget(&self, family: &CacheKey, exact: &CacheKey) {
        let mut map = self.families.lock();
        if let Some(keys) = map.get_mut(family) {
            keys.retain(|k| k != exact);
            if keys.is_empty() {
                map.pop(family);
            }
        }
    }

    pub fn clear(&self) {
        self.families.lock().clear();
    }

    /// Families remembered now.
    pub fn len(&self) -> usize {
        self.families.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A cached entry standing in for a request's exact one.
#[derive(Debug)]
pub struct Approximate {
    pub entry: CachedWav,
    /// The tier it was read from.
    pub tier: &'static str,
    /// Its own exact key (`X-Cache-Key`).
    pub key: CacheKey,
}

impl Cache {
    /// The families `req` is filed under in this pool: the same voice within the caller's
    /// `scope` when `share: tenant` (as its key is), the same text always within it (see
    /// [`Families`]); with its prompt's hex sha256 from [`Cache::key`].
    pub fn families(
        &self,
        scope: &str,
        pool: &str,
        model_version: &str,
        req: &crate::api::GenerateRequest,
        prompt_sha256: &str,
    ) -> Families {
        let shared = match self.share {
            crate::config::CacheShare::Global => None,
            crate::config::CacheShare::Tenant => Some(scope),
        };
        Families::of(shared, scope, pool, model_version, req, prompt_sha256)
    }

    /// Files a stored entry under its families (here and in Redis); fallback audio is not filed.
    pub(super) async fn file_families(&self, key: &CacheKey, entry: &CachedWav, params: &serde_json::Value) {
        if entry.degraded {
            return;
        }
        let Some(families) = Families::from_description(params) else {
            return;
        };
        self.approx.file(*key, families);
        if let Some(redis) = &self.redis {
            redis.file_families(key, families).await;
        }
    }

    /// The most recent entry of `rung`'s family other than `exact` that a tier still holds
    /// (not fallback audio), looked up without counting as a hit or a miss.
    pub async fn approximate(
        &self,
        rung: Rung,
        families: &Families,
        exact: &CacheKey,
    ) -> Option<Approximate> {
        let family = families.of_rung(rung);
        let local = self.approx.candidates(&family);
        if let Some(found) = self.first_held(&family, exact, &local, true).await {
            return Some(found);
        }
        let redis = self.redis.as_ref()?;
        let shared: Vec<CacheKey> = redis
            .family_candidates(&family)
            .await
            .into_iter()
            .filter(|k| !local.contains(k))
            .collect();
        self.first_held(&family, exact, &shared, false).await
    }

    /// The first of `candidates` a tier holds; with `local`, the ones no tier holds are
    /// forgotten on the way.
    async fn first_held(
        &self,
        family: &CacheKey,
        exact: &CacheKey,
        candidates: &[CacheKey],
        local: bool,
    ) -> Option<Approximate> {
        for key in candidates.iter().filter(|k| *k != exact) {
            match self.find(key).await {
                Some((entry, _)) if entry.degraded => {}
                Some((entry, tier)) => {
                    return Some(Approximate {
                        entry,
                        tier,
                        key: *key,
                    })
                }
                None if local => self.approx.forget(family, key),
                None => {}
            }
        }
        None
    }

    /// The entry under `key` in the first tier that has it, not promoted and not counted.
    async fn find(&self, key: &CacheKey) -> Option<(CachedWav, &'static str)> {
        if let Some(hit) = self.memory.get(key).await {
            return Some((hit, "memory"));
        }
        if let Some(disk) = &self.disk {
            if let Some(hit) = disk.get(key).await {
                return Some((hit, "disk"));
            }
        }
        match &self.redis {
            Some(redis) => redis.get(key).await.map(|hit| (hit, "redis")),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 32])
    }

    fn families(voice: u8, text: u8) -> Families {
        Families {
            same_voice: key(voice),
            same_text: key(text),
        }
    }

    #[test]
    fn families_keep_their_most_recent_entries_first_and_bounded() {
        let index = ApproxIndex::default();
        for n in 10..10 + PER_FAMILY as u8 + 2 {
            index.file(key(n), families(1, 2));
        }
        let newest: Vec<CacheKey> = (0..PER_FAMILY as u8).map(|i| key(15 - i)).collect();
        assert_eq!(index.candidates(&key(1)), newest);
        assert_eq!(index.candidates(&key(2)), newest);
        index.file(key(12), families(1, 2)); // filed again: first, not twice
        assert_eq!(index.candidates(&key(1))[0], key(12));
        assert_eq!(index.candidates(&key(1)).len(), PER_FAMILY);
        index.forget(&key(1), &key(12));
        assert!(!index.candidates(&key(1)).contains(&key(12)));
        assert!(
            index.candidates(&key(2)).contains(&key(12)),
            "only that family forgets it"
        );
    }

    #[test]
    fn the_number_of_families_is_bounded() {
        let index = ApproxIndex::with_capacity(3);
        for n in 0..10 {
            index.file(key(100 + n), families(n, 50 + n));
        }
        assert_eq!(index.len(), 3);
        assert!(
            index.candidates(&key(0)).is_empty(),
            "the oldest families went first"
        );
        index.clear();
        assert!(index.is_empty());
    }
}
