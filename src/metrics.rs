//! Every metric cosygate exports, defined once, in Prometheus's default registry (the one
//! pingora-prometheus serves; prometheus 0.14 as it uses).

use prometheus::{register_int_counter, register_int_counter_vec, IntCounter, IntCounterVec};
use std::sync::LazyLock;

/// Requests refused with 429.
pub static RATE_LIMITED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "cosygate_rate_limited_total",
        "Requests refused by a rate limit (429)"
    )
    .unwrap_or_else(|e| panic!("metric definition: {e}"))
});

/// Requests refused before reaching a backend, by error code.
pub static REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "cosygate_rejected_total",
        "Requests refused by the gateway (4xx), by error code",
        &["reason"]
    )
    .unwrap_or_else(|e| panic!("metric definition: {e}"))
});

/// Redis round trips that failed or timed out, by what they were for.
pub static REDIS_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "cosygate_redis_errors_total",
        "Redis calls that failed or timed out; the gateway went on without Redis",
        &["use"]
    )
    .unwrap_or_else(|e| panic!("metric definition: {e}"))
});

/// Cache lookups per tier and result (`hit`, `miss`).
pub static CACHE_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "cosygate_cache_requests_total",
        "Cache lookups by tier (memory, disk, redis) and result (hit, miss)",
        &["tier", "result"]
    )
    .unwrap_or_else(|e| panic!("metric definition: {e}"))
});

/// Requests answered from the cache (any tier, or a synthesis already in flight).
pub static CACHE_HITS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "cosygate_cache_hits_total",
        "Requests answered without a synthesis of their own"
    )
    .unwrap_or_else(|e| panic!("metric definition: {e}"))
});

/// Requests that consulted the cache.
pub static CACHE_LOOKUPS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "cosygate_cache_lookups_total",
        "Requests that consulted the cache"
    )
    .unwrap_or_else(|e| panic!("metric definition: {e}"))
});

/// Hits over lookups since start.
pub static CACHE_HIT_RATIO: LazyLock<prometheus::Gauge> = LazyLock::new(|| {
    prometheus::register_gauge!(
        "cosygate_cache_hit_ratio",
        "Share of cache lookups answered without a synthesis"
    )
    .unwrap_or_else(|e| panic!("metric definition: {e}"))
});

/// Failed backend attempts, by backend and kind (connect, timeout, status_5xx, truncated, ...).
pub static BACKEND_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "cosygate_backend_error_count",
        "Failed backend attempts by backend and kind",
        &["backend", "kind"]
    )
    .unwrap_or_else(|e| panic!("metric definition: {e}"))
});

/// Backend restarts run by the supervisor, by backend and outcome (`ok`, `command_failed`,
/// `timeout`, `unhealthy`).
pub static BACKEND_RESTARTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "cosygate_backend_restarts_total",
        "Backend restarts run by the supervisor, by backend and outcome",
        &["backend", "outcome"]
    )
    .unwrap_or_else(|e| panic!("metric definition: {e}"))
});

/// The supervisor's view of each backend: 0 ok, 1 restarting, 2 warming up, 3 failed (given up).
pub static BACKEND_SUPERVISOR_STATE: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    prometheus::register_int_gauge_vec!(
        "cosygate_backend_supervisor_state",
        "Supervisor state per backend: 0 ok, 1 restarting, 2 warming up, 3 failed (restarts given up)",
        &["backend"]
    )
    .unwrap_or_else(|e| panic!("metric definition: {e}"))
});

/// Retries sent to another backend, by pool.
pub static RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "cosygate_retries_total",
        "Backend attempts that were retries of a failed attempt, by pool",
        &["pool"]
    )
    .unwrap_or_else(|e| panic!("metric definition: {e}"))
});

/// Retries not sent because the pool's retry budget was spent, by pool.
pub static RETRY_BUDGET_EXHAUSTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "cosygate_retry_budget_exhausted_total",
        "Retries refused because the pool's retry budget (retry.budget_ratio, budget_min) was spent",
        &["pool"]
    )
    .unwrap_or_else(|e| panic!("metric definition: {e}"))
});

/// Requests that failed the same way on two backends (the request's fault; no backend was
/// blamed), by pool.
pub static REQUEST_FAULTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "cosygate_request_caused_failures_total",
        "Requests that failed the same way on two different backends: counted against no backend",
        &["pool"]
    )
    .unwrap_or_else(|e| panic!("metric definition: {e}"))
});
