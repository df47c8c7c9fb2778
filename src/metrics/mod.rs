//! Every metric cosygate exports, defined once, in Prometheus's default registry (prometheus
//! 0.14, the version pingora-prometheus uses, so both would share one registry), and served as
//! text by the admin listener's `GET /metrics` ([`encode`]).
//!
//! - `edge.rs`: what clients see: requests, durations, statuses, refusals, bodies, audio served.
//! - `cache.rs`: lookups per tier, the sliding hit ratio, tier sizes, Redis errors.
//! - `backends.rs`: pools and backends: queue, waits, slots, health, breakers, errors, retries,
//!   restarts.
//! - `voices.rs`: registered voices held by this instance.
//!
//! Counters end in `_total` (except the contract's `cosygate_backend_error_count`), durations
//! carry their unit. No label takes a value a client chooses: pools, tenants and backends come
//! from the configuration, reasons and statuses from the gateway's own codes.

mod backends;
mod cache;
mod edge;
mod voices;

pub use backends::*;
pub use cache::*;
pub use edge::*;
pub use voices::*;

/// Histogram buckets for durations in milliseconds: 1 ms to 120 s, dense where TTS lives
/// (a cache hit in ~1 ms; a synthesis in 0.5 to 30 s; the 120 s longest answer).
pub const MILLISECOND_BUCKETS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_000.0, 3_000.0, 5_000.0, 7_500.0,
    10_000.0, 15_000.0, 20_000.0, 30_000.0, 60_000.0, 120_000.0,
];

/// Defines a metric registered in the default registry on first use. A definition error is a
/// programming error (a bad name, a duplicate) and panics at the first use, in every test.
macro_rules! metric {
    ($(#[$doc:meta])* $name:ident: $ty:ty = $make:expr) => {
        $(#[$doc])*
        pub static $name: std::sync::LazyLock<$ty> = std::sync::LazyLock::new(|| {
            let metric = $make.unwrap_or_else(|e| panic!("metric definition: {e}"));
            prometheus::register(Box::new(metric.clone()))
                .unwrap_or_else(|e| panic!("metric registration: {e}"));
            metric
        });
    };
}
pub(crate) use metric;

/// Options for a metric: name and help.
fn opts(name: &str, help: &str) -> prometheus::Opts {
    prometheus::Opts::new(name, help)
}

/// Options for a millisecond histogram.
fn ms_histogram(name: &str, help: &str) -> prometheus::HistogramOpts {
    prometheus::HistogramOpts::new(name, help).buckets(MILLISECOND_BUCKETS.to_vec())
}

/// Every metric of the default registry in Prometheus's text format (version 0.0.4).
pub fn encode() -> Vec<u8> {
    use prometheus::Encoder;
    let mut out = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(e) = encoder.encode(&prometheus::gather(), &mut out) {
        log::error!("metrics: cannot encode: {e}");
    }
    out
}

/// Creates every metric now, so a scrape shows each one (at zero) before it is first used:
/// dashboards and alert rules then see the series from the start.
pub fn register_all() {
    edge::touch();
    cache::touch();
    backends::touch();
    voices::touch();
}
