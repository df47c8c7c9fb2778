//! `auth` and `rate_limit`: API tokens, token buckets, and the Redis connection settings
//! (with a URL type that never prints its password).

use crate::config::units::ConfDuration;
use serde::{de, Deserialize, Deserializer};
use std::time::Duration;

/// `auth:` API tokens, stored as sha256 digests (never the tokens themselves).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConf {
    /// Whether requests without a token are served (an unknown token is refused either way).
    #[serde(default = "default_true")]
    pub allow_anonymous: bool,
    #[serde(default)]
    pub tokens: Vec<TokenConf>,
}

pub(super) fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConf {
    /// Shown in logs; never the token.
    pub name: String,
    /// Lowercase hex sha256 of the token (`scripts/new-token.sh` prints one).
    pub sha256: Sha256Hex,
    /// The tenant the caller belongs to (cache sharing, job ownership).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Pools this token may use; absent = all (403 otherwise).
    #[serde(default)]
    pub pools: Option<Vec<String>>,
    /// A bucket of its own for this token, instead of the per-IP one.
    #[serde(default)]
    pub rate_limit: Option<BucketConf>,
}

/// A sha256 digest written as 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sha256Hex(pub [u8; 32]);

impl<'de> Deserialize<'de> for Sha256Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|_| {
            de::Error::custom("sha256 must be 64 hex digits (scripts/new-token.sh prints one)")
        })?;
        Ok(Self(out))
    }
}

/// `rate_limit:` token buckets per client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConf {
    #[serde(default)]
    pub per_ip: BucketConf,
    /// Proxies whose `X-Forwarded-For` is believed (CIDR blocks).
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    #[serde(default)]
    pub store: RateLimitStore,
    /// Required with `store: redis`.
    #[serde(default)]
    pub redis: Option<RedisConf>,
}

/// A token bucket: `capacity` tokens, `refill` more every `per`; each request takes one.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BucketConf {
    pub capacity: u32,
    pub refill: u32,
    pub per: ConfDuration,
}

impl Default for BucketConf {
    fn default() -> Self {
        Self {
            capacity: 5,
            refill: 1,
            per: ConfDuration(Duration::from_secs(60)),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitStore {
    /// Buckets in this process's memory.
    #[default]
    Local,
    /// Buckets in Redis, shared by every gateway instance.
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConf {
    pub url: RedisUrl,
    /// Longest wait for one Redis round trip before going on without it.
    #[serde(default = "default_redis_timeout")]
    pub timeout: ConfDuration,
}

/// A Redis URL. It may carry a password, so `Debug` and `Display` mask it
/// (`redis://:****@host:6379/0`); [`RedisUrl::expose`] gives the real one, to connect with.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The URL with its password, for `redis::Client::open` only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", crate::redis_link::mask_url_secrets(&self.0))
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::redis_link::mask_url_secrets(&self.0))
    }
}

pub(super) fn default_redis_timeout() -> ConfDuration {
    ConfDuration(Duration::from_millis(50))
}
