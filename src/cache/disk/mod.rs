//! The disk tier: WAVs that survive restarts and graceful upgrades, bounded by `max` bytes (least
//! recently used out first) and by the TTL (counted from synthesis). This module owns the
//! directory `cache.disk.path` and keeps the in-memory index in step with it.
//!
//! Layout, one file per entry (`entry_file` owns the format):
//! ```text
//! <path>/v2/<first two hex digits of the key>/<key hex>.entry   header line, then the WAV
//! <path>/v2/<xx>/.<key hex>.<random>.tmp                        a write in progress
//! ```
//! A write fsyncs a temp file and renames it into place: the rename commits the entry. A read
//! verifies size and sha256 and drops a damaged entry, so a crash or a concurrent writer, evictor
//! or second process (during an upgrade) can cost an entry but never serve a bad one. `max`
//! counts WAV bytes; the index (key → size, last use) is rebuilt at `open` by `scan`, last use
//! being the file's mtime, which every hit touches. `<path>/v1/`, the two-file layout of earlier
//! versions, is removed at `open`.

mod entry_file;
mod index;
mod scan;
#[cfg(test)]
mod tests;

use super::entry::{CacheKey, CachedWav};
use super::key::Families;
use index::{Index, Writing};
use log::{debug, info, warn};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// The directory of the current layout under `cache.disk.path`.
const LAYOUT: &str = "v2";
/// The directory of the old two-file layout, removed at `open`.
const OLD_LAYOUT: &str = "v1";

pub struct DiskTier {
    root: PathBuf,
    max_bytes: u64,
    ttl: Duration,
    index: Mutex<Index>,
    /// The approximate families of the entries found at `open`, least recently used first,
    /// until the cache takes them for its index ([`DiskTier::take_found_families`]).
    found_families: Mutex<Vec<(CacheKey, Families)>>,
}

impl DiskTier {
    /// Opens (creating) the directory and indexes what is there, dropping debris, the old layout
    /// and expired or damaged entries; fails only if the directory cannot be created or listed.
    pub async fn open(dir: PathBuf, max_bytes: u64, ttl: Duration) -> io::Result<DiskTier> {
        let root = dir.join(LAYOUT);
        let (scan_root, old) = (root.clone(), dir.join(OLD_LAYOUT));
        let (mut found, dropped) = tokio::task::spawn_blocking(move || {
            scan::remove_old_layout(&old);
            scan::scan(&scan_root, ttl)
        })
        .await
        .map_err(io::Error::other)??;
        found.sort_by_key(|&(_, _, used, _)| used);
        let mut index = Index::default();
        let mut families = Vec::new();
        for (key, size, _, filed) in found {
            index.touch(key, size);
            families.extend(filed.map(|f| (key, f)));
        }
        let tier = DiskTier {
            root,
            max_bytes,
            ttl,
            index: Mutex::new(index),
            found_families: Mutex::new(families),
        };
        tier.enforce_cap().await;
        info!(
            "disk cache {}: {} entries, {} bytes (dropped {dropped} expired or damaged)",
            dir.display(),
            tier.len(),
            tier.bytes()
        );
        Ok(tier)
    }

    /// The approximate families of the entries found at `open` (once; least recently used
    /// first, so filing them in order leaves the most recent first).
    pub fn take_found_families(&self) -> Vec<(CacheKey, Families)> {
        std::mem::take(&mut *self.found_families.lock())
    }

    /// The entry, if the disk has a valid, unexpired one; marks it most recently used.
    pub async fn get(&self, key: &CacheKey) -> Option<CachedWav> {
        // Keys missing from the index are looked up too: another process may have stored them.
        let (path, k, ttl, max) = (self.path(key), *key, self.ttl, self.max_bytes);
        let loaded = blocking(move || match entry_file::read(&path, ttl, max) {
            // False if the entry was deleted meanwhile (the audio read is still good).
            Ok(entry) => Ok((entry, entry_file::touch(&path))),
            Err(fault) => {
                entry_file::settle(&path, &k, &fault);
                Err(())
            }
        });
        match loaded.await? {
            Ok((entry, still_there)) => {
                if still_there {
                    self.index.lock().touch(*key, entry.wav.len() as u64);
                    self.enforce_cap().await;
                }
                Some(entry)
            }
            Err(_) => {
                self.index.lock().forget(key);
                None
            }
        }
    }

    /// Stores the entry (skipped above `max_bytes`, if already expired, or while this process
    /// already writes the key), then evicts least recently used entries until the total fits.
    pub async fn put(&self, key: &CacheKey, entry: &CachedWav, params: &serde_json::Value) {
        let size = entry.wav.len() as u64;
        if size > self.max_bytes {
            debug!("disk cache: {key} ({size} bytes) is larger than the cache; not stored");
            return;
        }
        if SystemTime::now()
            .duration_since(entry.created)
            .unwrap_or_default()
            >= self.ttl
        {
            return;
        }
        let Some(_writing) = Writing::start(&self.index, *key) else {
            return;
        };
        let (root, k, entry, params) = (self.root.clone(), *key, entry.clone(), params.clone());
        match blocking(move || entry_file::write(&root, &k, &entry, params)).await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                warn!("disk cache: cannot store {key}: {e}");
                return;
            }
            None => return,
        }
        self.index.lock().touch(*key, size);
        self.enforce_cap().await;
    }

    /// Deletes the entry; true if it was indexed or had a file.
    pub async fn remove(&self, key: &CacheKey) -> bool {
        let indexed = self.index.lock().forget(key);
        let path = self.path(key);
        let had_file = blocking(move || entry_file::remove_quiet(&path))
            .await
            .unwrap_or(false);
        indexed || had_file
    }

    /// Deletes every entry in the directory (also ones this process did not index); returns
    /// how many.
    /// (entries, WAV bytes) indexed now.
    pub fn size(&self) -> (u64, u64) {
        let index = self.index.lock();
        (index.len() as u64, index.total())
    }

    pub async fn purge_all(&self) -> usize {
        let mut keys: HashSet<CacheKey> = self.index.lock().clear().into_iter().collect();
        let root = self.root.clone();
        keys.extend(blocking(move || scan::purge_dir(&root)).await.unwrap_or_default());
        keys.len()
    }

    /// Total WAV bytes indexed.
    pub fn bytes(&self) -> u64 {
        self.index.lock().total()
    }

    /// Number of entries indexed.
    pub fn len(&self) -> usize {
        self.index.lock().len()
    }

    /// Whether no entry is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn path(&self, key: &CacheKey) -> PathBuf {
        entry_file::path(&self.root, key)
    }

    /// Evicts least recently used entries until the total is within `max_bytes`.
    async fn enforce_cap(&self) {
        let victims = self.index.lock().evict_to(self.max_bytes);
        if victims.is_empty() {
            return;
        }
        debug!("disk cache: evicting {} entries", victims.len());
        let paths: Vec<PathBuf> = victims.iter().map(|key| self.path(key)).collect();
        blocking(move || {
            for path in &paths {
                entry_file::remove_quiet(path);
            }
        })
        .await;
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => Some(v),
        Err(e) => {
            warn!("disk cache: file task failed: {e}");
            None
        }
    }
}
