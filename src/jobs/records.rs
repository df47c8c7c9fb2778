//! Job records every gateway process can read, so a 202 job outlives the process that started
//! it: during a graceful upgrade the old process finishes its jobs while it drains, and the new
//! one answers their polls. Each job is recorded when it is created (running) and when it ends
//! (its answer, WAV included, or its error), in the disk cache's directory
//! (`<cache.disk.path>/jobs/<id>.job`: one JSON line, then the WAV) and in Redis when the cache
//! has a Redis tier (`cosygate:job:<id>`, a hash with the record and the WAV), so several
//! instances answer for each other's jobs.
//!
//! Bounds: one writer task with a bounded queue (`jobs.max` × 2 records; beyond, a record is
//! dropped and logged); records expire `jobs.keep` after their last write (Redis by TTL, disk
//! by a sweep every minute), and a job whose result this process dropped early loses its record.

use super::{JobFailed, JobStatus};
use crate::cache::CacheKey;
use crate::config::{GatewayConf, Rung};
use crate::redis_link::RedisLink;
use crate::synth::{Source, Synthesized};
use async_trait::async_trait;
use bytes::Bytes;
use log::{info, warn};
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// How often expired disk records are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The longest one Redis write or read of a record may take (it carries a whole WAV and runs
/// off the request path, so more than the cache's round trip).
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// One job as the record holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    owner: String,
    /// None while the job runs.
    outcome: Option<Result<AnswerMeta, JobFailed>>,
}

/// A finished job's answer, besides its WAV.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AnswerMeta {
    source: SourceRecord,
    degraded: bool,
    /// The rung of the degradation ladder that answered (`X-Degraded: approximate`).
    #[serde(default)]
    approximate: Option<Rung>,
    created_unix_ms: u64,
    key: Option<String>,
    wav_sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum SourceRecord {
    Backend(SocketAddr),
    Fallback,
    Tier(String),
    InFlight,
}

/// A write for the writer task.
enum Write {
    Save {
        id: String,
        record: Record,
        wav: Option<Bytes>,
        /// Told when the record is written (or failed to be).
        written: Option<oneshot::Sender<()>>,
    },
    Remove {
        id: String,
    },
}

/// The shared store of job records.
pub struct JobRecords {
    dir: Option<PathBuf>,
    redis: Option<RedisLink>,
    keep: Duration,
    queue: mpsc::Sender<Write>,
    /// Writes queued or running (the drain waits for them).
    writes: Arc<AtomicUsize>,
}

/// Whether `id` is one of ours (32 lowercase hex digits): never a path or a key pattern.
fn is_job_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A record's fields in Redis: the JSON record and the WAV (either may be missing).
type RedisFields = (Option<Vec<u8>>, Option<Vec<u8>>);

fn redis_key(id: &str) -> String {
    format!("cosygate:job:{id}")
}

