//! The disk tier's in-memory index: which entries exist, their WAV sizes, their order of last
//! use (for LRU eviction by bytes) and the keys this process is writing right now. It touches no
//! file; `DiskTier` keeps it in step with the directory.

use crate::cache::entry::CacheKey;
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap, HashSet};

/// Key → (size, tick), the keys ordered by tick (higher = used more recently), the byte total,
/// and the keys this process is writing right now.
#[derive(Default)]
pub(super) struct Index {
    slots: HashMap<CacheKey, (u64, u64)>,
    lru: BTreeSet<(u64, CacheKey)>,
    next_tick: u64,
    total: u64,
    writing: HashSet<CacheKey>,
}

impl Index {
    /// Inserts or refreshes `key` as the most recently used.
    pub(super) fn touch(&mut self, key: CacheKey, size: u64) {
        self.forget(&key);
        let tick = self.next_tick;
        self.next_tick += 1;
        self.slots.insert(key, (size, tick));
        self.lru.insert((tick, key));
        self.total += size;
    }

    /// Drops `key`; true if it was indexed.
    pub(super) fn forget(&mut self, key: &CacheKey) -> bool {
        let Some((size, tick)) = self.slots.remove(key) else {
            return false;
        };
        self.lru.remove(&(tick, *key));
        self.total -= size;
        true
    }

    /// Drops every key and returns them.
    pub(super) fn clear(&mut self) -> Vec<CacheKey> {
        self.lru.clear();
        self.total = 0;
        self.slots.drain().map(|(key, _)| key).collect()
    }

    /// Drops least recently used keys until the total is within `max_bytes`; returns them.
    pub(super) fn evict_to(&mut self, max_bytes: u64) -> Vec<CacheKey> {
        let mut victims = Vec::new();
        while self.total > max_bytes {
            let Some(&(_, key)) = self.lru.first() else { break };
            self.forget(&key);
            victims.push(key);
        }
        victims
    }

    /// Total WAV bytes indexed.
    pub(super) fn total(&self) -> u64 {
        self.total
    }

    /// Number of entries indexed.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }
}

/// Marks a key as being written by this process until dropped (also when `put` is cancelled).
pub(super) struct Writing<'a>(&'a Mutex<Index>, CacheKey);

impl<'a> Writing<'a> {
    /// Marks `key`, or None if this process is already writing it.
    pub(super) fn start(index: &'a Mutex<Index>, key: CacheKey) -> Option<Self> {
        let started = index.lock().writing.insert(key);
        // The guard is built only after the index is unlocked (its drop locks it).
        started.then(|| Writing(index, key))
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.lock().writing.remove(&self.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 32])
    }

    #[test]
    fn evicts_least_recently_used_first_and_counts_bytes() {
        let mut index = Index::default();
        for n in 1..=3 {
            index.touch(key(n), 100);
        }
        index.touch(key(1), 150); // refreshed: 2 is now the oldest
        assert_eq!((index.len(), index.total()), (3, 350));
        assert_eq!(index.evict_to(200), vec![key(2), key(3)]);
        assert_eq!((index.len(), index.total()), (1, 150));
        assert!(index.forget(&key(1)) && !index.forget(&key(1)));
        assert_eq!(index.total(), 0);
    }

    #[test]
    fn one_writer_per_key() {
        let index = Mutex::new(Index::default());
        let first = Writing::start(&index, key(1));
        assert!(first.is_some());
        assert!(Writing::start(&index, key(1)).is_none());
        assert!(Writing::start(&index, key(2)).is_some());
        drop(first);
        assert!(Writing::start(&index, key(1)).is_some());
    }
}
