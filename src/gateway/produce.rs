//! Producing the answer for a validated request, below the front door and without a Session:
//! the cache (or its bypass), then the pool's scheduler and backends. Runs as its own task so a
//! request can become a 202 job and finish after its HTTP exchange ended; its `Progress` tells
//! pollers where it is.

use crate::api::GenerateRequest;
use crate::backend::{BackendPool, PoolSet, UpstreamRequest};
use crate::cache::{self, Cache, CacheKey, Outcome};
use crate::jobs::{Answer, Phase, Progress};
use crate::synth::SynthError;
use std::sync::{Arc, Mutex};

/// A request's cache key and the parameters it stands for (for the disk tier's index).
pub type PrecomputedKey = (CacheKey, serde_json::Value);

/// Everything one synthesis needs, owned, so it can run in its own task.
pub struct Work {
    pub cache: Option<Arc<Cache>>,
    pub no_store: bool,
    pub pools: Arc<PoolSet>,
    pub pool: Arc<BackendPool>,
    pub upstream: UpstreamRequest,
    pub req: GenerateRequest,
    /// The cache key and its description, when computed already (off the worker threads).
    pub cache_key: Option<PrecomputedKey>,
    /// Whose entries this request may see when the cache is shared per tenant.
    pub cache_scope: String,
    /// The fairness key in the queue: token name, or client IP.
    pub client: String,
    pub request_id: String,
    pub progress: Progress,
}

/// Runs the work and records its result in its progress cell.
pub async fn produce(work: Work) -> Result<Answer, SynthError> {
    let progress = work.progress.clone();
    let result = run(work).await;
    *progress.lock().unwrap_or_else(|p| p.into_inner()) = Phase::Done(result.clone().map_err(Into::into));
    result
}

async fn run(w: Work) -> Result<Answer, SynthError> {
    let mut headers = Vec::new();
    let Work {
        cache,
        no_store,
        pools,
        pool,
        upstream,
        req,
        cache_key,
        cache_scope,
        client,
        request_id,
        progress,
    } = w;
    let cache = cache.filter(|_| !no_store);
    let Some(cache) = cache else {
        let s = pools
            .synthesize(&pool, &upstream, &req.text, &client, &request_id, &progress)
            .await?;
        headers.push(("X-Cache", "BYPASS".to_string()));
        if s.degraded {
            headers.push(("X-Degraded", "fallback".to_string()));
        }
        return Ok(Answer { wav: s.wav, headers });
    };
    let (key, params) = cache_key.unwrap_or_else(|| {
        let key = cache.key(&cache_scope, &pool.name, &pool.conf.model_version, &req);
        (key, cache::key::describe(&pool.name, &req))
    });
    let degraded = Arc::new(Mutex::new(false));
    let flag = degraded.clone();
    let synthesize = async move {
        let s = pools
            .synthesize(&pool, &upstream, &req.text, &client, &request_id, &progress)
            .await?;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = s.degraded;
        Ok((s.wav, s.cacheable))
    };
    let (entry, outcome) = cache.get_or_synthesize(key, params, synthesize).await?;
    match outcome {
        Outcome::Hit(tier) => {
            headers.push(("X-Cache", "HIT".to_string()));
            headers.push(("X-Cache-Tier", tier.to_string()));
            headers.push(("Age", entry.age_secs().to_string()));
        }
        Outcome::Miss => headers.push(("X-Cache", "MISS".to_string())),
    }
    if *degraded.lock().unwrap_or_else(|p| p.into_inner()) {
        headers.push(("X-Degraded", "fallback".to_string()));
    }
    headers.push(("X-Cache-Key", key.hex()));
    Ok(Answer {
        wav: entry.wav,
        headers,
    })
}
