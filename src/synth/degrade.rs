//! The degradation ladder (`pools.NAME.degrade`): what a request gets when its pool could not
//! serve it ([`PoolFailure::Unserved`]) and its exact key missed. Each rung of `ladder` looks
//! for a cached entry close to it (`cache::approx`: the same voice with another seed or speed,
//! then the same text in another voice); then the fallback voice when `fallback` allows and one
//! is configured; otherwise the pool's own error. An approximate answer is never stored under
//! the request's key (the cache layer stores only answers it may keep), so the next request for
//! that key goes to a backend again once one can serve.

use super::{LiveAudio, Source, SynthError, Synthesized};
use crate::backend::{PoolFailure, PoolSet, Prepared, Synthesis};
use crate::cache::key::Families;
use crate::cache::{Cache, CacheKey};
use crate::metrics;
use log::warn;
use std::sync::Arc;
use std::time::SystemTime;

/// What the approximate rungs need: the cache, and where the request's own entry would be.
pub(super) struct Approximations {
    pub cache: Arc<Cache>,
    pub exact: CacheKey,
    pub families: Families,
}

/// The pool's answer, or the ladder's when the pool could not serve. Returns the answer and
/// whether the cache may keep it under the request's key.
pub(super) async fn answer(
    pools: &PoolSet,
    prepared: &Prepared,
    outcome: Result<Synthesis, PoolFailure>,
    approximations: Option<&Approximations>,
    request_id: &str,
    live: &LiveAudio,
) -> Result<(Synthesized, bool), SynthError> {
    let failure = match outcome {
        Ok(s) => return Ok(from_pool(s)),
        Err(PoolFailure::Final(e)) => return Err(e),
        Err(PoolFailure::Unserved(e)) => e,
    };
    let pool = &prepared.pool;
    let conf = &pool.conf.degrade;
    if let Some(a) = approximations {
        for &rung in &conf.ladder {
            let Some(found) = a.cache.approximate(rung, &a.families, &a.exact).await else {
                continue;
            };
            live.retake();
            metrics::DEGRADED
                .with_label_values(&[&pool.name, rung.as_str()])
                .inc();
            warn!(
                "request {request_id}: pool {} could not serve ({failure}); answered with the cached {} entry {}",
                pool.name,
                rung.as_str(),
                found.key
            );
            let answer = Synthesized {
                wav: found.entry.wav,
                source: Source::Tier(found.tier),
                degraded: false,
                created: found.entry.created,
                key: Some(found.key),
                approximate: Some(rung),
            };
            return Ok((answer, false));
        }
    }
    if conf.fallback {
        if let Some(spoken) = pools.fallback_voice(prepared, request_id, live).await {
            let s = spoken?;
            metrics::DEGRADED
                .with_label_values(&[&pool.name, "fallback"])
                .inc();
            return Ok(from_pool(s));
        }
    }
    Err(failure)
}

/// A backend's or the fallback voice's answer, and whether the cache may keep it.
fn from_pool(s: Synthesis) -> (Synthesized, bool) {
    let answer = Synthesized {
        wav: s.wav,
        source: s.backend.map_or(Source::Fallback, Source::Backend),
        degraded: s.degraded,
        created: SystemTime::now(),
        key: None,
        approximate: None,
    };
    (answer, s.cacheable)
}
