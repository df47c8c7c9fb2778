//! Token buckets: `capacity` tokens, `refill` more every `per`, one taken per request. Local
//! buckets are governor's exact GCRA, keyed by client (idle ones are dropped, so memory stays
//! bounded with millions of clients). With `store: redis`, the buckets live in Redis so every
//! gateway instance shares them: one Lua script, one round trip per request. If Redis does not
//! answer in time, the request is decided by the local buckets instead (logged and counted in
//! `cosygate_redis_errors_total{use="rate_limit"}`): the gateway never fails closed because
//! Redis is down, and each instance then enforces the limit on its own.

use crate::config::{BucketConf, RateLimitConf, RateLimitStore};
use crate::redis_link::RedisLink;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

/// Whose bucket a request draws from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BucketKey {
    /// Anonymous callers, and tokens without a limit of their own, share their IP's bucket.
    /// IPv6 clients are keyed by their /64 (one subscriber), so rotating addresses does not help.
    Ip(IpAddr),
    /// A token with its own `rate_limit`.
    Token(String),
}

impl BucketKey {
    pub fn for_ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                BucketKey::Ip(IpAddr::V6(std::net::Ipv6Addr::new(
                    s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                )))
            }
            v4 => BucketKey::Ip(v4),
        }
    }

    fn redis_key(&self) -> String {
        match self {
            BucketKey::Ip(ip) => format!("cosygate:rl:ip:{ip}"),
            BucketKey::Token(name) => format!("cosygate:rl:token:{name}"),
        }
    }

    /// The policy name shown in the `RateLimit` headers.
    pub fn policy(&self) -> &'static str {
        match self {
            BucketKey::Ip(_) => "per-ip",
            BucketKey::Token(_) => "per-token",
        }
    }
}

/// The outcome of taking a token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    Allowed { remaining: u32 },
    Limited { retry_after: Duration },
}

type Keyed<K> = RateLimiter<
    K,
    governor::state::keyed::DefaultKeyedStateStore<K>,
    DefaultClock,
    StateInformationMiddleware,
>;

pub struct RateLimits {
    per_ip: BucketConf,
    local_ip: Keyed<IpAddr>,
    local_tokens: HashMap<String, (BucketConf, Keyed<()>)>,
    redis: Option<RedisLink>,
    clock: DefaultClock,
    script: redis::Script,
}

/// GCRA in Redis: the key holds the bucket's "theoretical arrival time" in ms (Redis's own
/// clock, so instances need no clock agreement) and expires once the bucket is full again.
/// Returns {allowed (0/1), wait ms, remaining}.
const GCRA_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - (capacity - 1) * interval
if now < allow_at then return {0, allow_at - now, 0} end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return {1, 0, math.floor((now - (new_tat - capacity * interval)) / interval)}
"#;

impl RateLimits {
    /// Builds the buckets for the per-IP policy and every token that has its own.
    pub fn new(conf: &RateLimitConf, token_buckets: &[(String, BucketConf)]) -> Result<Self, String> {
        let redis = match (conf.store, &conf.redis) {
            (RateLimitStore::Redis, Some(r)) => {
                Some(RedisLink::new(r.url.expose(), r.timeout.0, "rate_limit")?)
            }
            _ => None,
        };
        let local_tokens = token_buckets
            .iter()
            .map(|(name, b)| {
                Ok((
                    name.clone(),
                    (*b, RateLimiter::keyed(quota(b)?).with_middleware()),
                ))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            per_ip: conf.per_ip,
            local_ip: RateLimiter::keyed(quota(&conf.per_ip)?).with_middleware(),
            local_tokens,
            redis,
            clock: DefaultClock::default(),
            script: redis::Script::new(GCRA_LUA),
        })
    }

    /// The bucket settings behind a key.
    pub fn bucket(&self, key: &BucketKey) -> BucketConf {
        match key {
            BucketKey::Token(name) => self
                .local_tokens
                .get(name)
                .map(|(b, _)| *b)
                .unwrap_or(self.per_ip),
            BucketKey::Ip(_) => self.per_ip,
        }
    }

    /// Takes one token from `key`'s bucket.
    pub async fn take(&self, key: &BucketKey) -> Decision {
        if let Some(redis) = &self.redis {
            if let Some(d) = self.take_redis(redis, key).await {
                return d;
            }
        }
        self.take_local(key)
    }

