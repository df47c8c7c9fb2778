//! Registered voices: a prompt sample and its transcript stored once (`POST /v1/voices`) and
//! named by `voice_id` (the sha256 of the sample's bytes) or by name afterwards, so clients do
//! not upload the same sample with every sentence. Per caller scope (`Caller::cache_scope`:
//! tenant, token, or anonymous), with quotas (`voices.max_per_tenant`, `max_bytes_per_tenant`).
//!
//! - `index.rs`: what a voice is without its sample, the in-memory index, the quota rules.
//! - `disk.rs`: one file per voice under `voices.path`, reloaded at start.
//! - `shared.rs`: the copy in Redis (`cache.redis.url`), so every instance knows every voice.
//!
//! With Redis configured and answering, a scope's voices are Redis's, plus this instance's own
//! that Redis lost (published again); this instance's own that were deleted elsewhere are
//! removed here too. Without an answer from Redis, the local directory is the truth.

mod disk;
mod index;
mod shared;
#[cfg(test)]
mod tests;

pub use index::{VoiceError, VoiceInfo};

use crate::config::{GatewayConf, VoicesConf};
use crate::redis_link::RedisLink;
use bytes::Bytes;
use index::{admit, lookup, Admit, Index, Quota};
use log::{info, warn};
use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use shared::SharedVoices;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Shortest Redis timeout for voices (a sample is up to a few MB).
const MIN_REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// One registered voice, as synthesis needs it.
#[derive(Debug, Clone)]
pub struct Voice {
    /// Hex sha256 of `prompt_audio` (64 characters).
    pub id: String,
    pub name: String,
    /// The validated WAV sample.
    pub prompt_audio: Bytes,
    pub prompt_text: String,
}

/// The tag a scope's files and Redis keys are filed under: the first 32 hex digits of its
/// sha256 (scopes are configured names, which need not be file-name safe).
fn scope_tag(scope: &str) -> String {
    hex::encode(&Sha256::digest(scope.as_bytes())[..16])
}

/// Every registered voice this gateway can see; without a `voices` section, none (disabled).
#[derive(Default)]
pub struct VoiceStore {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for VoiceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceStore")
            .field("dir", &self.inner.as_ref().map(|i| i.dir.display().to_string()))
            .finish()
    }
}

struct Inner {
    dir: PathBuf,
    allow_anonymous: bool,
    quota: Quota,
    index: RwLock<Index>,
    /// Samples by voice id (the same id is the same bytes in every scope).
    samples: moka::future::Cache<String, Bytes>,
    shared: Option<SharedVoices>,
    /// One registration or deletion at a time (per instance).
    writes: tokio::sync::Mutex<()>,
}

impl VoiceStore {
    /// Opens the voice directory (creating it) and indexes it; runs once at start, blocking.
    /// Disabled without a `voices` section.
    pub fn open(conf: &GatewayConf) -> Result<Self, String> {
        let Some(v) = &conf.voices else {
            return Ok(Self::default());
        };
        let dir = v
            .dir(conf.cache.as_ref())
            .ok_or("voices needs a directory: set voices.path")?;
        let found = disk::scan(&dir)
            .map_err(|e| format!("voices: cannot read the voice directory {}: {e}", dir.display()))?;
        let shared = match conf.cache.as_ref().and_then(|c| c.redis.as_ref()) {
            Some(r) => Some(SharedVoices::new(RedisLink::new(
                r.url.expose(),
                r.timeout.0.max(MIN_REDIS_TIMEOUT),
                "voices",
            )?)),
            None => None,
        };
        let mut index = Index::default();
        for (scope, info) in found {
            index.insert(&scope, info);
        }
        let (count, bytes) = index.totals();
        info!("voices: {count} voices ({bytes} bytes) in {}", dir.display());
        let store = Inner::new(dir, v, index, shared);
        store.gauges();
        Ok(Self {
            inner: Some(Arc::new(store)),
        })
    }

