//! The `cosygate:` section of the YAML file, as plain structs. Every struct refuses unknown
//! keys; every default here is the one the README's config reference shows. Values that can be
//! checked on their own (units, addresses, non-empty lists, names) are checked while parsing, so
//! the error carries the line it stands on.

use super::units::{ByteSize, ConfDuration};
use indexmap::IndexMap;
use serde::{de, Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything under `cosygate:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConf {
    /// Public listeners (`POST /generate`, `GET /health`).
    pub listen: NonEmpty<ListenConf>,
    /// Request limits; always in force, with defaults.
    #[serde(default)]
    pub limits: LimitsConf,
    /// API tokens; absent = everyone is anonymous.
    #[serde(default)]
    pub auth: Option<AuthConf>,
    /// Per-client token buckets; absent = no rate limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConf>,
    /// The WAV cache; absent = no cache (every answer `X-Cache: BYPASS`).
    #[serde(default)]
    pub cache: Option<CacheConf>,
    /// A local voice engine for when no backend can serve; absent = 502/503/504 instead.
    #[serde(default)]
    pub fallback: Option<FallbackConf>,
    /// 202 Accepted jobs.
    #[serde(default)]
    pub jobs: JobsConf,
    /// Backend pools by name, in file order.
    pub pools: Pools,
    /// Restarting unhealthy backends (`backends[].restart`).
    #[serde(default)]
    pub supervisor: SupervisorConf,
    /// The pool a request goes to when it does not name one with `X-Cosygate-Pool`.
    /// Required when there is more than one pool.
    #[serde(default)]
    pub default_pool: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConf {
    pub addr: SocketAddr,
    /// Serve TLS (rustls) on this address with this certificate chain and key (PEM).
    #[serde(default)]
    pub tls: Option<TlsConf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConf {
    /// Largest request body accepted; larger ones get 413 without being read.
    pub max_body: ByteSize,
    /// Longest `text`, in Unicode characters after trimming.
    pub max_text_chars: usize,
    /// Longest prompt audio, in seconds.
    pub max_prompt_seconds: f64,
    /// Total time a client has to send its request headers, from the connection (or the
    /// previous request) on; slower clients are disconnected.
    pub header_timeout: ConfDuration,
    /// Total time a client has to send its request body once the headers are in (408).
    pub body_timeout: ConfDuration,
    /// Largest request header block (431).
    pub max_header_bytes: ByteSize,
    /// Most request header fields (431).
    pub max_headers: usize,
    /// Most open connections from one client (an IPv4 address or an IPv6 /64); more are
    /// answered 429 `too_many_connections` and closed.
    pub max_connections_per_ip: usize,
    /// Most open connections from one of `rate_limit.trusted_proxies` (it carries many clients).
    pub max_connections_per_proxy: usize,
    /// Most request-body bytes held at once, over all requests; beyond it new bodies are
    /// refused with 503 `server_busy` before they are read.
    pub max_bodies_in_flight: ByteSize,
}

impl Default for LimitsConf {
    fn default() -> Self {
        Self {
            max_body: ByteSize(10 * 1024 * 1024),
            max_text_chars: 200,
            max_prompt_seconds: 30.0,
            header_timeout: ConfDuration(Duration::from_secs(10)),
            body_timeout: ConfDuration(Duration::from_secs(30)),
            max_header_bytes: ByteSize(32 * 1024),
            max_headers: 64,
            // A school or an office behind one NAT address: hundreds of people, a few
            // connections each. An idle HTTP/1.1 connection costs about 4 KiB (README, "Benchmarks").
            max_connections_per_ip: 1024,
            max_connections_per_proxy: 16384,
            max_bodies_in_flight: ByteSize(256 * 1024 * 1024),
        }
    }
}

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

fn default_true() -> bool {
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

fn default_redis_timeout() -> ConfDuration {
    ConfDuration(Duration::from_millis(50))
}

/// How the gateway talks to a pool's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// CosyVoice's own FastAPI server: multipart forms in, raw int16 PCM out.
    CosyvoiceFastapi,
    /// A server that takes our JSON body and answers `audio/wav` (cosyvoice-sim's `/generate`).
    GenerateJson,
}

/// Which CosyVoice generation serves the pool; decides prompt conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelFamily {
    /// CosyVoice 3: `<|endofprompt|>` is required in the prompt text or instruction.
    Cosyvoice3,
    /// CosyVoice 2 (and 1): no prompt marker.
    Cosyvoice2,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConf {
    pub protocol: Protocol,
    #[serde(default = "default_model")]
    pub model: ModelFamily,
    /// Part of every cache key: change it when the model or its weights change, so that old
    /// voices are not served for the new model.
    #[serde(default)]
    pub model_version: String,
    /// Sample rate of the raw PCM the backends send (`cosyvoice_fastapi`).
    #[serde(default = "default_sample_rate")]
    pub sample_rate: u32,
    #[serde(default)]
    pub health: HealthConf,
    /// Deadline for one backend attempt, from connect to the last audio byte.
    #[serde(default = "default_timeout")]
    pub timeout: ConfDuration,
    /// GPU slots per backend: never more requests in flight to one backend than this.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    #[serde(default)]
    pub queue: QueueConf,
    #[serde(default)]
    pub retry: RetryConf,
    #[serde(default)]
    pub circuit_breaker: BreakerConf,
    /// Longest audio one request may produce; a backend answer beyond it (plus header slack) is
    /// cut off as a failure without being read further. 120 s covers the default 200-character
    /// text limit at the slowest speech (Mandarin at about 4 characters a second is 50 s; at
    /// `speed` 0.5, 100 s) with a margin; raise it with `limits.max_text_chars`.
    #[serde(default = "default_max_audio_seconds")]
    pub max_audio_seconds: f64,
    /// The preset speakers (`spk_id`) the backends have. Absent: any `spk_id` is passed on,
    /// except on `model: cosyvoice3` pools, where `sft` is refused (CosyVoice3 ships none).
    #[serde(default)]
    pub speakers: Option<Vec<String>>,
    /// One deadline per request, across queueing and every attempt (504 when it passes).
    /// Default: `queue.max_wait` + `timeout`.
    #[serde(default)]
    pub deadline: Option<ConfDuration>,
    pub backends: NonEmpty<BackendConf>,
}

fn default_max_audio_seconds() -> f64 {
    120.0
}

fn default_max_concurrency() -> usize {
    8
}

/// The pool's bounded, fair wait for a free GPU slot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConf {
    /// Most requests waiting; more get 503 `queue_full`.
    pub max_len: usize,
    /// Longest wait for a slot: a synchronous caller then gets 503, a job expires.
    pub max_wait: ConfDuration,
    /// A request that has not started within this becomes a 202 job.
    pub async_after: ConfDuration,
}

impl Default for QueueConf {
    fn default() -> Self {
        Self {
            max_len: 64,
            max_wait: ConfDuration(Duration::from_secs(30)),
            async_after: ConfDuration(Duration::from_secs(2)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConf {
    /// Extra attempts on another backend after a retryable failure.
    pub attempts: usize,
    /// Whether an attempt that timed out is retried (the GPU keeps working on it, so a retry
    /// doubles the load exactly when the pool is overloaded).
    pub on_timeout: bool,
    /// Retry budget, in the manner of Envoy's: retries may be at most this fraction of the
    /// requests of the last `budget_window` ...
    pub budget_ratio: f64,
    /// ... plus this many.
    pub budget_min: u32,
    /// The window the budget looks back over.
    pub budget_window: ConfDuration,
}

impl Default for RetryConf {
    fn default() -> Self {
        Self {
            attempts: 2,
            on_timeout: false,
            budget_ratio: 0.2,
            budget_min: 3,
            budget_window: ConfDuration(Duration::from_secs(10)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConf {
    /// Consecutive failures that open a backend's breaker.
    pub failures: u32,
    /// How long it stays open before one probe request may try it.
    pub open_for: ConfDuration,
}

impl Default for BreakerConf {
    fn default() -> Self {
        Self {
            failures: 3,
            open_for: ConfDuration(Duration::from_secs(30)),
        }
    }
}

/// `fallback:` a local voice engine for when no backend can serve.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConf {
    /// argv (no shell); `{out}` is replaced by the output WAV path. The text arrives on stdin;
    /// `{text}` may stand only after `--` or as `--name={text}` (see `backend::fallback`).
    pub command: NonEmpty<String>,
    /// Most fallback processes at once.
    #[serde(default = "default_fallback_concurrency")]
    pub concurrency: usize,
    /// Longest a fallback process may run.
    #[serde(default = "default_fallback_timeout")]
    pub timeout: ConfDuration,
    /// Whether fallback audio may be cached (normally not: it is not the requested voice).
    #[serde(default)]
    pub cache: bool,
}

fn default_fallback_concurrency() -> usize {
    2
}

fn default_fallback_timeout() -> ConfDuration {
    ConfDuration(Duration::from_secs(10))
}

/// `jobs:` 202 Accepted jobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConf {
    /// How long a finished job's result can be fetched.
    pub keep: ConfDuration,
    /// Most jobs kept at once (queued, running and finished); the oldest finished go first.
    pub max: usize,
    /// Most bytes of finished results held; past it the oldest results are dropped (their
    /// owners get 404 `job_expired`).
    pub max_bytes: ByteSize,
    /// Most unfinished jobs one caller (token, or IP when anonymous) may hold (429 beyond).
    pub max_unfinished_per_caller: usize,
}

impl Default for JobsConf {
    fn default() -> Self {
        Self {
            keep: ConfDuration(Duration::from_secs(600)),
            max: 10_000,
            max_bytes: ByteSize(256 << 20),
            max_unfinished_per_caller: 32,
        }
    }
}

fn default_model() -> ModelFamily {
    ModelFamily::Cosyvoice3
}
fn default_sample_rate() -> u32 {
    24000
}
fn default_timeout() -> ConfDuration {
    ConfDuration(Duration::from_secs(120))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConf {
    /// Path probed with `GET`; a `200` is healthy. Default: `/docs` for `cosyvoice_fastapi`
    /// (the real server has no health route), `/health` for `generate_json`.
    pub path: Option<String>,
    pub interval: ConfDuration,
    pub timeout: ConfDuration,
    /// Consecutive failed checks that mark a healthy backend down.
    pub unhealthy_after: usize,
    /// Consecutive good checks that bring a down backend back.
    pub healthy_after: usize,
}

impl Default for HealthConf {
    fn default() -> Self {
        Self {
            path: None,
            interval: ConfDuration(Duration::from_secs(2)),
            timeout: ConfDuration(Duration::from_secs(1)),
            unhealthy_after: 3,
            healthy_after: 1,
        }
    }
}

impl PoolConf {
    /// The health-check path after defaults.
    pub fn health_path(&self) -> &str {
        match (&self.health.path, self.protocol) {
            (Some(p), _) => p,
            (None, Protocol::CosyvoiceFastapi) => "/docs",
            (None, Protocol::GenerateJson) => "/health",
        }
    }

    /// The request deadline after defaults: `deadline`, or `queue.max_wait` + `timeout`.
    pub fn request_deadline(&self) -> Duration {
        self.deadline
            .map_or_else(|| self.queue.max_wait.0.saturating_add(self.timeout.0), |d| d.0)
    }

    /// Most bytes a successful backend answer may have: `max_audio_seconds` of 16-bit mono
    /// PCM at `sample_rate`, plus slack for a WAV header (`generate_json`).
    pub fn max_answer_bytes(&self) -> usize {
        /// Room for a WAV header with extra chunks (`LIST`, `fact`) in front of the samples.
        const HEADER_SLACK: usize = 4096;
        let pcm = self.max_audio_seconds * f64::from(self.sample_rate) * 2.0;
        // `as` saturates; the value is checked to be finite and positive at load time.
        (pcm.ceil() as usize).saturating_add(HEADER_SLACK)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConf {
    pub addr: SocketAddr,
    /// How the supervisor restarts this backend when it stays unhealthy; absent = never.
    #[serde(default)]
    pub restart: Option<RestartConf>,
}

/// `backends[].restart:` the command that restarts one backend, and the guards around it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartConf {
    /// argv (no shell). It must not wait for the server: start it in the background and exit.
    pub command: NonEmpty<String>,
    /// Consecutive failures (failed health checks, or failed requests) that trigger a restart.
    #[serde(default = "default_after_failures")]
    pub after_failures: u32,
    /// Least time between two restarts of this backend (doubled after each restart that did
    /// not help).
    #[serde(default = "default_restart_cooldown")]
    pub cooldown: ConfDuration,
    /// Longest the command may run; it is killed after that.
    #[serde(default = "default_restart_timeout")]
    pub timeout: ConfDuration,
    /// Longest wait, after the command exited, for the backend to pass `healthy_after` checks.
    #[serde(default = "default_ready_within")]
    pub ready_within: ConfDuration,
    /// Working directory of the command (default: the gateway's).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Extra environment variables for the command.
    #[serde(default)]
    pub env: IndexMap<String, String>,
    /// Most restarts of this backend in any hour; then the supervisor gives up (`failed`).
    #[serde(default = "default_max_per_hour")]
    pub max_per_hour: u32,
    /// Slow start: a restarted backend gets 1 slot, twice as many every `warmup`, up to
    /// `max_concurrency`.
    #[serde(default = "default_warmup")]
    pub warmup: ConfDuration,
}

fn default_after_failures() -> u32 {
    3
}
fn default_restart_cooldown() -> ConfDuration {
    ConfDuration(Duration::from_secs(60))
}
fn default_restart_timeout() -> ConfDuration {
    ConfDuration(Duration::from_secs(30))
}
fn default_ready_within() -> ConfDuration {
    ConfDuration(Duration::from_secs(300))
}
fn default_max_per_hour() -> u32 {
    6
}
fn default_warmup() -> ConfDuration {
    ConfDuration(Duration::from_secs(10))
}

/// `supervisor:` this instance's part in restarting backends (`backends[].restart`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorConf {
    /// Whether this instance runs restart commands at all. With several instances and no
    /// `redis`, turn it on in exactly one.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A lock per backend in Redis (`SET NX PX`), so that of several instances only one
    /// restarts a given backend at a time.
    #[serde(default)]
    pub redis: Option<RedisConf>,
}

impl Default for SupervisorConf {
    fn default() -> Self {
        Self {
            enabled: true,
            redis: None,
        }
    }
}

/// A list that must have at least one entry.
#[derive(Debug, Clone)]
pub struct NonEmpty<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for NonEmpty<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<T>::deserialize(d)?;
        if v.is_empty() {
            return Err(de::Error::custom(
                "an empty list where at least one entry is needed (listen, backends)",
            ));
        }
        Ok(Self(v))
    }
}

/// Pools by name, in file order; at least one, names usable as metric labels.
#[derive(Debug, Clone)]
pub struct Pools(pub IndexMap<String, PoolConf>);

impl<'de> Deserialize<'de> for Pools {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pools = IndexMap::<String, PoolConf>::deserialize(d)?;
        if pools.is_empty() {
            return Err(de::Error::custom(
                "no pools: define at least one pool with its backends",
            ));
        }
        if let Some(bad) = pools.keys().find(|n| {
            n.is_empty()
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }) {
            return Err(de::Error::custom(format!(
                "pool name {bad:?} may only contain letters, digits, '_' and '-'"
            )));
        }
        Ok(Self(pools))
    }
}
