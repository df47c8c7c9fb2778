//! Why admission turned a caller away: no or a bad token, a pool the token may not use, or an
//! empty token bucket. The gateway's edge turns these into 401, 403 and 429.

/// A refusal made from the request headers alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// No usable token (`missing_token`, `invalid_token`); the answer asks for Bearer auth.
    #[error("{code}: {message}")]
    Unauthenticated {
        code: &'static str,
        message: &'static str,
    },
    /// The token is valid but not for this pool.
    #[error("token {token} may not use pool {pool}")]
    ForbiddenPool { token: String, pool: String },
    /// The caller's bucket is empty: `capacity` requests per `window_secs`, the next one
    /// possible in `retry_after_secs` (at least 1).
    #[error("rate limited: {capacity} per {window_secs} s, next in {retry_after_secs} s")]
    RateLimited {
        capacity: u32,
        window_secs: u64,
        retry_after_secs: u64,
        /// The draft `RateLimit-Policy` and `RateLimit` headers of the empty bucket.
        budget: super::RateLimitHeaders,
    },
}
