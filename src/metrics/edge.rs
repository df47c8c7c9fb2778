//! What clients see: requests by route, status and cache result, their durations, refusals,
//! request bodies held, and seconds of audio served by source.

use super::{metric, ms_histogram, opts};
use prometheus::{CounterVec, HistogramVec, IntCounter, IntCounterVec, IntGauge};

metric! {
    /// Every request's duration from its headers to its last byte.
    REQUEST_DURATION: HistogramVec = HistogramVec::new(
        ms_histogram(
            "cosygate_request_duration_milliseconds",
            "Request duration from headers in to answer out, by route, status and cache result",
        ),
        &["route", "status", "cache"],
    )
}

metric! {
    /// Requests answered, by pool (`-` before one was chosen), tenant and status class.
    REQUESTS: IntCounterVec = IntCounterVec::new(
        opts(
            "cosygate_requests_total",
            "Requests answered, by pool, tenant (from the config; anonymous) and status class",
        ),
        &["pool", "tenant", "status_class"],
    )
}

metric! {
    /// Requests being handled now.
    CONCURRENT_REQUESTS: IntGauge = IntGauge::with_opts(opts(
        "cosygate_concurrent_requests",
        "Requests being handled now (headers read, answer not yet finished)",
    ))
}

metric! {
    /// Requests refused with 429.
    RATE_LIMITED: IntCounter = IntCounter::with_opts(opts(
        "cosygate_rate_limited_total",
        "Requests refused by a rate limit (429)",
    ))
}

metric! {
    /// Requests refused by the gateway, by error code.
    REJECTED: IntCounterVec = IntCounterVec::new(
        opts(
            "cosygate_rejected_total",
            "Requests refused by the gateway (4xx and its own 5xx), by error code",
        ),
        &["reason"],
    )
}

metric! {
    /// Request bodies holding a share of `limits.max_bodies_in_flight` now.
    BODIES_IN_FLIGHT: IntGauge = IntGauge::with_opts(opts(
        "cosygate_bodies_in_flight",
        "Request bodies held now (being read, validated, queued or sent)",
    ))
}

metric! {
    /// Bytes of request bodies held now.
    BODY_BYTES_IN_FLIGHT: IntGauge = IntGauge::with_opts(opts(
        "cosygate_body_bytes_in_flight",
        "Bytes of request bodies held now, at most limits.max_bodies_in_flight",
    ))
}

metric! {
    /// Seconds of audio answered, by pool and source (`backend`, `cache`, `fallback`).
    AUDIO_SECONDS: CounterVec = CounterVec::new(
        opts(
            "cosygate_audio_seconds_total",
            "Seconds of audio answered by pool and source (backend, cache, fallback); cache is GPU time saved",
        ),
        &["pool", "source"],
    )
}

metric! {
    /// Streamed answers: time from the request's headers to its first audio.
    STREAM_FIRST_AUDIO: HistogramVec = HistogramVec::new(
        ms_histogram(
            "cosygate_stream_first_audio_milliseconds",
            "Streamed answers: time from the request headers to the first audio sent, by route and cache result",
        ),
        &["route", "cache"],
    )
}

metric! {
    /// Streamed answers by how they ended.
    STREAMS: IntCounterVec = IntCounterVec::new(
        opts(
            "cosygate_streams_total",
            "Streamed answers by how they ended: whole, cut (ended unterminated after audio), gone (client left)",
        ),
        &["outcome"],
    )
}

pub(super) fn touch() {
    CONCURRENT_REQUESTS.get();
    RATE_LIMITED.get();
    BODIES_IN_FLIGHT.get();
    BODY_BYTES_IN_FLIGHT.get();
    let _ = (
        &*REQUEST_DURATION,
        &*REQUESTS,
        &*REJECTED,
        &*AUDIO_SECONDS,
        &*STREAM_FIRST_AUDIO,
    );
    for outcome in ["whole", "cut", "gone"] {
        STREAMS.with_label_values(&[outcome]);
    }
}

/// The status class label of `status`: `2xx`, `4xx`, `5xx`...
pub fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}
