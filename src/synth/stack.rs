//! The [`Synthesizer`]: one validated request in, a [`Synthesized`] answer or a [`SynthError`]
//! out, through layers that each own one concern (in the manner of linkerd2-proxy's stacks):
//!
//! ```text
//! Synthesizer::synthesize(SynthRequest, Report)
//!   └─ cache (cache/): key → memory → disk → redis; single flight; or its bypass (no-store)
//!        └─ backends (backend/synthesize.rs): GPU slot, attempts, retries, deadline
//!             └─ when the pool cannot serve: the degradation ladder (degrade.rs): approximate
//!                cached answers, the fallback voice, the error
//! ```
//!
//! The job layer (`jobs::track`) wraps it from outside, recording the result for pollers.

use super::degrade::{self, Approximations};
use super::{Listen, LiveAudio, Report, SynthError, Synthesized, Tap};
use crate::api::GenerateRequest;
use crate::backend::{PoolSet, Prepared};
use crate::cache::{Cache, CacheKey};
use std::sync::Arc;

/// A request's cache key and the hex sha256 of its prompt audio (see `cache::key`).
pub type PrecomputedKey = (CacheKey, String);

/// One validated request with its caller and pool, owned so it can run in its own task.
pub struct SynthRequest {
    pub req: GenerateRequest,
    /// The pool and its backend request (see `PoolSet::prepare`).
    pub prepared: Prepared,
    /// The cache key and its prompt's hex sha256, when computed already (off the worker threads).
    pub cache_key: Option<PrecomputedKey>,
    /// Whose entries this request may see when the cache is shared per tenant.
    pub cache_scope: String,
    /// `Cache-Control: no-store`: neither looked up nor stored.
    pub no_store: bool,
    /// The fairness key in the queue: token name, or client IP.
    pub client: String,
    pub request_id: String,
    /// A streaming request: told which live audio to read (see [`Listen`]).
    pub listen: Option<Listen>,
}

/// The layers, assembled once at start.
#[derive(Clone)]
pub struct Synthesizer {
    cache: Option<Arc<Cache>>,
    pools: Arc<PoolSet>,
}

impl Synthesizer {
    /// Assembles the layers once, when the gateway service is built; does no I/O.
    pub fn new(cache: Option<Arc<Cache>>, pools: Arc<PoolSet>) -> Self {
        Self { cache, pools }
    }

    /// Answers `r` from the cache or the pool's backends (or the fallback voice). Runs in the
    /// request's production task (which may outlive the HTTP exchange as a 202 job); may block
    /// on the cache tiers, the queue, the backends and the fallback process.
    pub async fn synthesize(
        &self,
        r: SynthRequest,
        progress: Arc<dyn Report>,
    ) -> Result<Synthesized, SynthError> {
        let SynthRequest {
            req,
            prepared,
            cache_key,
            cache_scope,
            no_store,
            client,
            request_id,
            listen,
        } = r;
        let pools = self.pools.clone();
        let Some(cache) = self.cache.clone().filter(|_| !no_store) else {
            let live = LiveAudio::new();
            if let Some(listen) = listen {
                let _ = listen.send(Tap {
                    live: live.clone(),
                    joined: false,
                });
            }
            let result = backends(pools, prepared, client, request_id, progress, live.clone(), None).await;
            match &result {
                Ok((s, _)) => live.finish(&s.wav, s.degradation()),
                Err(e) => live.fail(e.clone()),
            }
            return result.map(|(s, _)| s);
        };
        let pool = &prepared.pool;
        let (key, prompt_sha256) =
            cache_key.unwrap_or_else(|| cache.key(&cache_scope, &pool.name, &pool.conf.model_version, &req));
        let model_version = &pool.conf.model_version;
        let families = cache.families(&cache_scope, &pool.name, model_version, &req, &prompt_sha256);
        let params = crate::cache::key::describe(&pool.name, &req, &prompt_sha256, families);
        drop(req);
        let approximations = Approximations {
            cache: cache.clone(),
            exact: key,
            families,
        };
        let fill = move |live| {
            backends(
                pools,
                prepared,
                client,
                request_id,
                progress,
                live,
                Some(approximations),
            )
        };
        cache.get_or_synthesize(key, params, fill, listen).await
    }
}

/// The innermost layer: the pool's queue, attempts, retries and deadline, pushing audio to
/// `live` as a backend streams it; when the pool cannot serve, the degradation ladder
/// (`degrade.rs`). Returns the answer and whether the cache may keep it (fallback audio only
/// with `fallback.cache`; an approximate answer never).
async fn backends(
    pools: Arc<PoolSet>,
    prepared: Prepared,
    client: String,
    request_id: String,
    progress: Arc<dyn Report>,
    live: Arc<LiveAudio>,
    approximations: Option<Approximations>,
) -> Result<(Synthesized, bool), SynthError> {
    let outcome = pools
        .synthesize(&prepared, &client, &request_id, &*progress, &live)
        .await;
    degrade::answer(
        &pools,
        &prepared,
        outcome,
        approximations.as_ref(),
        &request_id,
        &live,
    )
    .await
}
