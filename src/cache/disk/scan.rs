//! Walking the disk tier's directory: the startup scan that rebuilds the index (dropping
//! expired and damaged entries, stale temp files and the old two-file layout) and `purge_all`'s
//! sweep. Runs on blocking threads.

use super::entry_file::{self, remove_quiet, settle, EXTENSION};
use crate::cache::entry::CacheKey;
use crate::cache::key::Families;
use log::{info, warn};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Temp files younger than this may belong to a write in progress (perhaps another process's).
const STALE: Duration = Duration::from_secs(60);

/// An entry found at `open`: key, WAV size, last used, and the approximate families its
/// description files it under.
pub(super) type Found = (CacheKey, u64, SystemTime, Option<Families>);

enum Name {
    Entry(CacheKey),
    Temp,
    Other,
}

fn classify(name: &str) -> Name {
    let key = |hex: &str| (hex.len() == 64).then(|| CacheKey::from_hex(hex)).flatten();
    if name.starts_with('.') && name.ends_with(".tmp") {
        Name::Temp
    } else if let Some(key) = name
        .strip_suffix(EXTENSION)
        .and_then(|stem| stem.strip_suffix('.'))
        .and_then(key)
    {
        Name::Entry(key)
    } else {
        Name::Other
    }
}

fn is_stale(path: &Path) -> bool {
    let modified = fs::metadata(path).and_then(|m| m.modified());
    modified.is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE))
}

/// Deletes `old`, the directory of the two-file layout (`<key>.wav` + `<key>.json`) that
/// earlier versions wrote: its entries are not read, only removed.
pub(super) fn remove_old_layout(old: &Path) {
    match fs::remove_dir_all(old) {
        Ok(()) => info!(
            "disk cache: removed {} (entries in the old two-file layout)",
            old.display()
        ),
        Err(e) if entry_file::is_not_found(&e) => {}
        Err(e) => warn!("disk cache: cannot remove {}: {e}", old.display()),
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
/// Cold, 50k entries are some 100k inode and header reads: a few threads keep the disk busy.
pub(super) fn scan(root: &Path, ttl: Duration) -> io::Result<(Vec<Found>, usize)> {
    let shards = list_shards(root)?;
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get()).min(8);
    let per_thread = shards.len().div_ceil(threads).max(1);
    let parts: Vec<(Vec<Found>, usize)> = std::thread::scope(|s| {
        let workers: Vec<_> = shards
            .chunks(per_thread)
            .map(|part| s.spawn(move || scan_shards(part, ttl)))
            .collect();
        workers.into_iter().filter_map(|w| w.join().ok()).collect()
    });
    let dropped = parts.iter().map(|(_, dropped)| dropped).sum();
    Ok((parts.into_iter().flat_map(|(found, _)| found).collect(), dropped))
}

fn scan_shards(shards: &[PathBuf], ttl: Duration) -> (Vec<Found>, usize) {
    let (mut found, mut dropped) = (Vec::new(), 0);
    for dir in shards {
        for name in list_names(dir) {
            let path = dir.join(&name);
            match classify(&name) {
                Name::Temp if is_stale(&path) => {
                    remove_quiet(&path);
                }
                Name::Entry(key) => match entry_file::read_header(&path, ttl) {
                    Ok((header, used)) => found.push((key, header.size, used, header.families())),
                    Err(entry_file::Fault::Io(e)) => {
                        let fault = entry_file::Fault::Damaged(format!("unreadable: {e}"));
                        dropped += usize::from(settle(&path, &key, &fault));
                    }
                    Err(fault) => dropped += usize::from(settle(&path, &key, &fault)),
                },
                _ => {}
            }
        }
    }
    (found, dropped)
}

/// Deletes every entry and stale temp file (a fresh one may be another process's write in
/// progress); returns the keys whose entries it deleted.
pub(super) fn purge_dir(root: &Path) -> Vec<CacheKey> {
    let shards = list_shards(root).unwrap_or_else(|e| {
        warn!("disk cache: cannot list {}: {e}", root.display());
        Vec::new()
    });
    let mut keys = Vec::new();
    for dir in shards {
        for name in list_names(&dir) {
            let path = dir.join(&name);
            match classify(&name) {
                Name::Entry(key) if remove_quiet(&path) => keys.push(key),
                Name::Temp if is_stale(&path) => {
                    remove_quiet(&path);
                }
                _ => {}
            }
        }
    }
    keys
}
