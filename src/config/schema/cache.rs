//! `cache`: the memory, disk and Redis tiers of the WAV cache.

use super::admission::default_redis_timeout;
use super::RedisUrl;
use crate::config::units::{ByteSize, ConfDuration};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `cache:` memory, disk and Redis tiers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConf {
    /// How long an entry is served after it was synthesized.
    #[serde(default = "default_cache_ttl")]
    pub ttl: ConfDuration,
    #[serde(default)]
    pub share: CacheShare,
    /// The hot tier; on (512MiB) unless the cache section is absent.
    #[serde(default)]
    pub memory: MemoryConf,
    /// The persistent tier; absent = off.
    #[serde(default)]
    pub disk: Option<DiskConf>,
    /// The tier shared by all instances; absent = off.
    #[serde(default)]
    pub redis: Option<CacheRedisConf>,
}

fn default_cache_ttl() -> ConfDuration {
    ConfDuration(Duration::from_secs(24 * 3600))
}

/// Who may receive whose cached audio.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheShare {
    /// Everyone shares (organisation-level sharing).
    #[default]
    Global,
    /// Each tenant sees only its own entries (anonymous callers form one tenant).
    Tenant,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConf {
    pub max: ByteSize,
}

impl Default for MemoryConf {
    fn default() -> Self {
        Self {
            max: ByteSize(512 * 1024 * 1024),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConf {
    pub path: PathBuf,
    #[serde(default = "default_disk_max")]
    pub max: ByteSize,
}

fn default_disk_max() -> ByteSize {
    ByteSize(10 << 30)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRedisConf {
    pub url: RedisUrl,
    /// Longest wait for one Redis round trip before going on without it.
    #[serde(default = "default_redis_timeout")]
    pub timeout: ConfDuration,
    /// Larger WAVs are not sent to Redis.
    #[serde(default = "default_redis_max_value")]
    pub max_value: ByteSize,
    /// How long one instance may hold the synthesis lock for a key before others give up
    /// waiting for it and synthesize themselves.
    #[serde(default = "default_redis_lock")]
    pub lock: ConfDuration,
}

fn default_redis_max_value() -> ByteSize {
    ByteSize(4 << 20)
}

fn default_redis_lock() -> ConfDuration {
    ConfDuration(Duration::from_secs(30))
}
