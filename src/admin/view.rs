//! What the admin plane shows, read from the live state: each backend as operators see it
//! (`/admin/backends`), the whole gateway at a glance (`/admin/status`, the status page's data),
//! and the gauges of live state set just before `/metrics` is encoded.

use crate::backend::PoolSet;
use crate::cache::Cache;
use crate::metrics;
use crate::schedule::Circuit;
use crate::supervisor::{Supervisor, SupervisorState};
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The live state the admin plane reads. Cheap to share; reading takes each scheduler's lock
/// briefly, never a backend round trip.
pub struct StateView {
    pub pools: Arc<PoolSet>,
    pub cache: Option<Arc<Cache>>,
    pub supervisor: Option<Supervisor>,
    pub started: Instant,
}

/// One backend, as `/admin/backends` lists it (the contract's fields, then the supervisor's).
#[derive(Debug, Serialize)]
pub struct BackendRow {
    pub addr: SocketAddr,
    pub pool: String,
    pub healthy: bool,
    pub circuit: Circuit,
    pub inflight: usize,
    pub max_concurrency: usize,
    pub restarts: u64,
    /// `ok`, `restarting`, `warming`, `failed`; `unsupervised` without a `restart:` section.
    pub supervisor: &'static str,
    /// False while it fails its deep probe (`health.synthesize_every`); true otherwise.
    pub synthesizes: bool,
}

/// One pool's queue, for the status page.
#[derive(Debug, Serialize)]
pub struct PoolRow {
    pub name: String,
    pub queue_depth: usize,
    pub queue_capacity: usize,
    /// The wait a request joining now can expect, in milliseconds.
    pub expected_wait_ms: u128,
    /// Mean wait for a slot since start, in milliseconds (0 before the first).
    pub mean_wait_ms: f64,
    pub backends_healthy: usize,
    pub backends_total: usize,
}

/// One cache tier's size.
#[derive(Debug, Serialize)]
pub struct TierRow {
    pub tier: &'static str,
    pub entries: u64,
    pub bytes: u64,
}

impl StateView {
    pub fn backends(&self) -> Vec<BackendRow> {
        let supervised: HashMap<(String, SocketAddr), (u64, SupervisorState)> = self
            .supervisor
            .iter()
            .flat_map(|s| s.states())
            .map(|s| ((s.pool, s.addr), (s.restarts, s.state)))
            .collect();
        let mut rows = Vec::new();
        for pool in self.pools.pools() {
            for b in pool.scheduler.backends() {
                let watched = supervised.get(&(pool.name.clone(), b.addr));
                rows.push(BackendRow {
                    addr: b.addr,
                    pool: pool.name.clone(),
                    healthy: b.healthy,
                    circuit: b.circuit,
                    inflight: b.inflight,
                    max_concurrency: b.max_concurrency,
                    restarts: watched.map_or(0, |w| w.0),
                    supervisor: watched.map_or("unsupervised", |w| w.1.as_str()),
                    synthesizes: !pool.deep.failing(b.addr),
                });
            }
        }
        rows
    }

    pub fn pools(&self) -> Vec<PoolRow> {
        self.pools
            .pools()
            .map(|pool| {
                let depth = pool.scheduler.queue_len();
                let backends = pool.scheduler.backends();
                let wait = metrics::QUEUE_WAIT.with_label_values(&[&pool.name]);
                let count = wait.get_sample_count();
                PoolRow {
                    name: pool.name.clone(),
                    queue_depth: depth,
                    queue_capacity: pool.conf.queue.max_len,
                    expected_wait_ms: pool.scheduler.eta(depth).as_millis(),
                    mean_wait_ms: if count == 0 {
                        0.0
                    } else {
                        wait.get_sample_sum() / count as f64
                    },
                    backends_healthy: backends.iter().filter(|b| b.healthy).count(),
                    backends_total: backends.len(),
                }
            })
            .collect()
    }

    pub async fn tiers(&self) -> Vec<TierRow> {
        let Some(cache) = &self.cache else {
            return Vec::new();
        };
        cache
            .tier_sizes()
            .await
            .into_iter()
            .map(|(tier, entries, bytes)| TierRow { tier, entries, bytes })
            .collect()
    }

    /// Everything the status page shows, in one document.
    pub async fn status(&self) -> serde_json::Value {
        metrics::refresh_hit_ratio();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "concurrent_requests": metrics::CONCURRENT_REQUESTS.get(),
            "pools": self.pools(),
            "backends": self.backends(),
            "cache": {
                "enabled": self.cache.is_some(),
                "hit_ratio": metrics::CACHE_HIT_RATIO.get(),
                "hits": metrics::CACHE_HITS.get(),
                "lookups": metrics::CACHE_LOOKUPS.get(),
                "tiers": self.tiers().await,
            },
            "rate_limited": metrics::RATE_LIMITED.get(),
            "fallback": self.pools.has_fallback(),
        })
    }

    /// Sets the gauges of live state (queues, backends, breakers, cache sizes, the hit ratio's
    /// window) from the schedulers and the cache; runs before each `/metrics` encoding.
    pub async fn refresh_gauges(&self) {
        for pool in self.pools.pools() {
            let name = pool.name.as_str();
            metrics::QUEUE_DEPTH
                .with_label_values(&[name])
                .set(pool.scheduler.queue_len() as i64);
            metrics::QUEUE_CAPACITY
                .with_label_values(&[name])
                .set(pool.conf.queue.max_len as i64);
            let mut healthy = 0;
            for b in pool.scheduler.backends() {
                let addr = b.addr.to_string();
                let label = [addr.as_str()];
                healthy += i64::from(b.healthy);
                metrics::BACKEND_HEALTHY
                    .with_label_values(&label)
                    .set(i64::from(b.healthy));
                metrics::BACKEND_INFLIGHT
                    .with_label_values(&label)
                    .set(b.inflight as i64);
                metrics::BACKEND_SLOTS
                    .with_label_values(&label)
                    .set(b.max_concurrency as i64);
                metrics::CIRCUIT_OPEN
                    .with_label_values(&label)
                    .set(i64::from(b.circuit == Circuit::Open));
                let state = match b.circuit {
                    Circuit::Closed => 0,
                    Circuit::HalfOpen => 1,
                    Circuit::Open => 2,
                };
                metrics::CIRCUIT_STATE.with_label_values(&label).set(state);
                metrics::BACKEND_CANNOT_SYNTHESIZE
                    .with_label_values(&label)
                    .set(i64::from(pool.deep.failing(b.addr)));
            }
            metrics::POOL_BACKENDS_HEALTHY
                .with_label_values(&[name])
                .set(healthy);
        }
        for t in self.tiers().await {
            metrics::CACHE_ENTRIES
                .with_label_values(&[t.tier])
                .set(t.entries as i64);
            metrics::CACHE_BYTES
                .with_label_values(&[t.tier])
                .set(t.bytes as i64);
        }
        metrics::refresh_hit_ratio();
    }
}
