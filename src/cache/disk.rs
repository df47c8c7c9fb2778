//! The disk tier: WAVs that survive restarts and graceful upgrades, bounded by `max` bytes (least
//! recently used out first) and by the TTL (counted from synthesis). This module owns the files
//! under `cache.disk.path` and the in-memory index of them.
//!
//! Layout, one entry per key:
//! ```text
//! <path>/v1/<first two hex digits of the key>/<key hex>.wav    the exact WAV bytes
//! <path>/v1/<first two hex digits of the key>/<key hex>.json   {"version":1,"created_unix_ms":..,
//!                                                              "size":..,"sha256":"..","params":{..}}
//! <path>/v1/<xx>/.<key hex>.<random>.tmp                       a write in progress
//! ```
//! A write fsyncs both files as temp files, then renames the WAV, then the JSON: the JSON's
//! presence commits the entry. A read verifies size and sha256 and drops a damaged entry, so a
//! crash or a concurrent writer, evictor or second process (during an upgrade) can cost an entry
//! but never serve a bad one. `max` counts WAV bytes; the index (key → size, last use) is rebuilt
//! at `open` from the directory, last use being the JSON's mtime, which every hit touches.

use super::entry::{CacheKey, CachedWav};
use bytes::Bytes;
use log::{debug, info, warn};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const VERSION: u32 = 1;
/// Temp files, and WAVs without a JSON, younger than this may belong to a write in progress.
const STALE: Duration = Duration::from_secs(60);
/// A writer renames the WAV just before the JSON: a reader that sees them disagree looks again
/// after this pause before it judges the entry damaged.
const RACE_PAUSE: Duration = Duration::from_millis(50);

pub struct DiskTier {
    root: PathBuf,
    max_bytes: u64,
    ttl: Duration,
    index: Mutex<Index>,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    version: u32,
    created_unix_ms: u64,
    size: u64,
    sha256: String,
    #[serde(default)]
    params: serde_json::Value,
}

/// Key → (size, tick), the keys ordered by tick (higher = used more recently), the byte total,
/// and the keys this process is writing right now.
#[derive(Default)]
struct Index {
    slots: HashMap<CacheKey, (u64, u64)>,
    lru: BTreeSet<(u64, CacheKey)>,
    next_tick: u64,
    total: u64,
    writing: HashSet<CacheKey>,
}

impl Index {
    /// Inserts or refreshes `key` as the most recently used.
    fn touch(&mut self, key: CacheKey, size: u64) {
        self.forget(&key);
        let tick = self.next_tick;
        self.next_tick += 1;
        self.slots.insert(key, (size, tick));
        self.lru.insert((tick, key));
        self.total += size;
    }

    fn forget(&mut self, key: &CacheKey) -> bool {
        let Some((size, tick)) = self.slots.remove(key) else {
            return false;
        };
        self.lru.remove(&(tick, *key));
        self.total -= size;
        true
    }

    fn pop_lru(&mut self) -> Option<CacheKey> {
        let &(_, key) = self.lru.first()?;
        self.forget(&key);
        Some(key)
    }
}

/// Marks a key as being written by this process until dropped (also when `put` is cancelled).
struct Writing<'a>(&'a Mutex<Index>, CacheKey);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        lock(self.0).writing.remove(&self.1);
    }
}

