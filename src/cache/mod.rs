//! The WAV cache: a repeat costs microseconds, not GPU seconds, and never serves wrong or
//! damaged audio. Lookups go memory → disk → Redis, and a hit in a lower tier is promoted to the
//! tiers above. A miss runs the synthesis once per key, however many identical requests arrive
//! meanwhile (in this process: `single_flight`; across instances: a short-lived lock in Redis).
//! Only complete, validated WAVs are stored. The cache knows nothing of backends: it is handed
//! the synthesis as a future.
//!
//! A miss is answered first and stored after: the memory insert, the disk write (fsyncs and
//! renames) and the Redis write run in a task once the answer is on its way, and so does the
//! disk copy of a Redis hit. Until its store is done the entry stays in `storing`, so an
//! identical request that arrives meanwhile is still answered from that one synthesis; the
//! Redis lock is held until the store is done, so other instances wait for it too. At most
//! `STORES_IN_FLIGHT` stores run behind their answers; beyond, a store runs before its answer.

pub mod approx;
pub mod disk;
pub mod entry;
pub mod key;
pub mod memory;
pub mod redis_tier;
pub mod single_flight;

use crate::api::GenerateRequest;
use crate::config::{CacheConf, CacheShare};
use crate::metrics;
use crate::redis_link::RedisLink;
use crate::synth::{Listen, LiveAudio, Source, SynthError, Synthesized, Tap};
use disk::DiskTier;
pub use entry::{CacheKey, CachedWav};
use memory::MemoryTier;
use parking_lot::Mutex;
use redis_tier::RedisTier;
use single_flight::SingleFlight;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A synthesis's answer, and whether the cache may keep it (fallback audio may not).
pub type Fresh = Result<(Synthesized, bool), SynthError>;

/// How often a waiting instance looks for another instance's result in Redis.
const LOCK_POLL: Duration = Duration::from_millis(50);
/// Most stores (and disk copies of Redis hits) running after their answers at once.
const STORES_IN_FLIGHT: usize = 32;

pub struct Cache {
    memory: MemoryTier,
    disk: Option<Arc<DiskTier>>,
    redis: Option<Arc<RedisTier>>,
    share: CacheShare,
    lock_hold: Duration,
    /// A flight's answer (with its source and `degraded`, so joiners are told the same), and
    /// whether it was synthesized by this flight.
    /// Each flight's live audio is handed to the streaming requests that start or join it.
    flights: SingleFlight<Result<(Synthesized, bool), SynthError>, Arc<LiveAudio>>,
    /// Entries answered whose store is still running (at most `STORES_IN_FLIGHT`).
    storing: Mutex<HashMap<CacheKey, CachedWav>>,
    /// One per store running after its answer.
    store_permits: Arc<tokio::sync::Semaphore>,
    /// The degradation ladder's local index (`approx`).
    approx: approx::ApproxIndex,
}

impl Cache {
    /// Opens every configured tier (the disk tier scans its directory).
    pub async fn open(conf: &CacheConf) -> Result<Self, String> {
        let ttl = conf.ttl.0;
        let disk = match &conf.disk {
            Some(d) => Some(Arc::new(
                DiskTier::open(d.path.clone(), d.max.0, ttl)
                    .await
                    .map_err(|e| format!("cache.disk.path {}: {e}", d.path.display()))?,
            )),
            None => None,
        };
        let redis = match &conf.redis {
            Some(r) => Some(Arc::new(RedisTier::new(
                RedisLink::new(r.url.expose(), r.timeout.0, "cache")?,
                ttl,
                r.max_value.0,
            ))),
            None => None,
        };
        let approx = approx::ApproxIndex::restored(disk.as_deref());
        Ok(Self {
            memory: MemoryTier::new(conf.memory.max.0, ttl),
            disk,
            redis,
            share: conf.share,
            lock_hold: conf
                .redis
                .as_ref()
                .map(|r| r.lock.0)
                .unwrap_or(Duration::from_secs(30)),
            flights: SingleFlight::default(),
            storing: Mutex::new(HashMap::new()),
            store_permits: Arc::new(tokio::sync::Semaphore::new(STORES_IN_FLIGHT)),
            approx,
        })
    }

    /// The key of `req` for this pool, within the caller's `scope` (see `Caller::cache_scope`)
    /// when `share: tenant`, and its description for the disk tier (the prompt hashed once).
    pub fn key(
        &self,
        scope: &str,
        pool: &str,
        model_version: &str,
        req: &GenerateRequest,
    ) -> (CacheKey, String) {
        let scope = match self.share {
            CacheShare::Global => None,
            CacheShare::Tenant => Some(scope),
        };
        key::key_and_prompt_sha256(scope, pool, model_version, req)
    }

    /// The memory tier's answer for `key`, counted as a hit; `None` (not counted: the full
    /// [`lookup`](Self::lookup) that follows counts the miss) when memory does not hold it.
    /// The request path asks this first, so a hot entry is answered without a production task.
    pub async fn memory_hit(&self, key: &CacheKey) -> Option<Synthesized> {
        let hit = self.memory.get(key).await?;
        count("memory", true);
        update_ratio(true);
        Some(from_tier(hit, "memory", *key))
    }