    /// Whether the feature is configured.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Whether callers without a token may use voices (`voices.allow_anonymous`).
    pub fn allow_anonymous(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.allow_anonymous)
    }

    /// The voice `id_or_name` (a voice id, or a name) registered in `scope` (see
    /// `Caller::cache_scope`), if any. Runs per request naming a voice; may read a file or Redis.
    pub async fn find(&self, scope: &str, id_or_name: &str) -> Option<Voice> {
        let inner = self.inner.as_ref()?;
        let voices = inner.view(scope).await;
        let info = lookup(&voices, id_or_name)?.clone();
        let prompt_audio = inner.sample(scope, &info.voice_id).await?;
        Some(Voice {
            id: info.voice_id,
            name: info.name,
            prompt_audio,
            prompt_text: info.prompt_text,
        })
    }

    /// The voices of `scope`, sorted by name.
    pub async fn list(&self, scope: &str) -> Vec<VoiceInfo> {
        let Some(inner) = &self.inner else {
            return Vec::new();
        };
        let mut voices = inner.view(scope).await;
        voices.sort_by(|a, b| a.name.cmp(&b.name));
        voices
    }

    /// Registers a validated sample in `scope`, or updates the name and transcript of the same
    /// sample registered before: the voice and whether it is new. Writes the disk and Redis.
    pub async fn register(
        &self,
        scope: &str,
        reg: crate::api::VoiceRegistration,
    ) -> Result<(VoiceInfo, bool), VoiceError> {
        let inner = self.inner.as_ref().ok_or(VoiceError::NotFound)?;
        let _one_at_a_time = inner.writes.lock().await;
        let voices = inner.view(scope).await;
        let bytes = reg.prompt_audio.len() as u64;
        let decision = admit(&voices, &reg.id, &reg.name, bytes, inner.quota)?;
        let created_unix_ms = match decision {
            Admit::New => now_ms(),
            Admit::Update { created_unix_ms } => created_unix_ms,
        };
        let info = VoiceInfo {
            voice_id: reg.id,
            name: reg.name,
            prompt_text: reg.prompt_text,
            bytes,
            seconds: reg.seconds,
            created_unix_ms,
        };
        let (dir, s, i, wav) = (
            inner.dir.clone(),
            scope.to_string(),
            info.clone(),
            reg.prompt_audio.clone(),
        );
        tokio::task::spawn_blocking(move || disk::write(&dir, &s, &i, &wav))
            .await
            .map_err(|e| VoiceError::Storage(e.to_string()))?
            .map_err(|e| {
                warn!("voices: cannot write voice {}: {e}", info.voice_id);
                VoiceError::Storage(e.to_string())
            })?;
        // Redis before the index: whoever sees the voice here finds it in Redis too.
        if let Some(shared) = &inner.shared {
            if !shared.put(scope, &info, &reg.prompt_audio).await {
                warn!(
                    "voices: voice {} is stored here only (Redis did not answer); it is shared once Redis is back",
                    info.voice_id
                );
            }
        }
        inner.index.write().insert(scope, info.clone());
        inner
            .samples
            .insert(info.voice_id.clone(), reg.prompt_audio)
            .await;
        inner.gauges();
        Ok((info, decision == Admit::New))
    }

    /// Removes the voice `id_or_name` from `scope`, here and in Redis: what it was.
    pub async fn delete(&self, scope: &str, id_or_name: &str) -> Result<VoiceInfo, VoiceError> {
        let inner = self.inner.as_ref().ok_or(VoiceError::NotFound)?;
        let _one_at_a_time = inner.writes.lock().await;
        let voices = inner.view(scope).await;
        let info = lookup(&voices, id_or_name).ok_or(VoiceError::NotFound)?.clone();
        if let Some(shared) = &inner.shared {
            // Removed here but not there, it would come back from Redis.
            if !shared.remove(scope, &info.voice_id).await {
                return Err(VoiceError::SharedUnavailable);
            }
        }
        inner.forget_local(scope, &info.voice_id).await;
        Ok(info)
    }
}