impl JobRecords {
    /// None when the cache has neither a disk nor a Redis tier (jobs then live in memory only).
    /// The records and the background service that writes them (add it to the server).
    pub fn new(conf: &GatewayConf) -> Result<Option<(Arc<Self>, RecordWriter)>, String> {
        let Some(cache) = &conf.cache else {
            return Ok(None);
        };
        let dir = cache.disk.as_ref().map(|d| d.path.join("jobs"));
        let redis = match &cache.redis {
            Some(r) => Some(RedisLink::new(r.url.expose(), REDIS_TIMEOUT, "jobs")?),
            None => None,
        };
        if dir.is_none() && redis.is_none() {
            return Ok(None);
        }
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create the job records' directory {}: {e}", dir.display()))?;
        }
        let (queue, inbox) = mpsc::channel(conf.jobs.max.max(1).saturating_mul(2));
        let records = Arc::new(Self {
            dir,
            redis,
            keep: conf.jobs.keep.0,
            queue,
            writes: Arc::new(AtomicUsize::new(0)),
        });
        let writer = RecordWriter {
            records: records.clone(),
            inbox: Mutex::new(Some(inbox)),
        };
        Ok(Some((records, writer)))
    }

    /// Records and removals queued or being written.
    pub fn writes_in_flight(&self) -> usize {
        self.writes.load(Ordering::Acquire)
    }

    /// Records a job that has just been created (running). The receiver completes once the
    /// record is written, so the 202 can wait for it: a poll at another instance right after
    /// the 202 then finds the job.
    pub fn created(&self, id: &str, owner: &str) -> oneshot::Receiver<()> {
        let record = Record {
            owner: owner.to_string(),
            outcome: None,
        };
        let (written, receiver) = oneshot::channel();
        self.enqueue(Write::Save {
            id: id.to_string(),
            record,
            wav: None,
            written: Some(written),
        });
        receiver
    }

    /// Records a job's end: its answer with the WAV, or its error.
    pub fn finished(&self, id: &str, owner: &str, result: &Result<Synthesized, JobFailed>) {
        let (outcome, wav) = match result {
            Ok(answer) => (Ok(meta_of(answer)), Some(answer.wav.clone())),
            Err(e) => (Err(e.clone()), None),
        };
        let record = Record {
            owner: owner.to_string(),
            outcome: Some(outcome),
        };
        self.enqueue(Write::Save {
            id: id.to_string(),
            record,
            wav,
            written: None,
        });
    }

    /// Forgets a job (its result was dropped early, or it expired here).
    pub fn removed(&self, id: &str) {
        self.enqueue(Write::Remove { id: id.to_string() });
    }

    fn enqueue(&self, write: Write) {
        self.writes.fetch_add(1, Ordering::AcqRel);
        if self.queue.try_send(write).is_err() {
            self.writes.fetch_sub(1, Ordering::AcqRel);
            warn!("job records: the write queue is full; a job record was not written");
        }
    }

    async fn write(&self, write: Write) {
        match write {
            Write::Save {
                id,
                record,
                wav,
                written,
            } => {
                self.save(&id, &record, wav).await;
                if let Some(written) = written {
                    let _ = written.send(());
                }
            }
            Write::Remove { id } => self.remove(&id).await,
        }
        self.writes.fetch_sub(1, Ordering::AcqRel);
    }

    async fn save(&self, id: &str, record: &Record, wav: Option<Bytes>) {
        let Ok(json) = serde_json::to_vec(record) else {
            return;
        };
        if let Some(dir) = &self.dir {
            let (dir, id, json, wav) = (dir.clone(), id.to_string(), json.clone(), wav.clone());
            let written =
                tokio::task::spawn_blocking(move || write_file(&dir, &id, &json, wav.as_deref())).await;
            if let Ok(Err(e)) = written {
                warn!("job records: cannot write a record: {e}");
            }
        }
        if let Some(redis) = &self.redis {
            let key = redis_key(id);
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("HSET")
                .arg(&key)
                .arg("record")
                .arg(json)
                .ignore();
            if let Some(wav) = &wav {
                pipe.cmd("HSET").arg(&key).arg("wav").arg(wav.as_ref()).ignore();
            }
            pipe.cmd("PEXPIRE")
                .arg(&key)
                .arg(self.keep.as_millis() as u64)
                .ignore();
            let _: Option<()> = redis.query(&pipe).await;
        }
    }

    async fn remove(&self, id: &str) {
        if let Some(dir) = &self.dir {
            let path = dir.join(format!("{id}.job"));
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
        }
        if let Some(redis) = &self.redis {
            let _: Option<u64> = redis.query(redis::cmd("UNLINK").arg(redis_key(id))).await;
        }
    }

    /// The job as another process recorded it, for `owner` (None: unknown, expired, another
    /// caller's, or a damaged record).
    pub async fn load(&self, id: &str, owner: &str) -> Option<JobStatus> {
        if !is_job_id(id) {
            return None;
        }
        let mut found = None;
        if let Some(dir) = &self.dir {
            let path = dir.join(format!("{id}.job"));
            found = tokio::task::spawn_blocking(move || read_file(&path))
                .await
                .ok()
                .flatten();
        }
        if found.is_none() {
            if let Some(redis) = &self.redis {
                let cmd = redis::cmd("HMGET")
                    .arg(redis_key(id))
                    .arg("record")
                    .arg("wav")
                    .clone();
                let fields: Option<RedisFields> = redis.query(&cmd).await;
                if let Some((Some(json), wav)) = fields {
                    found = serde_json::from_slice::<Record>(&json)
                        .ok()
                        .map(|r| (r, wav.map(Bytes::from)));
                }
            }
        }
        let (record, wav) = found?;
        if record.owner != owner {
            return None;
        }
        match record.outcome {
            None => Some(JobStatus::Running),
            Some(Err(e)) => Some(JobStatus::Done(Err(e))),
            Some(Ok(meta)) => {
                let wav = wav.filter(|w| hex::encode(Sha256::digest(w)) == meta.wav_sha256)?;
                Some(JobStatus::Done(Ok(answer_of(meta, wav))))
            }
        }
    }

    /// Deletes disk records last written more than `keep` ago (Redis ones expire by TTL).
    /// Runs every minute off the request path.
    pub fn sweep(&self) {
        let Some(dir) = &self.dir else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > self.keep);
            if old && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            info!("job records: {removed} expired records removed");
        }
    }
}

