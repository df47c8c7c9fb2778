//! One disk-cache entry as one file, `<root>/<first two hex digits>/<key hex>.entry`: a header
//! line (compact JSON: format, version, created time, WAV size, WAV sha256 and the request's
//! description), a newline, then the exact WAV bytes. This module owns that format: writing an
//! entry (a temp file, fsynced, committed by one `rename`), reading and verifying one, and why a
//! file is not served (`Fault`).
//!
//! One file committed by one rename is all the consistency there is to keep: a reader opens
//! either the old complete file or the new complete one, and an open file stays readable when it
//! is replaced or evicted meanwhile.

use crate::cache::entry::{CacheKey, CachedWav};
use bytes::Bytes;
use log::{debug, warn};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The header's `format`: what a reader checks first.
const FORMAT: &str = "cosygate-wav-cache";
const VERSION: u32 = 2;
/// The file name's extension.
pub(super) const EXTENSION: &str = "entry";
/// A header line may not be longer (a longer description is not stored with the entry).
const MAX_HEADER: u64 = 64 * 1024;

#[derive(Serialize, Deserialize)]
pub(super) struct Header {
    format: String,
    version: u32,
    created_unix_ms: u64,
    /// The WAV's length in bytes (what the cap counts).
    pub(super) size: u64,
    sha256: String,
    /// What the request asked for (`cache::key::describe`), for operators.
    #[serde(default)]
    params: serde_json::Value,
    /// Fallback audio (`X-Degraded` on a hit).
    #[serde(default)]
    degraded: bool,
}

impl Header {
    /// The approximate families the description files the entry under (not for fallback audio).
    pub(super) fn families(&self) -> Option<crate::cache::key::Families> {
        crate::cache::key::Families::from_description(&self.params).filter(|_| !self.degraded)
    }

    fn created(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.created_unix_ms)
    }
}

/// Why an entry is not served.
pub(super) enum Fault {
    /// Not there (or deleted meanwhile).
    Gone,
    /// An IO error other than "not found": logged, the file is left alone.
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

/// Where the entry of `key` lives under `root`.
pub(super) fn path(root: &Path, key: &CacheKey) -> PathBuf {
    let hex = key.hex();
    root.join(&hex[..2]).join(format!("{hex}.{EXTENSION}"))
}

pub(super) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

pub(super) fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// Removes a file; true if it existed. Errors other than "not found" are logged.
pub(super) fn remove_quiet(path: &Path) -> bool {
    match fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if is_not_found(&e) => false,
        Err(e) => {
            warn!("disk cache: cannot remove {}: {e}", path.display());
            false
        }
    }
}

/// The header line of an entry, newline included.
fn encode_header(entry: &CachedWav, params: serde_json::Value) -> io::Result<Vec<u8>> {
    let mut header = Header {
        format: FORMAT.into(),
        version: VERSION,
        created_unix_ms: unix_ms(entry.created),
        size: entry.wav.len() as u64,
        sha256: hex::encode(Sha256::digest(&entry.wav)),
        params,
        degraded: entry.degraded,
    };
    let mut line = serde_json::to_vec(&header)?;
    if line.len() as u64 >= MAX_HEADER {
        header.params = serde_json::json!({"omitted": "longer than the header allows"});
        line = serde_json::to_vec(&header)?;
    }
    line.push(b'\n');
    Ok(line)
}

/// Writes the entry to a temp file beside its place, fsyncs it and renames it into place.
pub(super) fn write(
    root: &Path,
    key: &CacheKey,
    entry: &CachedWav,
    params: serde_json::Value,
) -> io::Result<()> {
    let final_path = path(root, key);
    let dir = final_path.parent().unwrap_or(root);
    fs::create_dir_all(dir)?;
    let header = encode_header(entry, params)?;
    let temp = dir.join(format!(".{}.{:016x}.tmp", key.hex(), rand::random::<u64>()));
    let mut file = OpenOptions::new().write(true).create_new(true).open(&temp)?;
    let written = file
        .write_all(&header)
        .and_then(|()| file.write_all(&entry.wav))
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&temp, &final_path));
    written.inspect_err(|_| {
        remove_quiet(&temp);
    })
}

