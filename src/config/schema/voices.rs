//! `voices`: registered voice prompts (`/v1/voices`, `voice_id` on `/generate`). The section
//! left out turns the feature off.

use super::CacheConf;
use crate::config::units::ByteSize;
use serde::Deserialize;
use std::path::PathBuf;

/// `voices:` where registered voices are kept and how many each scope (tenant) may hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoicesConf {
    /// The directory of voice files; default `<cache.disk.path>/voices` when the disk cache is
    /// on, otherwise required.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Whether callers without a token may register, list, delete and use voices (they share
    /// one scope).
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Most voices one scope (tenant, token without a tenant, or all anonymous callers) may hold.
    #[serde(default = "default_max_per_tenant")]
    pub max_per_tenant: usize,
    /// Most WAV bytes one scope may hold.
    #[serde(default = "default_max_bytes_per_tenant")]
    pub max_bytes_per_tenant: ByteSize,
    /// Bytes of samples kept in memory (LRU); the rest are read from disk or Redis on use.
    #[serde(default = "default_voices_memory")]
    pub memory: ByteSize,
}

fn default_max_per_tenant() -> usize {
    100
}

fn default_max_bytes_per_tenant() -> ByteSize {
    ByteSize(100 << 20)
}

fn default_voices_memory() -> ByteSize {
    ByteSize(64 << 20)
}

impl VoicesConf {
    /// The directory voices live in: `path`, or `<cache.disk.path>/voices`; None when neither
    /// is configured (a configuration error).
    pub fn dir(&self, cache: Option<&CacheConf>) -> Option<PathBuf> {
        self.path
            .clone()
            .or_else(|| cache.and_then(|c| c.disk.as_ref()).map(|d| d.path.join("voices")))
    }
}