    async fn take_redis(&self, redis: &RedisLink, key: &BucketKey) -> Option<Decision> {
        let b = self.bucket(key);
        let interval_ms = (b.per.0.as_millis() / u128::from(b.refill)).max(1);
        let args = [interval_ms.to_string(), b.capacity.to_string()];
        let (allowed, wait_ms, remaining): (i64, i64, i64) =
            redis.run_script(&self.script, &[&key.redis_key()], &args).await?;
        Some(if allowed == 1 {
            Decision::Allowed {
                remaining: u32::try_from(remaining.max(0)).unwrap_or(0),
            }
        } else {
            Decision::Limited {
                retry_after: Duration::from_millis(u64::try_from(wait_ms.max(0)).unwrap_or(0)),
            }
        })
    }

    fn take_local(&self, key: &BucketKey) -> Decision {
        let result = match key {
            BucketKey::Ip(ip) => self.local_ip.check_key(ip),
            BucketKey::Token(name) => match self.local_tokens.get(name) {
                Some((_, limiter)) => limiter.check_key(&()),
                None => return Decision::Allowed { remaining: 0 },
            },
        };
        match result {
            Ok(state) => Decision::Allowed {
                remaining: state.remaining_burst_capacity(),
            },
            Err(not_until) => Decision::Limited {
                retry_after: not_until.wait_time_from(self.clock.now()),
            },
        }
    }

    /// Drops local buckets that are full again (their clients have been idle long enough).
    pub fn forget_idle(&self) {
        self.local_ip.retain_recent();
        self.local_ip.shrink_to_fit();
    }

    /// How many clients have a local bucket in memory.
    pub fn tracked_clients(&self) -> usize {
        self.local_ip.len()
    }
}

fn quota(b: &BucketConf) -> Result<Quota, String> {
    let capacity = NonZeroU32::new(b.capacity).ok_or("rate-limit capacity must be at least 1")?;
    let period = b.per.0 / b.refill.max(1);
    Ok(Quota::with_period(period)
        .ok_or("rate-limit period must be above zero")?
        .allow_burst(capacity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfDuration;

    fn conf(capacity: u32, per: Duration) -> RateLimitConf {
        RateLimitConf {
            per_ip: BucketConf {
                capacity,
                refill: 1,
                per: ConfDuration(per),
            },
            trusted_proxies: vec![],
            store: RateLimitStore::Local,
            redis: None,
        }
    }

    #[tokio::test]
    async fn a_bucket_empties_then_refills() {
        let limits = RateLimits::new(&conf(5, Duration::from_millis(300)), &[]).expect("limits");
        let key = BucketKey::for_ip("192.0.2.1".parse().expect("ip"));
        for left in (0..5).rev() {
            assert_eq!(limits.take(&key).await, Decision::Allowed { remaining: left });
        }
        let Decision::Limited { retry_after } = limits.take(&key).await else {
            panic!("sixth must be limited")
        };
        assert!(
            retry_after <= Duration::from_millis(300) && retry_after > Duration::from_millis(200),
            "{retry_after:?}"
        );
        let other = BucketKey::for_ip("192.0.2.2".parse().expect("ip"));
        assert_eq!(limits.take(&other).await, Decision::Allowed { remaining: 4 });
        tokio::time::sleep(retry_after + Duration::from_millis(20)).await;
        assert!(matches!(limits.take(&key).await, Decision::Allowed { .. }));
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let a = BucketKey::for_ip("2001:db8:1:2:aaaa::1".parse().expect("ip"));
        let b = BucketKey::for_ip("2001:db8:1:2:bbbb::2".parse().expect("ip"));
        assert_eq!(a, b);
    }

    #[tokio::test]
    async fn idle_buckets_are_forgotten() {
        let limits = RateLimits::new(&conf(1, Duration::from_millis(50)), &[]).expect("limits");
        for i in 0..1000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            limits.take(&BucketKey::for_ip(ip)).await;
        }
        assert_eq!(limits.tracked_clients(), 1000);
        tokio::time::sleep(Duration::from_millis(150)).await;
        limits.forget_idle();
        assert_eq!(limits.tracked_clients(), 0);
    }
}