impl Inner {
    fn new(dir: PathBuf, v: &VoicesConf, index: Index, shared: Option<SharedVoices>) -> Self {
        let samples = moka::future::Cache::builder()
            .max_capacity(v.memory.0)
            .weigher(|_k, wav: &Bytes| u32::try_from(wav.len()).unwrap_or(u32::MAX))
            .build();
        Self {
            dir,
            allow_anonymous: v.allow_anonymous,
            quota: Quota {
                max_count: v.max_per_tenant,
                max_bytes: v.max_bytes_per_tenant.0,
            },
            index: RwLock::new(index),
            samples,
            shared,
            writes: tokio::sync::Mutex::new(()),
        }
    }

    /// The voices of `scope` as every instance should see them (see the module doc).
    async fn view(&self, scope: &str) -> Vec<VoiceInfo> {
        // The local snapshot first: a voice registered here is in Redis before it is indexed.
        let local = self.index.read().list(scope);
        let Some(shared) = &self.shared else {
            return local;
        };
        let Some(mut voices) = shared.index(scope).await else {
            return local;
        };
        let known: HashSet<&str> = voices.iter().map(|v| v.voice_id.as_str()).collect();
        let missing: Vec<VoiceInfo> = local
            .into_iter()
            .filter(|v| !known.contains(v.voice_id.as_str()))
            .collect();
        if missing.is_empty() {
            return voices;
        }
        let ids: Vec<&str> = missing.iter().map(|v| v.voice_id.as_str()).collect();
        let Some(deleted) = shared.deleted(scope, &ids).await else {
            voices.extend(missing);
            return voices;
        };
        for (voice, deleted) in missing.into_iter().zip(deleted) {
            if deleted {
                info!("voices: voice {} was deleted on another instance", voice.voice_id);
                self.forget_local(scope, &voice.voice_id).await;
            } else {
                // Registered while Redis was away, or lost by Redis: share it again.
                if let Some(wav) = self.sample(scope, &voice.voice_id).await {
                    shared.put(scope, &voice, &wav).await;
                }
                voices.push(voice);
            }
        }
        voices
    }

    /// The sample of voice `id` of `scope`: memory, this instance's file, or Redis.
    async fn sample(&self, scope: &str, id: &str) -> Option<Bytes> {
        if let Some(wav) = self.samples.get(id).await {
            return Some(wav);
        }
        let mut wav = None;
        if self.index.read().has(scope, id) {
            let (dir, s, i) = (self.dir.clone(), scope.to_string(), id.to_string());
            wav = tokio::task::spawn_blocking(move || disk::read_sample(&dir, &s, &i))
                .await
                .ok()
                .flatten();
        }
        if wav.is_none() {
            if let Some(shared) = &self.shared {
                wav = shared
                    .sample(scope, id)
                    .await
                    .filter(|w| hex::encode(Sha256::digest(w)) == id);
            }
        }
        let wav = wav?;
        self.samples.insert(id.to_string(), wav.clone()).await;
        Some(wav)
    }

    /// Removes a voice from this instance (index, file, memory).
    async fn forget_local(&self, scope: &str, id: &str) {
        self.index.write().remove(scope, id);
        self.samples.invalidate(id).await;
        let (dir, s, i) = (self.dir.clone(), scope.to_string(), id.to_string());
        match tokio::task::spawn_blocking(move || disk::remove(&dir, &s, &i)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!("voices: cannot remove the file of voice {id}: {e}"),
            Err(e) => warn!("voices: cannot remove the file of voice {id}: {e}"),
        }
        self.gauges();
    }

    fn gauges(&self) {
        let (count, bytes) = self.index.read().totals();
        crate::metrics::VOICES.set(count as i64);
        crate::metrics::VOICE_BYTES.set(bytes as i64);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}
