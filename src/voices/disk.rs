//! Voices on disk: one file per voice, `<path>/v1/<scope tag>/<voice id>.voice`: a header line
//! (compact JSON: format `cosygate-voice`, version 1, the scope, and the [`VoiceInfo`]), a
//! newline, then the exact WAV bytes. Written as the disk cache writes its entries (a temp file,
//! fsynced, committed by one `rename`, then the directory fsynced), so a reader sees the old
//! file or the new one, never half of one. Every function here blocks: run it off the workers.

use super::index::VoiceInfo;
use bytes::Bytes;
use log::warn;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

const FORMAT: &str = "cosygate-voice";
const VERSION: u32 = 1;
const LAYOUT: &str = "v1";
const EXTENSION: &str = "voice";
/// A header line may not be longer.
const MAX_HEADER: u64 = 64 * 1024;
/// Temp files younger than this may be a write in progress.
const STALE: Duration = Duration::from_secs(60);

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    scope: String,
    #[serde(flatten)]
    info: VoiceInfo,
}

/// The file of voice `id` in `scope`.
fn path(root: &Path, scope: &str, id: &str) -> PathBuf {
    root.join(LAYOUT)
        .join(super::scope_tag(scope))
        .join(format!("{id}.{EXTENSION}"))
}

/// Writes a voice's file (replacing an older one of the same voice) atomically.
pub fn write(root: &Path, scope: &str, info: &VoiceInfo, wav: &[u8]) -> io::Result<()> {
    let final_path = path(root, scope, &info.voice_id);
    let dir = final_path.parent().unwrap_or(root);
    fs::create_dir_all(dir)?;
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        scope: scope.to_string(),
        info: info.clone(),
    };
    let mut line = serde_json::to_vec(&header)?;
    line.push(b'\n');
    let temp = dir.join(format!(".{}.{:016x}.tmp", info.voice_id, rand::random::<u64>()));
    let mut file = OpenOptions::new().write(true).create_new(true).open(&temp)?;
    let written = file
        .write_all(&line)
        .and_then(|()| file.write_all(wav))
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&temp, &final_path))
        .and_then(|()| File::open(dir)?.sync_all());
    written.inspect_err(|_| {
        let _ = fs::remove_file(&temp);
    })
}

/// Removes a voice's file; true if it existed.
pub fn remove(root: &Path, scope: &str, id: &str) -> io::Result<bool> {
    match fs::remove_file(path(root, scope, id)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The sample of voice `id` in `scope`, checked against its id; None if missing or damaged
/// (a damaged file is logged and left for the operator).
pub fn read_sample(root: &Path, scope: &str, id: &str) -> Option<Bytes> {
    let p = path(root, scope, id);
    let data = match fs::read(&p) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!("voices: cannot read {}: {e}", p.display());
            return None;
        }
    };
    let start = data.iter().position(|b| *b == b'\n')? + 1;
    let wav = &data[start..];
    if hex::encode(Sha256::digest(wav)) != id {
        warn!(
            "voices: {} is damaged (its audio does not match its id); not used",
            p.display()
        );
        return None;
    }
    Some(Bytes::copy_from_slice(wav))
}

/// Every voice in the directory as (scope, info), read from the header lines; stale temp files
/// are removed, damaged files are logged and skipped.
pub fn scan(root: &Path) -> io::Result<Vec<(String, VoiceInfo)>> {
    let base = root.join(LAYOUT);
    fs::create_dir_all(&base)?;
    let mut found = Vec::new();
    for dir in fs::read_dir(&base)?.filter_map(|e| Some(e.ok()?.path())) {
        if !dir.is_dir() {
            continue;
        }
        for file in fs::read_dir(&dir)?.filter_map(|e| Some(e.ok()?.path())) {
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let old = fs::metadata(&file)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE));
                if old {
                    let _ = fs::remove_file(&file);
                }
                continue;
            }
            match read_header(&file) {
                Ok(h) if file == path(root, &h.scope, &h.info.voice_id) => found.push((h.scope, h.info)),
                Ok(_) => warn!("voices: {} is not where its header says; skipped", file.display()),
                Err(e) => warn!("voices: {} is not a voice file ({e}); skipped", file.display()),
            }
        }
    }
    Ok(found)
}

fn read_header(file: &Path) -> io::Result<Header> {
    let f = File::open(file)?;
    let len = f.metadata()?.len();
    let mut reader = BufReader::new(f.take(MAX_HEADER));
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(io::Error::other("no header line"));
    }
    let h: Header = serde_json::from_slice(&line).map_err(io::Error::other)?;
    if h.format != FORMAT || h.version != VERSION {
        return Err(io::Error::other(format!(
            "format {} version {}",
            h.format, h.version
        )));
    }
    if len != line.len() as u64 + h.info.bytes {
        return Err(io::Error::other(
            "its size does not match its header (cut short?)",
        ));
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> VoiceInfo {
        VoiceInfo {
            voice_id: id.into(),
            name: "anna".into(),
            prompt_text: "Hello.".into(),
            bytes: 4,
            seconds: 0.1,
            created_unix_ms: 1,
        }
    }

    #[test]
    fn written_voices_are_found_read_and_removed() {
        let dir = tempfile::tempdir().expect("dir");
        let wav = b"RIFF";
        let id = hex::encode(Sha256::digest(wav));
        write(dir.path(), "tenant:a", &info(&id), wav).expect("write");
        let found = scan(dir.path()).expect("scan");
        assert_eq!(found, vec![("tenant:a".to_string(), info(&id))]);
        assert_eq!(
            read_sample(dir.path(), "tenant:a", &id).as_deref(),
            Some(&wav[..])
        );
        assert_eq!(read_sample(dir.path(), "tenant:b", &id), None, "scopes are apart");
        assert!(remove(dir.path(), "tenant:a", &id).expect("remove"));
        assert!(!remove(dir.path(), "tenant:a", &id).expect("remove"));
        assert!(scan(dir.path()).expect("scan").is_empty());
    }

    #[test]
    fn damaged_files_are_skipped() {
        let dir = tempfile::tempdir().expect("dir");
        let wav = b"RIFF";
        let id = hex::encode(Sha256::digest(wav));
        write(dir.path(), "s", &info(&id), wav).expect("write");
        let p = path(dir.path(), "s", &id);
        let mut data = fs::read(&p).expect("read");
        let last = data.len() - 1;
        data[last] ^= 1;
        fs::write(&p, &data).expect("flip a bit");
        assert_eq!(read_sample(dir.path(), "s", &id), None, "checked against the id");
        data.pop();
        fs::write(&p, &data).expect("cut");
        assert!(
            scan(dir.path()).expect("scan").is_empty(),
            "a cut file is skipped"
        );
    }
}