    /// Looks the key up tier by tier, promoting a lower-tier hit to the tiers above (a Redis
    /// hit's disk copy is written after the answer, when a store permit is free).
    pub async fn lookup(&self, key: &CacheKey) -> Option<(CachedWav, &'static str)> {
        if let Some(hit) = self.memory.get(key).await {
            count("memory", true);
            return Some((hit, "memory"));
        }
        count("memory", false);
        if let Some(disk) = &self.disk {
            let hit = disk.get(key).await;
            count("disk", hit.is_some());
            if let Some(hit) = hit {
                self.memory.put(key, &hit).await;
                return Some((hit, "disk"));
            }
        }
        if let Some(redis) = &self.redis {
            let hit = redis.get(key).await;
            count("redis", hit.is_some());
            if let Some(hit) = hit {
                self.memory.put(key, &hit).await;
                if let Some(disk) = &self.disk {
                    let from = serde_json::json!({"from": "redis"});
                    match self.store_permits.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let (disk, key, entry) = (disk.clone(), *key, hit.clone());
                            tokio::spawn(async move {
                                disk.put(&key, &entry, &from).await;
                                drop(permit);
                            });
                        }
                        Err(_) => disk.put(key, &hit, &from).await,
                    }
                }
                return Some((hit, "redis"));
            }
        }
        None
    }

    /// Answers from the cache, or runs `synthesize(live)` once for all identical requests in
    /// flight and stores its result (when cacheable). `params` describe the request for the
    /// disk tier. The answer's `source` is the tier of a hit, `InFlight` for a joined synthesis,
    /// or the synthesis's own; its `key` is `key`. A streaming request's `listen` is handed the
    /// flight's live audio (which ends with the flight's answer or error, whoever produced it);
    /// a hit drops it unsent.
    pub async fn get_or_synthesize<F>(
        self: &Arc<Self>,
        key: CacheKey,
        params: serde_json::Value,
        synthesize: impl FnOnce(Arc<LiveAudio>) -> F,
        listen: Option<Listen>,
    ) -> Result<Synthesized, SynthError>
    where
        F: Future<Output = Fresh> + Send + 'static,
    {
        if let Some((hit, tier)) = self.lookup(&key).await {
            update_ratio(true);
            return Ok(from_tier(hit, tier, key));
        }
        let this = self.clone();
        let work = move |live: Arc<LiveAudio>| {
            let synthesis = synthesize(live.clone());
            async move {
                let out = this.fill(key, params, synthesis).await;
                match &out {
                    Ok((answer, _)) => live.finish(&answer.wav, answer.degradation()),
                    Err(e) => live.fail(e.clone()),
                }
                out
            }
        };
        let joined = self.flights.join(key, LiveAudio::new, work);
        if let Some(listen) = listen {
            let _ = listen.send(Tap {
                live: joined.side.clone(),
                joined: !joined.led,
            });
        }
        let led = joined.led;
        let result = joined.flight.await;
        // A failed synthesis was a lookup too (a miss), so hits / lookups is the share answered
        // without a synthesis of their own.
        let hit = result.as_ref().is_ok_and(|(_, fresh)| !led || !fresh);
        update_ratio(hit);
        let (mut answer, fresh) = result?;
        if !(led && fresh) {
            answer.source = Source::InFlight;
        }
        Ok(answer)
    }

    /// The one synthesis for a key: coordinate with other instances through Redis, run it,
    /// store the result. Returns the answer and whether it was synthesized here (false: found
    /// in a tier after all, e.g. another instance's result).
    async fn fill<F>(
        self: &Arc<Self>,
        key: CacheKey,
        params: serde_json::Value,
        synthesize: F,
    ) -> Result<(Synthesized, bool), SynthError>
    where
        F: Future<Output = Fresh>,
    {
        // This request's lookup ran before it joined; an identical request's answer may have
        // landed since (still being stored, or stored in memory): looked at, not counted again.
        if let Some(hit) = self.peek(&key).await {
            return Ok((from_tier(hit, "memory", key), false));
        }
        // Held until the result is stored; released even when every caller goes away
        // mid-synthesis, so other instances do not wait out the whole lock time.
        let lock = match &self.redis {
            Some(redis) => match self.lock_or_wait(redis, &key).await {
                Ok(token) => Some(RedisLock {
                    redis: redis.clone(),
                    key,
                    token,
                }),
                Err(found) => return Ok((from_tier(found, "redis", key), false)),
            },
            None => None,
        };
        let (mut answer, cacheable) = synthesize.await?;
        // An approximate answer keeps the key of the entry that stood in (and is not stored).
        answer.key.get_or_insert(key);
        if cacheable {
            let entry = CachedWav {
                wav: answer.wav.clone(),
                created: answer.created,
                degraded: answer.degraded,
            };
            self.store_after(key, entry, params, lock).await;
        }
        Ok((answer, true))
    }

    /// An entry answered but possibly not yet in the tiers: from `storing`, or from memory.
    async fn peek(&self, key: &CacheKey) -> Option<CachedWav> {
        let storing = self.storing.lock().get(key).cloned();
        match storing {
            Some(entry) => Some(entry),
            None => self.memory.get(key).await,
        }
    }

    /// Stores `entry` in a task, keeping it in `storing` (and `held`, the Redis lock) until
    /// every tier has it; when `STORES_IN_FLIGHT` stores run already, stores it here instead.
    async fn store_after(
        self: &Arc<Self>,
        key: CacheKey,
        entry: CachedWav,
        params: serde_json::Value,
        held: Option<RedisLock>,
    ) {
        let Ok(permit) = self.store_permits.clone().try_acquire_owned() else {
            self.store(&key, &entry, &params).await;
            return;
        };
        self.storing.lock().insert(key, entry.clone());
        let this = self.clone();
        tokio::spawn(async move {
            this.store(&key, &entry, &params).await;
            this.storing.lock().remove(&key);
            drop((held, permit));
        });
    }

    /// Takes the cross-instance lock for `key` (Ok(token)), or waits for the holder's result
    /// (Err(entry)). A holder that dies is waited for at most the lock's hold time.
    async fn lock_or_wait(&self, redis: &RedisTier, key: &CacheKey) -> Result<String, CachedWav> {
        let deadline = Instant::now() + self.lock_hold;
        loop {
            if let Some(token) = redis.try_lock(key, self.lock_hold).await {
                return Ok(token);
            }
            while Instant::now() < deadline {
                tokio::time::sleep(LOCK_POLL).await;
                if let Some(found) = redis.get(key).await {
                    self.memory.put(key, &found).await;
                    return Err(found);
                }
                if !redis.is_locked(key).await {
                    break;
                }
            }
            if Instant::now() >= deadline {
                // The holder is stuck or gone: synthesize without the lock (an empty token
                // never matches, so unlocking later is a no-op).
                return Ok(String::new());
            }
        }
    }

    /// Stores an entry in every tier.
    pub async fn store(&self, key: &CacheKey, entry: &CachedWav, params: &serde_json::Value) {
        self.memory.put(key, entry).await;
        if let Some(disk) = &self.disk {
            disk.put(key, entry, params).await;
        }
        if let Some(redis) = &self.redis {
            redis.put(key, entry).await;
        }
        self.file_families(key, entry, params).await;
    }

    /// Removes one key from every tier; true if any tier had it.
    pub async fn purge(&self, key: &CacheKey) -> bool {
        let mut removed = self.memory.remove(key).await;
        if let Some(disk) = &self.disk {
            removed |= disk.remove(key).await;
        }
        if let Some(redis) = &self.redis {
            removed |= redis.remove(key).await;
        }
        removed
    }

    /// Empties every tier.
    /// Stores running behind their answers (the drain waits for them).
    pub fn stores_in_flight(&self) -> usize {
        self.storing.lock().len()
    }

    /// (tier, entries, WAV bytes) of the tiers whose size this instance can see: memory, and
    /// disk when configured (the Redis tier is shared and not counted here).
    pub async fn tier_sizes(&self) -> Vec<(&'static str, u64, u64)> {
        let (entries, bytes) = self.memory.size().await;
        let mut sizes = vec![("memory", entries, bytes)];
        if let Some(disk) = &self.disk {
            let (entries, bytes) = disk.size();
            sizes.push(("disk", entries, bytes));
        }
        sizes
    }

    pub async fn purge_all(&self) {
        self.approx.clear();
        self.memory.purge_all();
        if let Some(disk) = &self.disk {
            disk.purge_all().await;
        }
        if let Some(redis) = &self.redis {
            redis.purge_all().await;
        }
    }
}

/// The cross-instance synthesis lock for one key, released on drop (in the background).
struct RedisLock {
    redis: Arc<RedisTier>,
    key: CacheKey,
    token: String,
}

impl Drop for RedisLock {
    fn drop(&mut self) {
        let (redis, key, token) = (self.redis.clone(), self.key, std::mem::take(&mut self.token));
        if !token.is_empty() {
            tokio::spawn(async move { redis.unlock(&key, &token).await });
        }
    }
}

/// A tier's entry as an answer (fallback audio, stored only with `fallback.cache: true`, stays
/// marked degraded).
fn from_tier(hit: CachedWav, tier: &'static str, key: CacheKey) -> Synthesized {
    Synthesized {
        wav: hit.wav,
        source: Source::Tier(tier),
        degraded: hit.degraded,
        created: hit.created,
        key: Some(key),
        approximate: None,
    }
}

fn count(tier: &'static str, hit: bool) {
    metrics::CACHE_REQUESTS
        .with_label_values(&[tier, if hit { "hit" } else { "miss" }])
        .inc();
}

fn update_ratio(hit: bool) {
    metrics::record_lookup(hit);
}