/// The background service that writes job records, one at a time and in order (so a job's end
/// never lands before its creation), and sweeps expired ones. It keeps running through a
/// shutdown's drain (the records of jobs finishing then are what the next process reads); the
/// process's exit ends it.
pub struct RecordWriter {
    records: Arc<JobRecords>,
    inbox: Mutex<Option<mpsc::Receiver<Write>>>,
}

#[async_trait]
impl BackgroundService for RecordWriter {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let Some(mut inbox) = self.inbox.lock().take() else {
            return;
        };
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                write = inbox.recv() => match write {
                    Some(write) => self.records.write(write).await,
                    None => return,
                },
                _ = sweep.tick() => {
                    let records = self.records.clone();
                    let _ = tokio::task::spawn_blocking(move || records.sweep()).await;
                }
            }
        }
    }
}

fn meta_of(answer: &Synthesized) -> AnswerMeta {
    let source = match answer.source {
        Source::Backend(addr) => SourceRecord::Backend(addr),
        Source::Fallback => SourceRecord::Fallback,
        Source::Tier(t) => SourceRecord::Tier(t.to_string()),
        Source::InFlight => SourceRecord::InFlight,
    };
    AnswerMeta {
        source,
        degraded: answer.degraded,
        approximate: answer.approximate,
        created_unix_ms: answer
            .created
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        key: answer.key.map(|k| k.hex()),
        wav_sha256: hex::encode(Sha256::digest(&answer.wav)),
    }
}

fn answer_of(meta: AnswerMeta, wav: Bytes) -> Synthesized {
    let source = match meta.source {
        SourceRecord::Backend(addr) => Source::Backend(addr),
        SourceRecord::Fallback => Source::Fallback,
        SourceRecord::Tier(t) => Source::Tier(match t.as_str() {
            "memory" => "memory",
            "redis" => "redis",
            _ => "disk",
        }),
        SourceRecord::InFlight => Source::InFlight,
    };
    Synthesized {
        wav,
        source,
        degraded: meta.degraded,
        created: UNIX_EPOCH + Duration::from_millis(meta.created_unix_ms),
        key: meta.key.as_deref().and_then(CacheKey::from_hex),
        approximate: meta.approximate,
    }
}

/// Writes `<dir>/<id>.job` whole (a temporary file renamed over it).
fn write_file(dir: &Path, id: &str, json: &[u8], wav: Option<&[u8]>) -> std::io::Result<()> {
    let tmp = dir.join(format!("{id}.job.tmp"));
    let mut body = Vec::with_capacity(json.len() + 1 + wav.map_or(0, <[u8]>::len));
    body.extend_from_slice(json);
    body.push(b'\n');
    if let Some(wav) = wav {
        body.extend_from_slice(wav);
    }
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, dir.join(format!("{id}.job")))
}

fn read_file(path: &Path) -> Option<(Record, Option<Bytes>)> {
    let bytes = std::fs::read(path).ok()?;
    let newline = bytes.iter().position(|b| *b == b'\n')?;
    let record: Record = serde_json::from_slice(&bytes[..newline]).ok()?;
    let rest = &bytes[newline + 1..];
    let wav = (!rest.is_empty()).then(|| Bytes::copy_from_slice(rest));
    Some((record, wav))
}

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;
