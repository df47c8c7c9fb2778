//! What the cache stores and returns: the key (a sha256) and a complete, checked WAV with the
//! time it was synthesized.

use bytes::Bytes;
use std::time::SystemTime;

/// A cache key: sha256 over the canonical form of everything that changes the audio
/// (see `key.rs`). Shown as 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits (the admin purge API).
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out).ok()?;
        Some(Self(out))
    }
}

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

/// A cached answer: a complete WAV (validated before it was stored) and when it was made.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedWav {
    pub wav: Bytes,
    pub created: SystemTime,
    /// From the fallback voice (stored only with `fallback.cache: true`): a hit is marked
    /// `X-Degraded` like the first answer.
    pub degraded: bool,
}

impl CachedWav {
    /// Seconds since the audio was synthesized (the `Age` header).
    pub fn age_secs(&self) -> u64 {
        SystemTime::now()
            .duration_since(self.created)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}