fn lock(index: &Mutex<Index>) -> MutexGuard<'_, Index> {
    index.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl DiskTier {
    /// Opens (creating) the directory and indexes what is there, dropping debris and expired or
    /// damaged entries; fails only if the directory cannot be created or listed.
    pub async fn open(dir: PathBuf, max_bytes: u64, ttl: Duration) -> io::Result<DiskTier> {
        let root = dir.join("v1");
        let scan_root = root.clone();
        let (mut found, dropped) = tokio::task::spawn_blocking(move || scan(&scan_root, ttl))
            .await
            .map_err(io::Error::other)??;
        found.sort_by_key(|&(_, _, used)| used);
        let mut index = Index::default();
        for (key, size, _) in found {
            index.touch(key, size);
        }
        let tier = DiskTier {
            root,
            max_bytes,
            ttl,
            index: Mutex::new(index),
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

    /// The entry, if the disk has a valid, unexpired one; marks it most recently used.
    pub async fn get(&self, key: &CacheKey) -> Option<CachedWav> {
        // Keys missing from the index are looked up too: another process may have stored them.
        let (root, k, ttl) = (self.root.clone(), *key, self.ttl);
        let loaded = blocking(move || {
            load(&root, &k, ttl).inspect_err(|fault| {
                settle(&root, &k, fault);
            })
        });
        match loaded.await? {
            Ok((entry, still_there)) => {
                if still_there {
                    lock(&self.index).touch(*key, entry.wav.len() as u64);
                    self.enforce_cap().await;
                }
                Some(entry)
            }
            Err(_) => {
                lock(&self.index).forget(key);
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
        if !lock(&self.index).writing.insert(*key) {
            return;
        }
        let _writing = Writing(&self.index, *key);
        let (root, k, entry, params) = (self.root.clone(), *key, entry.clone(), params.clone());
        match blocking(move || write_entry(&root, &k, &entry, params)).await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                warn!("disk cache: cannot store {key}: {e}");
                return;
            }
            None => return,
        }
        lock(&self.index).touch(*key, size);
        self.enforce_cap().await;
    }

    /// Deletes the entry; true if it was indexed or had files.
    pub async fn remove(&self, key: &CacheKey) -> bool {
        let indexed = lock(&self.index).forget(key);
        let (root, k) = (self.root.clone(), *key);
        let had_files = blocking(move || remove_pair(&root, &k)).await.unwrap_or(false);
        indexed || had_files
    }

    /// Deletes every entry in the directory (also ones this process did not index); returns
    /// how many.
    pub async fn purge_all(&self) -> usize {
        let mut keys: HashSet<CacheKey> = {
            let mut index = lock(&self.index);
            index.lru.clear();
            index.total = 0;
            index.slots.drain().map(|(key, _)| key).collect()
        };
        let root = self.root.clone();
        keys.extend(blocking(move || purge_dir(&root)).await.unwrap_or_default());
        keys.len()
    }

    /// Total WAV bytes indexed.
    pub fn bytes(&self) -> u64 {
        lock(&self.index).total
    }

    /// Number of entries indexed.
    pub fn len(&self) -> usize {
        lock(&self.index).slots.len()
    }

    /// Whether no entry is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Evicts least recently used entries until the total is within `max_bytes`.
    async fn enforce_cap(&self) {
        let victims: Vec<CacheKey> = {
            let mut index = lock(&self.index);
            let mut victims = Vec::new();
            while index.total > self.max_bytes {
                let Some(key) = index.pop_lru() else { break };
                victims.push(key);
            }
            victims
        };
        if victims.is_empty() {
            return;
        }
        debug!("disk cache: evicting {} entries", victims.len());
        let root = self.root.clone();
        blocking(move || {
            for key in &victims {
                remove_pair(&root, key);
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

fn paths(root: &Path, key: &CacheKey) -> (PathBuf, PathBuf) {
    let hex = key.hex();
    let dir = root.join(&hex[..2]);
    (dir.join(format!("{hex}.wav")), dir.join(format!("{hex}.json")))
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// Removes a file; true if it existed. Errors other than "not found" are logged.
fn remove_quiet(path: &Path) -> bool {
    match fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if is_not_found(&e) => false,
        Err(e) => {
            warn!("disk cache: cannot remove {}: {e}", path.display());
            false
        }
    }
}

/// Removes an entry, JSON first (uncommitting it), then the WAV; true if either existed.
fn remove_pair(root: &Path, key: &CacheKey) -> bool {
    let (wav, json) = paths(root, key);
    let json_removed = remove_quiet(&json);
    remove_quiet(&wav) || json_removed
}

fn is_stale(path: &Path) -> bool {
    let modified = fs::metadata(path).and_then(|m| m.modified());
    modified.is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE))
}

/// Writes `data` to a new temp file beside the entry and fsyncs it.
fn write_temp(dir: &Path, hex: &str, data: &[u8]) -> io::Result<PathBuf> {
    let path = dir.join(format!(".{hex}.{:016x}.tmp", rand::random::<u64>()));
    let mut file = OpenOptions::new().write(true).create_new(true).open(&path)?;
    if let Err(e) = file.write_all(data).and_then(|()| file.sync_all()) {
        remove_quiet(&path);
        return Err(e);
    }
    Ok(path)
}

/// Writes both files as temp files, then renames the WAV and then the JSON into place.
fn write_entry(root: &Path, key: &CacheKey, entry: &CachedWav, params: serde_json::Value) -> io::Result<()> {
    let (wav_path, json_path) = paths(root, key);
    let dir = wav_path.parent().unwrap_or(root);
    fs::create_dir_all(dir)?;
    let meta = Meta {
        version: VERSION,
        created_unix_ms: unix_ms(entry.created),
        size: entry.wav.len() as u64,
        sha256: hex::encode(Sha256::digest(&entry.wav)),
        params,
    };
    let hex = key.hex();
    let wav_tmp = write_temp(dir, &hex, &entry.wav)?;
    let committed = serde_json::to_vec(&meta)
        .map_err(io::Error::from)
        .and_then(|json| {
            let json_tmp = write_temp(dir, &hex, &json)?;
            let renamed = fs::rename(&wav_tmp, &wav_path).and_then(|()| fs::rename(&json_tmp, &json_path));
            renamed.inspect_err(|_| {
                remove_quiet(&json_tmp);
            })
        });
    committed.inspect_err(|_| {
        remove_quiet(&wav_tmp);
    })
}

/// Why an entry is not served.
enum Fault {
    /// Not there (or deleted meanwhile).
    Gone,
    /// An IO error other than "not found": logged, the files are left alone.
    Io(io::Error),
    /// Deleted, quietly.
    Expired,
    /// Deleted, with a warning naming the key.
    Damaged(String),
}

impl From<io::Error> for Fault {
    fn from(e: io::Error) -> Self {
        if is_not_found(&e) {
            Fault::Gone
        } else {
            Fault::Io(e)
        }
    }
}

/// Logs why an entry is not served and deletes it if it is expired or damaged; true if deleted.
fn settle(root: &Path, key: &CacheKey, fault: &Fault) -> bool {
    match fault {
        Fault::Gone => return false,
        Fault::Io(e) => {
            warn!("disk cache: cannot read entry {key}: {e}");
            return false;
        }
        Fault::Expired => debug!("disk cache: {key} expired"),
        Fault::Damaged(why) => warn!("disk cache: dropping damaged entry {key}: {why}"),
    }
    remove_pair(root, key);
    true
}

/// Reads and checks an entry's JSON; also returns its raw bytes.
fn read_meta(json: &Path, ttl: Duration) -> Result<(Meta, Vec<u8>), Fault> {
    let raw = fs::read(json)?;
    let meta: Meta =
        serde_json::from_slice(&raw).map_err(|e| Fault::Damaged(format!("bad metadata: {e}")))?;
    if meta.version != VERSION {
        return Err(Fault::Damaged(format!("metadata version {}", meta.version)));
    }
    let created = UNIX_EPOCH + Duration::from_millis(meta.created_unix_ms);
    if SystemTime::now().duration_since(created).unwrap_or_default() >= ttl {
        return Err(Fault::Expired);
    }
    Ok((meta, raw))
}

fn verify(wav: &[u8], meta: &Meta) -> Result<(), Fault> {
    if wav.len() as u64 != meta.size {
        return Err(Fault::Damaged(format!(
            "WAV has {} bytes, expected {}",
            wav.len(),
            meta.size
        )));
    }
    if !hex::encode(Sha256::digest(wav)).eq_ignore_ascii_case(&meta.sha256) {
        return Err(Fault::Damaged("checksum mismatch".into()));
    }
    Ok(())
}

/// Whether the JSON changes within `RACE_PAUSE`: a writer renames the WAV just before the JSON,
/// so a WAV that does not match may be a new one whose JSON is about to land.
fn json_changes(json: &Path, seen: &[u8]) -> bool {
    std::thread::sleep(RACE_PAUSE);
    fs::read(json).ok().as_deref() != Some(seen)
}

/// Reads and verifies an entry and touches its JSON; the flag is false if the entry was
/// deleted meanwhile (the audio read is still good).
fn load(root: &Path, key: &CacheKey, ttl: Duration) -> Result<(CachedWav, bool), Fault> {
    let (wav_path, json_path) = paths(root, key);
    let mut looked_again = false;
    loop {
        let (meta, raw) = read_meta(&json_path, ttl)?;
        let checked = match fs::read(&wav_path) {
            Ok(wav) => verify(&wav, &meta).map(|()| wav),
            Err(e) if is_not_found(&e) => Err(Fault::Damaged("WAV missing".into())),
            Err(e) => return Err(Fault::Io(e)),
        };
        let wav = match checked {
            Ok(wav) => wav,
            Err(fault) if looked_again || !json_changes(&json_path, &raw) => return Err(fault),
            Err(_) => {
                looked_again = true;
                continue;
            }
        };
        let touched = File::open(&json_path).and_then(|f| f.set_modified(SystemTime::now()));
        if let Err(e) = &touched {
            debug!("disk cache: cannot touch {}: {e}", json_path.display());
        }
        let created = UNIX_EPOCH + Duration::from_millis(meta.created_unix_ms);
        let still_there = !touched.is_err_and(|e| is_not_found(&e));
        return Ok((
            CachedWav {
                wav: Bytes::from(wav),
                created,
            },
            still_there,
        ));
    }
}

/// An entry found at `open`: key, size, last used.
type Found = (CacheKey, u64, SystemTime);

enum Name {
    Json(CacheKey),
    Wav(CacheKey),
    Temp,
    Other,
}

fn classify(name: &str) -> Name {
    let key = |hex: &str| (hex.len() == 64).then(|| CacheKey::from_hex(hex)).flatten();
    if name.starts_with('.') && name.ends_with(".tmp") {
        Name::Temp
    } else if let Some(key) = name.strip_suffix(".json").and_then(key) {
        Name::Json(key)
    } else if let Some(key) = name.strip_suffix(".wav").and_then(key) {
        Name::Wav(key)
    } else {
        Name::Other
    }
}

/// The shard directories under `root` (created if missing).
fn list_shards(root: &Path) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(root)?;
    Ok(fs::read_dir(root)?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.is_dir())
        .collect())
}

/// The file names in a shard (none if it cannot be listed).
fn list_names(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(files) => files
            .filter_map(|f| f.ok()?.file_name().into_string().ok())
            .collect(),
        Err(e) => {
            warn!("disk cache: cannot list {}: {e}", dir.display());
            Vec::new()
        }
    }
}

/// Indexes the directory: (key, size, last used) for each good entry, and how many were dropped.
/// Cold, 50k entries are some 150k inode reads: a few threads keep the disk busy.
fn scan(root: &Path, ttl: Duration) -> io::Result<(Vec<Found>, usize)> {
    let shards = list_shards(root)?;
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get()).min(8);
    let per_thread = shards.len().div_ceil(threads).max(1);
    let parts: Vec<(Vec<Found>, usize)> = std::thread::scope(|s| {
        let workers: Vec<_> = shards
            .chunks(per_thread)
            .map(|part| s.spawn(move || scan_shards(root, part, ttl)))
            .collect();
        workers.into_iter().filter_map(|w| w.join().ok()).collect()
    });
    let dropped = parts.iter().map(|(_, dropped)| dropped).sum();
    Ok((parts.into_iter().flat_map(|(found, _)| found).collect(), dropped))
}

fn scan_shards(root: &Path, shards: &[PathBuf], ttl: Duration) -> (Vec<Found>, usize) {
    let (mut found, mut dropped) = (Vec::new(), 0);
    for dir in shards {
        let names = list_names(dir);
        let jsons: HashSet<&str> = names.iter().filter_map(|n| n.strip_suffix(".json")).collect();
        for name in &names {
            let path = dir.join(name);
            match classify(name) {
                Name::Temp if is_stale(&path) => {
                    remove_quiet(&path);
                }
                Name::Wav(key) if !jsons.contains(key.hex().as_str()) && is_stale(&path) => {
                    dropped += usize::from(remove_quiet(&path));
                }
                Name::Json(key) => match check_entry(root, &key, &path, ttl) {
                    Ok(entry) => found.push(entry),
                    Err(fault) => dropped += usize::from(settle(root, &key, &fault)),
                },
                _ => {}
            }
        }
    }
    (found, dropped)
}

/// One entry at `open`: its JSON checked and its WAV's length compared (no hashing: `get` does).
fn check_entry(root: &Path, key: &CacheKey, json: &Path, ttl: Duration) -> Result<Found, Fault> {
    let (meta, _) = read_meta(json, ttl).map_err(|fault| match fault {
        Fault::Io(e) => Fault::Damaged(format!("unreadable metadata: {e}")),
        other => other,
    })?;
    let wav_len = fs::metadata(paths(root, key).0)
        .map_err(|e| Fault::Damaged(format!("WAV: {e}")))?
        .len();
    if wav_len != meta.size {
        return Err(Fault::Damaged(format!(
            "WAV has {wav_len} bytes, expected {}",
            meta.size
        )));
    }
    let used = fs::metadata(json)
        .and_then(|m| m.modified())
        .unwrap_or(UNIX_EPOCH);
    Ok((*key, meta.size, used))
}

/// Deletes every entry's files (all JSONs first, then WAVs) and stale temp files; the keys hit.
fn purge_dir(root: &Path) -> Vec<CacheKey> {
    let shards = list_shards(root).unwrap_or_else(|e| {
        warn!("disk cache: cannot list {}: {e}", root.display());
        Vec::new()
    });
    let mut keys = Vec::new();
    for dir in shards {
        let names = list_names(&dir);
        let (jsons, others): (Vec<&String>, Vec<&String>) = names.iter().partition(|n| n.ends_with(".json"));
        for name in jsons.into_iter().chain(others) {
            let path = dir.join(name);
            match classify(name) {
                Name::Json(key) | Name::Wav(key) if remove_quiet(&path) => keys.push(key),
                Name::Temp if is_stale(&path) => {
                    remove_quiet(&path);
                }
                _ => {}
            }
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            let path = std::env::temp_dir().join(format!("cosygate-disk-{:016x}", rand::random::<u64>()));
            fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const DAY: Duration = Duration::from_secs(86_400);

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 32])
    }

    fn wav(n: u8, len: usize) -> CachedWav {
        let bytes: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(n))
            .collect();
        CachedWav {
            wav: Bytes::from(bytes),
            created: SystemTime::now(),
        }
    }

    fn files(dir: &TempDir, k: &CacheKey) -> (PathBuf, PathBuf) {
        paths(&dir.0.join("v1"), k)
    }

    fn set_age(path: &Path, age: Duration) {
        let file = File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    #[tokio::test]
    async fn round_trip_and_persistence() {
        let dir = TempDir::new();
        let tier = DiskTier::open(dir.0.clone(), 1 << 20, DAY).await.unwrap();
        assert!(tier.is_empty());
        let entry = wav(1, 5000);
        tier.put(&key(1), &entry, &json!({"text": "hello", "speed": 1.0}))
            .await;
        let got = tier.get(&key(1)).await.unwrap();
        assert_eq!(got.wav, entry.wav);
        assert_eq!(unix_ms(got.created), unix_ms(entry.created));
        assert_eq!((tier.len(), tier.bytes()), (1, 5000));
        assert!(tier.get(&key(2)).await.is_none());

        let (wav_path, json_path) = files(&dir, &key(1));
        assert_eq!(fs::read(&wav_path).unwrap(), entry.wav);
        let meta: serde_json::Value = serde_json::from_slice(&fs::read(&json_path).unwrap()).unwrap();
        assert_eq!(meta["version"], 1);
        assert_eq!(meta["size"], 5000);
        assert_eq!(meta["sha256"], hex::encode(Sha256::digest(&entry.wav)));
        assert_eq!(meta["params"]["text"], "hello");
        drop(tier);

        let reopened = DiskTier::open(dir.0.clone(), 1 << 20, DAY).await.unwrap();
        assert_eq!((reopened.len(), reopened.bytes()), (1, 5000));
        assert_eq!(reopened.get(&key(1)).await.unwrap().wav, entry.wav);
    }

    #[tokio::test]
    async fn expires_after_ttl() {
        let dir = TempDir::new();
        let ttl = Duration::from_millis(200);
        let tier = DiskTier::open(dir.0.clone(), 1 << 20, ttl).await.unwrap();
        let entry = wav(1, 100);
        tier.put(&key(1), &entry, &json!({})).await;
        assert!(tier.get(&key(1)).await.is_some());
        let deadline = entry.created + ttl + Duration::from_millis(50);
        tokio::time::sleep(deadline.duration_since(SystemTime::now()).unwrap_or_default()).await;
        assert!(tier.get(&key(1)).await.is_none());
        let (wav_path, json_path) = files(&dir, &key(1));
        assert!(!wav_path.exists() && !json_path.exists());
        assert_eq!((tier.len(), tier.bytes()), (0, 0));

        // An entry that is already expired is not stored; expired entries are dropped at `open`.
        tier.put(
            &key(2),
            &CachedWav {
                created: SystemTime::now() - DAY,
                ..wav(2, 100)
            },
            &json!({}),
        )
        .await;
        assert!(!files(&dir, &key(2)).0.exists() && tier.is_empty());
        let entry = wav(3, 100);
        tier.put(&key(3), &entry, &json!({})).await;
        assert!(files(&dir, &key(3)).1.exists());
        let deadline = entry.created + ttl + Duration::from_millis(50);
        tokio::time::sleep(deadline.duration_since(SystemTime::now()).unwrap_or_default()).await;
        let reopened = DiskTier::open(dir.0.clone(), 1 << 20, ttl).await.unwrap();
        assert!(reopened.is_empty());
        assert!(!files(&dir, &key(3)).0.exists() && !files(&dir, &key(3)).1.exists());
    }

    #[tokio::test]
    async fn evicts_least_recently_used() {
        let dir = TempDir::new();
        let tier = DiskTier::open(dir.0.clone(), 3000, DAY).await.unwrap();
        for n in 1..=3 {
            tier.put(&key(n), &wav(n, 1000), &json!({})).await;
        }
        assert_eq!(tier.bytes(), 3000);
        assert!(tier.get(&key(1)).await.is_some()); // 2 is now the least recently used
        tier.put(&key(4), &wav(4, 1000), &json!({})).await;
        assert!(tier.bytes() <= 3000);
        assert!(!files(&dir, &key(2)).0.exists() && !files(&dir, &key(2)).1.exists());
        assert!(tier.get(&key(2)).await.is_none());
        for n in [1, 3, 4] {
            assert!(tier.get(&key(n)).await.is_some(), "entry {n} should survive");
        }
        // Order now (oldest first): 1, 3, 4; a big entry pushes out 1 and 3.
        tier.put(&key(5), &wav(5, 2000), &json!({})).await;
        assert_eq!((tier.len(), tier.bytes()), (2, 3000));
        assert!(tier.get(&key(4)).await.is_some() && tier.get(&key(5)).await.is_some());
    }

    #[tokio::test]
    async fn lru_order_survives_reopen() {
        let dir = TempDir::new();
        let tier = DiskTier::open(dir.0.clone(), 3000, DAY).await.unwrap();
        for n in 1..=3 {
            tier.put(&key(n), &wav(n, 1000), &json!({})).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(tier.get(&key(1)).await.is_some());
        drop(tier);
        let tier = DiskTier::open(dir.0.clone(), 3000, DAY).await.unwrap();
        tier.put(&key(4), &wav(4, 1000), &json!({})).await;
        assert!(tier.get(&key(2)).await.is_none());
        assert!(tier.get(&key(1)).await.is_some());

        // A smaller cap at the next open evicts down to it.
        drop(tier);
        let tier = DiskTier::open(dir.0.clone(), 1000, DAY).await.unwrap();
        assert_eq!((tier.len(), tier.bytes()), (1, 1000));
        assert!(tier.get(&key(1)).await.is_some());
    }

    #[tokio::test]
    async fn damaged_entries_are_dropped() {
        let dir = TempDir::new();
        let tier = DiskTier::open(dir.0.clone(), 1 << 20, DAY).await.unwrap();
        tier.put(&key(1), &wav(1, 4000), &json!({})).await;
        tier.put(&key(2), &wav(2, 4000), &json!({})).await;

        let (wav1, json1) = files(&dir, &key(1));
        let mut bytes = fs::read(&wav1).unwrap();
        bytes[1234] ^= 0x40;
        fs::write(&wav1, &bytes).unwrap();
        assert!(tier.get(&key(1)).await.is_none());
        assert!(!wav1.exists() && !json1.exists());

        let (wav2, json2) = files(&dir, &key(2));
        let bytes = fs::read(&wav2).unwrap();
        fs::write(&wav2, &bytes[..3000]).unwrap();
        assert!(tier.get(&key(2)).await.is_none());
        assert!(!wav2.exists() && !json2.exists());
        assert_eq!((tier.len(), tier.bytes()), (0, 0));

        // A JSON that is not metadata.
        tier.put(&key(3), &wav(3, 100), &json!({})).await;
        let (wav3, json3) = files(&dir, &key(3));
        fs::write(&json3, b"{\"version\":1,").unwrap();
        assert!(tier.get(&key(3)).await.is_none());
        assert!(!wav3.exists() && !json3.exists());
    }

    #[tokio::test]
    async fn open_cleans_debris() {
        let dir = TempDir::new();
        let tier = DiskTier::open(dir.0.clone(), 1 << 20, DAY).await.unwrap();
        for n in 1..=4 {
            tier.put(&key(n), &wav(n, 500), &json!({})).await;
        }
        drop(tier);
        // 1: crash between the two renames (WAV without JSON), from a while ago.
        let (wav1, json1) = files(&dir, &key(1));
        fs::remove_file(&json1).unwrap();
        set_age(&wav1, Duration::from_secs(120));
        // 2: a WAV without JSON just now: perhaps another process is committing it; kept, unserved.
        let (wav2, json2) = files(&dir, &key(2));
        fs::remove_file(&json2).unwrap();
        // 3: unreadable JSON. 4: WAV shorter than its JSON says.
        let (wav3, json3) = files(&dir, &key(3));
        fs::write(&json3, b"not json").unwrap();
        let (wav4, json4) = files(&dir, &key(4));
        fs::write(&wav4, b"short").unwrap();
        // Temp files: a stale one and one being written.
        let shard = wav1.parent().unwrap();
        let stale = shard.join(format!(".{}.00000000000000aa.tmp", key(1).hex()));
        let fresh = shard.join(format!(".{}.00000000000000bb.tmp", key(1).hex()));
        fs::write(&stale, b"partial").unwrap();
        set_age(&stale, Duration::from_secs(120));
        fs::write(&fresh, b"partial").unwrap();

        let tier = DiskTier::open(dir.0.clone(), 1 << 20, DAY).await.unwrap();
        assert_eq!((tier.len(), tier.bytes()), (0, 0));
        assert!(!wav1.exists() && !stale.exists() && !wav3.exists() && !json3.exists());
        assert!(!wav4.exists() && !json4.exists());
        assert!(wav2.exists() && fresh.exists());
        for n in 1..=4 {
            assert!(tier.get(&key(n)).await.is_none());
        }
    }

    #[tokio::test]
    async fn too_big_remove_and_purge() {
        let dir = TempDir::new();
        let tier = DiskTier::open(dir.0.clone(), 1000, DAY).await.unwrap();
        tier.put(&key(9), &wav(9, 1001), &json!({})).await;
        assert!(tier.is_empty() && !files(&dir, &key(9)).0.exists());
        assert!(tier.get(&key(9)).await.is_none());

        for n in 1..=3 {
            tier.put(&key(n), &wav(n, 300), &json!({})).await;
        }
        assert!(tier.remove(&key(1)).await);
        assert!(!tier.remove(&key(1)).await);
        assert!(tier.get(&key(1)).await.is_none());
        assert_eq!((tier.len(), tier.bytes()), (2, 600));

        // An entry another process stored is found by `get`, and by `purge_all`.
        let other = DiskTier::open(dir.0.clone(), 1000, DAY).await.unwrap();
        other.put(&key(4), &wav(4, 300), &json!({})).await;
        assert_eq!(tier.purge_all().await, 3);
        assert_eq!((tier.len(), tier.bytes()), (0, 0));
        for n in 1..=4 {
            assert!(!files(&dir, &key(n)).1.exists());
            assert!(
                other.get(&key(n)).await.is_none(),
                "another process's index forgets {n}"
            );
        }
        assert!(other.is_empty());
        tier.put(&key(5), &wav(5, 300), &json!({})).await;
        assert!(other.get(&key(5)).await.is_some());
        assert_eq!(other.len(), 1);
    }

    #[tokio::test]
    async fn a_read_between_the_two_renames_waits_for_the_json() {
        // Another process has renamed its new WAV into place and renames the JSON 2 ms later:
        // the reader sees the old JSON with the new WAV, looks again and serves the new entry.
        let dir = TempDir::new();
        let tier = DiskTier::open(dir.0.clone(), 1 << 20, DAY).await.unwrap();
        let (old, new) = (wav(1, 3000), wav(2, 3000));
        tier.put(&key(1), &old, &json!({})).await;
        let (wav_path, json_path) = files(&dir, &key(1));
        let staging = dir.0.join("staging");
        DiskTier::open(staging.clone(), 1 << 20, DAY)
            .await
            .unwrap()
            .put(&key(1), &new, &json!({}))
            .await;
        let (new_wav, new_json) = paths(&staging.join("v1"), &key(1));
        fs::rename(&new_wav, &wav_path).unwrap();
        let commit = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(2));
            fs::rename(&new_json, &json_path).unwrap();
        });
        let got = tier.get(&key(1)).await;
        commit.join().unwrap();
        assert_eq!(got.map(|g| g.wav), Some(new.wav));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_puts_and_gets_never_serve_a_mix() {
        // Two tiers on one directory, as during a graceful upgrade, rewriting one key while
        // reading it: every answer is one complete version.
        let dir = TempDir::new();
        let a = Arc::new(DiskTier::open(dir.0.clone(), 1 << 22, DAY).await.unwrap());
        let b = Arc::new(DiskTier::open(dir.0.clone(), 1 << 22, DAY).await.unwrap());
        let versions: Arc<Vec<CachedWav>> = Arc::new((0..4).map(|n| wav(n, 200_000)).collect());
        a.put(&key(7), &versions[0], &json!({})).await;
        let mut tasks = Vec::new();
        for round in 0..20 {
            for (i, tier) in [&a, &b].into_iter().enumerate() {
                let (writer, entry) = (Arc::clone(tier), versions[(round + i) % 4].clone());
                tasks.push(tokio::spawn(async move {
                    writer.put(&key(7), &entry, &json!({})).await;
                    false
                }));
                let (reader, versions) = (Arc::clone(tier), Arc::clone(&versions));
                tasks.push(tokio::spawn(async move {
                    let got = reader.get(&key(7)).await;
                    let whole = got
                        .as_ref()
                        .is_none_or(|got| versions.iter().any(|v| v.wav == got.wav));
                    assert!(whole, "served a mixed entry");
                    got.is_some()
                }));
            }
        }
        let mut hits = 0;
        for task in tasks {
            hits += usize::from(task.await.unwrap());
        }
        assert!(hits > 0, "no read overlapped the writes");
    }
}