/// Parses and checks a header line (without its newline) against the TTL.
fn parse_header(line: &[u8], ttl: Duration) -> Result<Header, Fault> {
    let header: Header =
        serde_json::from_slice(line).map_err(|e| Fault::Damaged(format!("bad header: {e}")))?;
    if header.format != FORMAT || header.version != VERSION {
        return Err(Fault::Damaged(format!(
            "header format {:?} version {}",
            header.format, header.version
        )));
    }
    if SystemTime::now()
        .duration_since(header.created())
        .unwrap_or_default()
        >= ttl
    {
        return Err(Fault::Expired);
    }
    Ok(header)
}

/// Where the header line ends (the newline's offset) within the first `MAX_HEADER` bytes.
fn header_end(data: &[u8]) -> Result<usize, Fault> {
    let window = &data[..data.len().min(MAX_HEADER as usize)];
    window
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| Fault::Damaged("no header line".into()))
}

/// Reads an entry whole and verifies it (format, TTL, size and sha256 of the WAV). A file longer
/// than a header plus `max_wav` bytes is damaged (and never read into memory).
pub(super) fn read(path: &Path, ttl: Duration, max_wav: u64) -> Result<CachedWav, Fault> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let limit = max_wav.saturating_add(MAX_HEADER);
    if len > limit {
        return Err(Fault::Damaged(format!("{len} bytes, more than the cache holds")));
    }
    let mut data = Vec::with_capacity(len as usize);
    (&mut file).take(limit + 1).read_to_end(&mut data)?;
    let end = header_end(&data)?;
    let header = parse_header(&data[..end], ttl)?;
    let wav = Bytes::from(data).slice(end + 1..);
    if wav.len() as u64 != header.size {
        return Err(Fault::Damaged(format!(
            "WAV has {} bytes, expected {}",
            wav.len(),
            header.size
        )));
    }
    if !hex::encode(Sha256::digest(&wav)).eq_ignore_ascii_case(&header.sha256) {
        return Err(Fault::Damaged("checksum mismatch".into()));
    }
    Ok(CachedWav {
        wav,
        created: header.created(),
        degraded: header.degraded,
    })
}

/// Reads only an entry's header (the startup scan) and checks the file's length against it;
/// the sha256 is left to `read`. Also returns when the entry was last used (its mtime).
pub(super) fn read_header(path: &Path, ttl: Duration) -> Result<(Header, SystemTime), Fault> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    let mut line = Vec::new();
    BufReader::new(file)
        .take(MAX_HEADER)
        .read_until(b'\n', &mut line)?;
    if line.pop() != Some(b'\n') {
        return Err(Fault::Damaged("no header line".into()));
    }
    let header = parse_header(&line, ttl)?;
    let expected = line.len() as u64 + 1 + header.size;
    if meta.len() != expected {
        return Err(Fault::Damaged(format!(
            "{} bytes, expected {expected}",
            meta.len()
        )));
    }
    Ok((header, meta.modified().unwrap_or(UNIX_EPOCH)))
}

/// Marks an entry as used now (its mtime, the LRU order after a restart); false if it is gone.
pub(super) fn touch(path: &Path) -> bool {
    match File::open(path).and_then(|f| f.set_modified(SystemTime::now())) {
        Ok(()) => true,
        Err(e) if is_not_found(&e) => false,
        Err(e) => {
            debug!("disk cache: cannot touch {}: {e}", path.display());
            true
        }
    }
}

/// Logs why an entry is not served and deletes it if it is expired or damaged; true if deleted.
pub(super) fn settle(path: &Path, key: &CacheKey, fault: &Fault) -> bool {
    match fault {
        Fault::Gone => return false,
        Fault::Io(e) => {
            warn!("disk cache: cannot read entry {key}: {e}");
            return false;
        }
        Fault::Expired => debug!("disk cache: {key} expired"),
        Fault::Damaged(why) => warn!("disk cache: dropping damaged entry {key}: {why}"),
    }
    remove_quiet(path)
}
