//! The disk tier's behaviour on a real directory: round trip and persistence, TTL, LRU by bytes
//! (also across a reopen), damaged files and debris dropped, the old layout removed, purge, and
//! two tiers on one directory (as during an upgrade) never serving a mixed entry.

use super::*;
use bytes::Bytes;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::path::Path;
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
        degraded: false,
    }
}

fn file(dir: &TempDir, k: &CacheKey) -> PathBuf {
    entry_file::path(&dir.0.join(LAYOUT), k)
}

/// An entry file's header (parsed) and WAV.
fn split(path: &Path) -> (serde_json::Value, Vec<u8>) {
    let data = fs::read(path).unwrap();
    let end = data.iter().position(|&b| b == b'\n').unwrap();
    (
        serde_json::from_slice(&data[..end]).unwrap(),
        data[end + 1..].to_vec(),
    )
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
    assert_eq!(
        entry_file::unix_ms(got.created),
        entry_file::unix_ms(entry.created)
    );
    assert_eq!((tier.len(), tier.bytes()), (1, 5000));
    assert!(tier.get(&key(2)).await.is_none());

    // One file: a header line, then the exact WAV.
    let (header, wav_bytes) = split(&file(&dir, &key(1)));
    assert_eq!(wav_bytes, entry.wav);
    assert_eq!(header["format"], "cosygate-wav-cache");
    assert_eq!(header["version"], 2);
    assert_eq!(header["size"], 5000);
    assert_eq!(header["sha256"], hex::encode(Sha256::digest(&entry.wav)));
    assert_eq!(header["params"]["text"], "hello");
    let shard = file(&dir, &key(1)).parent().unwrap().to_path_buf();
    assert_eq!(fs::read_dir(&shard).unwrap().count(), 1, "no other file");
    drop(tier);

    let reopened = DiskTier::open(dir.0.clone(), 1 << 20, DAY).await.unwrap();
    assert_eq!((reopened.len(), reopened.bytes()), (1, 5000));
    assert_eq!(reopened.get(&key(1)).await.unwrap().wav, entry.wav);
}

#[tokio::test]
async fn a_description_too_long_for_the_header_is_left_out() {
    let dir = TempDir::new();
    let tier = DiskTier::open(dir.0.clone(), 1 << 20, DAY).await.unwrap();
    let entry = wav(1, 100);
    tier.put(&key(1), &entry, &json!({"text": "x".repeat(100_000)}))
        .await;
    assert_eq!(tier.get(&key(1)).await.unwrap().wav, entry.wav);
    let (header, _) = split(&file(&dir, &key(1)));
    assert!(header["params"]["omitted"].is_string());
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
    assert!(!file(&dir, &key(1)).exists());
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
    assert!(!file(&dir, &key(2)).exists() && tier.is_empty());
    let entry = wav(3, 100);
    tier.put(&key(3), &entry, &json!({})).await;
    assert!(file(&dir, &key(3)).exists());
    let deadline = entry.created + ttl + Duration::from_millis(50);
    tokio::time::sleep(deadline.duration_since(SystemTime::now()).unwrap_or_default()).await;
    let reopened = DiskTier::open(dir.0.clone(), 1 << 20, ttl).await.unwrap();
    assert!(reopened.is_empty());
    assert!(!file(&dir, &key(3)).exists());
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
    assert!(!file(&dir, &key(2)).exists());
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

    // A flipped bit in the WAV.
    let path1 = file(&dir, &key(1));
    let mut bytes = fs::read(&path1).unwrap();
    let at = bytes.len() - 1234;
    bytes[at] ^= 0x40;
    fs::write(&path1, &bytes).unwrap();
    assert!(tier.get(&key(1)).await.is_none());
    assert!(!path1.exists());

    // A cut file.
    let path2 = file(&dir, &key(2));
    let bytes = fs::read(&path2).unwrap();
    fs::write(&path2, &bytes[..3000]).unwrap();
    assert!(tier.get(&key(2)).await.is_none());
    assert!(!path2.exists());
    assert_eq!((tier.len(), tier.bytes()), (0, 0));

    // A header that is not one, and a file with no header line at all.
    for (n, content) in [(3, &b"{\"version\":2,\nRIFF"[..]), (4, &[0u8; 5000][..])] {
        tier.put(&key(n), &wav(n, 100), &json!({})).await;
        fs::write(file(&dir, &key(n)), content).unwrap();
        assert!(tier.get(&key(n)).await.is_none());
        assert!(!file(&dir, &key(n)).exists());
    }

    // A file larger than the whole cache is not read.
    let small = DiskTier::open(dir.0.clone(), 1000, DAY).await.unwrap();
    small.put(&key(5), &wav(5, 1000), &json!({})).await;
    let mut bytes = fs::read(file(&dir, &key(5))).unwrap();
    bytes.extend(std::iter::repeat_n(0u8, 70_000));
    fs::write(file(&dir, &key(5)), &bytes).unwrap();
    assert!(small.get(&key(5)).await.is_none());
    assert!(!file(&dir, &key(5)).exists());
}

#[tokio::test]
async fn open_cleans_debris_and_the_old_layout() {
    let dir = TempDir::new();
    let tier = DiskTier::open(dir.0.clone(), 1 << 20, DAY).await.unwrap();
    for n in 1..=3 {
        tier.put(&key(n), &wav(n, 500), &json!({})).await;
    }
    drop(tier);
    // 1: unreadable header. 2: shorter than its header says. 3: intact.
    let path1 = file(&dir, &key(1));
    fs::write(&path1, b"not json\n").unwrap();
    let path2 = file(&dir, &key(2));
    let bytes = fs::read(&path2).unwrap();
    fs::write(&path2, &bytes[..bytes.len() - 10]).unwrap();
    // Temp files (a crash mid-write): a stale one and one perhaps being written right now.
    let shard = path1.parent().unwrap();
    let stale = shard.join(format!(".{}.00000000000000aa.tmp", key(1).hex()));
    let fresh = shard.join(format!(".{}.00000000000000bb.tmp", key(1).hex()));
    fs::write(&stale, b"partial").unwrap();
    set_age(&stale, Duration::from_secs(120));
    fs::write(&fresh, b"partial").unwrap();
    // An entry of the old two-file layout.
    let old = dir.0.join(OLD_LAYOUT).join("04");
    fs::create_dir_all(&old).unwrap();
    fs::write(old.join(format!("{}.wav", key(4).hex())), b"RIFF").unwrap();
    fs::write(old.join(format!("{}.json", key(4).hex())), b"{}").unwrap();

    let tier = DiskTier::open(dir.0.clone(), 1 << 20, DAY).await.unwrap();
    assert_eq!((tier.len(), tier.bytes()), (1, 500));
    assert!(!path1.exists() && !path2.exists() && !stale.exists());
    assert!(fresh.exists() && file(&dir, &key(3)).exists());
    assert!(!dir.0.join(OLD_LAYOUT).exists(), "old layout removed");
    for n in [1, 2, 4] {
        assert!(tier.get(&key(n)).await.is_none());
    }
    assert!(tier.get(&key(3)).await.is_some());
}

#[tokio::test]
async fn too_big_remove_and_purge() {
    let dir = TempDir::new();
    let tier = DiskTier::open(dir.0.clone(), 1000, DAY).await.unwrap();
    tier.put(&key(9), &wav(9, 1001), &json!({})).await;
    assert!(tier.is_empty() && !file(&dir, &key(9)).exists());
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
        assert!(!file(&dir, &key(n)).exists());
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
