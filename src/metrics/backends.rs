//! Pools and backends: queue depth and wait, backend syntheses, slots in use, health, breakers,
//! failed attempts, retries and restarts. The gauges of live state (queue depth, health,
//! in-flight, breakers) are set from the scheduler when `/metrics` is scraped
//! (`admin::refresh_gauges`), so they are never stale and cost nothing between scrapes.

use super::{metric, ms_histogram, opts};
use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec};

metric! {
    /// Requests waiting for a GPU slot, per pool.
    QUEUE_DEPTH: IntGaugeVec = IntGaugeVec::new(
        opts("cosygate_queue_depth", "Requests waiting for a GPU slot, per pool"),
        &["pool"],
    )
}

metric! {
    /// The pool's `queue.max_len`.
    QUEUE_CAPACITY: IntGaugeVec = IntGaugeVec::new(
        opts("cosygate_queue_capacity", "Longest queue a pool accepts (queue.max_len)"),
        &["pool"],
    )
}

metric! {
    /// Time from joining the queue to holding a slot, per attempt.
    QUEUE_WAIT: HistogramVec = HistogramVec::new(
        ms_histogram(
            "cosygate_queue_wait_milliseconds",
            "Time an attempt waited for a GPU slot, per pool (0 when one was free)",
        ),
        &["pool"],
    )
}

metric! {
    /// Duration of successful backend attempts, per pool: the pool's "normal" latency.
    BACKEND_DURATION: HistogramVec = HistogramVec::new(
        ms_histogram(
            "cosygate_backend_duration_milliseconds",
            "Duration of successful backend syntheses (request sent to audio checked), per pool",
        ),
        &["pool"],
    )
}

metric! {
    /// 1 when the backend passes its health check.
    BACKEND_HEALTHY: IntGaugeVec = IntGaugeVec::new(
        opts("cosygate_backend_healthy", "1 when the backend passes its health check, else 0"),
        &["backend"],
    )
}

metric! {
    /// GPU slots in use per backend.
    BACKEND_INFLIGHT: IntGaugeVec = IntGaugeVec::new(
        opts("cosygate_backend_inflight", "Requests a backend is synthesizing now (slots in use)"),
        &["backend"],
    )
}

metric! {
    /// GPU slots per backend (`max_concurrency`).
    BACKEND_SLOTS: IntGaugeVec = IntGaugeVec::new(
        opts("cosygate_backend_slots", "GPU slots of a backend (max_concurrency)"),
        &["backend"],
    )
}

metric! {
    /// Healthy backends per pool.
    POOL_BACKENDS_HEALTHY: IntGaugeVec = IntGaugeVec::new(
        opts("cosygate_pool_backends_healthy", "Backends of a pool passing their health check"),
        &["pool"],
    )
}

metric! {
    /// 1 while the backend's circuit breaker is open.
    CIRCUIT_OPEN: IntGaugeVec = IntGaugeVec::new(
        opts("cosygate_circuit_open", "1 while the backend's circuit breaker is open, else 0"),
        &["backend"],
    )
}

metric! {
    /// The breaker's state: 0 closed, 1 half open, 2 open.
    CIRCUIT_STATE: IntGaugeVec = IntGaugeVec::new(
        opts("cosygate_circuit_state", "Circuit breaker state per backend: 0 closed, 1 half_open, 2 open"),
        &["backend"],
    )
}

metric! {
    /// Failed backend attempts, by backend and kind (connect, timeout, status_5xx, truncated...).
    BACKEND_ERRORS: IntCounterVec = IntCounterVec::new(
        opts("cosygate_backend_error_count", "Failed backend attempts by backend and kind"),
        &["backend", "kind"],
    )
}

metric! {
    /// Restarts run by the supervisor, by backend and outcome (`ok`, `command_failed`,
    /// `timeout`, `unhealthy`).
    BACKEND_RESTARTS: IntCounterVec = IntCounterVec::new(
        opts(
            "cosygate_backend_restarts_total",
            "Backend restarts run by the supervisor, by backend and outcome",
        ),
        &["backend", "outcome"],
    )
}

metric! {
    /// The supervisor's view of each backend: 0 ok, 1 restarting, 2 warming up, 3 failed.
    BACKEND_SUPERVISOR_STATE: IntGaugeVec = IntGaugeVec::new(
        opts(
            "cosygate_backend_supervisor_state",
            "Supervisor state per backend: 0 ok, 1 restarting, 2 warming up, 3 failed (restarts given up)",
        ),
        &["backend"],
    )
}

metric! {
    /// Retries sent to another backend, by pool.
    RETRIES: IntCounterVec = IntCounterVec::new(
        opts("cosygate_retries_total", "Backend attempts that were retries of a failed attempt, by pool"),
        &["pool"],
    )
}

metric! {
    /// Answers given by the degradation ladder when the pool could not serve, by pool and rung
    /// (`same_voice`, `same_text`: approximate cached answers; `fallback`: the fallback voice).
    DEGRADED: IntCounterVec = IntCounterVec::new(
        opts(
            "cosygate_degraded_total",
            "Answers the pool could not serve that the degradation ladder gave, by pool and rung (same_voice, same_text, fallback)",
        ),
        &["pool", "rung"],
    )
}

metric! {
    /// Retries not sent because the pool's retry budget was spent, by pool.
    RETRY_BUDGET_EXHAUSTED: IntCounterVec = IntCounterVec::new(
        opts(
            "cosygate_retry_budget_exhausted_total",
            "Retries refused because the pool's retry budget (retry.budget_ratio, budget_min) was spent",
        ),
        &["pool"],
    )
}

metric! {
    /// Requests that failed the same way on two backends (no backend blamed), by pool.
    REQUEST_FAULTS: IntCounterVec = IntCounterVec::new(
        opts(
            "cosygate_request_caused_failures_total",
            "Requests that failed the same way on two different backends: counted against no backend",
        ),
        &["pool"],
    )
}

metric! {
    /// Deep health probes (`health.synthesize_every`) by backend and result (`ok`, `failed`).
    DEEP_PROBES: IntCounterVec = IntCounterVec::new(
        opts(
            "cosygate_deep_probes_total",
            "Deep health probes (a tiny synthesis, its audio checked) by backend and result",
        ),
        &["backend", "result"],
    )
}

metric! {
    /// 1 while the backend fails its deep probe (it gets no traffic).
    BACKEND_CANNOT_SYNTHESIZE: IntGaugeVec = IntGaugeVec::new(
        opts(
            "cosygate_backend_cannot_synthesize",
            "1 while the backend passes its liveness check but failed its last deep probe",
        ),
        &["backend"],
    )
}

pub(super) fn touch() {
    let _ = (&*QUEUE_DEPTH, &*QUEUE_CAPACITY, &*QUEUE_WAIT, &*BACKEND_DURATION);
    let _ = (
        &*BACKEND_HEALTHY,
        &*BACKEND_INFLIGHT,
        &*BACKEND_SLOTS,
        &*POOL_BACKENDS_HEALTHY,
    );
    let _ = (
        &*CIRCUIT_OPEN,
        &*CIRCUIT_STATE,
        &*BACKEND_ERRORS,
        &*DEGRADED,
        &*BACKEND_RESTARTS,
    );
    let _ = (
        &*BACKEND_SUPERVISOR_STATE,
        &*RETRIES,
        &*RETRY_BUDGET_EXHAUSTED,
        &*REQUEST_FAULTS,
    );
}
