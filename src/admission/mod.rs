//! Admission: who is calling and whether they may, decided from the request headers alone,
//! before the body is read or anything expensive happens. API tokens (`auth`), the client's
//! address (`client_ip`), and token buckets (`rate_limit`), in that order.

pub mod auth;
pub mod client_ip;
mod error;
pub mod rate_limit;

pub use error::AdmissionError;

use crate::config::GatewayConf;
use auth::{Auth, Identity};
use client_ip::ClientIp;
use rate_limit::{BucketKey, Decision, RateLimits};
use std::net::IpAddr;
use std::sync::Arc;

/// The caller, as admission established it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub ip: IpAddr,
    /// None for an anonymous caller.
    pub identity: Option<Arc<Identity>>,
}

impl Caller {
    pub fn tenant(&self) -> Option<&str> {
        self.identity.as_ref().and_then(|i| i.tenant.as_deref())
    }

    /// The cache scope under `share: tenant`: `tenant:<t>`, `token:<name>` for a token without a
    /// tenant, `anonymous:` for callers without a token. Tagged, so no configured name can
    /// collide with another kind of scope.
    pub fn cache_scope(&self) -> String {
        match &self.identity {
            Some(id) => match &id.tenant {
                Some(t) => format!("tenant:{t}"),
                None => format!("token:{}", id.name),
            },
            None => "anonymous:".to_string(),
        }
    }

    /// Who owns this caller's jobs and queue share: the token's name, or the IP when anonymous.
    pub fn owner(&self) -> String {
        match &self.identity {
            Some(id) => format!("token:{}", id.name),
            None => format!("ip:{}", self.ip),
        }
    }
}

/// What the caller is told about their budget (`RateLimit-Policy` and `RateLimit` headers,
/// IETF draft-ietf-httpapi-ratelimit-headers).
pub type RateLimitHeaders = Vec<(&'static str, String)>;

pub struct Admission {
    auth: Auth,
    client_ip: ClientIp,
    limits: Option<Arc<RateLimits>>,
}

impl Admission {
    pub fn new(conf: &GatewayConf) -> Result<Self, String> {
        let limits = match &conf.rate_limit {
            Some(rl) => {
                let token_buckets: Vec<_> = conf
                    .auth
                    .iter()
                    .flat_map(|a| a.tokens.iter())
                    .filter_map(|t| t.rate_limit.map(|b| (t.name.clone(), b)))
                    .collect();
                Some(Arc::new(RateLimits::new(rl, &token_buckets)?))
            }
            None => None,
        };
        let trusted = conf
            .rate_limit
            .as_ref()
            .map(|r| r.trusted_proxies.clone())
            .unwrap_or_default();
        Ok(Self {
            auth: Auth::new(conf.auth.as_ref()),
            client_ip: ClientIp::new(trusted),
            limits,
        })
    }

    /// The rate limiter, for the background task that forgets idle buckets.
    pub fn rate_limits(&self) -> Option<Arc<RateLimits>> {
        self.limits.clone()
    }

    /// Establishes the caller from the socket peer and the request headers (401 on a bad token).
    pub fn identify(&self, peer: IpAddr, headers: &http::HeaderMap) -> Result<Caller, AdmissionError> {
        let identity = self
            .auth
            .authenticate(headers.get(http::header::AUTHORIZATION).map(|v| v.as_bytes()))?;
        let forwarded = headers
            .get_all("x-forwarded-for")
            .into_iter()
            .map(|v| v.as_bytes());
        Ok(Caller {
            ip: self.client_ip.resolve(peer, forwarded),
            identity,
        })
    }

    /// Whether the caller may use `pool` (403 otherwise).
    pub fn authorize(&self, caller: &Caller, pool: &str) -> Result<(), AdmissionError> {
        match &caller.identity {
            Some(id) if !id.may_use(pool) => Err(AdmissionError::ForbiddenPool {
                token: id.name.clone(),
                pool: pool.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Takes a token from the caller's bucket: the budget headers to send, or 429.
    pub async fn take_token(&self, caller: &Caller) -> Result<RateLimitHeaders, AdmissionError> {
        let Some(limits) = &self.limits else {
            return Ok(Vec::new());
        };
        let key = match &caller.identity {
            Some(id) if id.bucket.is_some() => BucketKey::Token(id.name.clone()),
            _ => BucketKey::for_ip(caller.ip),
        };
        let bucket = limits.bucket(&key);
        let refill_secs = bucket.per.0.as_secs_f64() / f64::from(bucket.refill);
        let window = (refill_secs * f64::from(bucket.capacity)).ceil() as u64;
        let policy = format!("\"{}\";q={};w={}", key.policy(), bucket.capacity, window.max(1));
        match limits.take(&key).await {
            Decision::Allowed { remaining } => {
                let until_full =
                    (refill_secs * f64::from(bucket.capacity - remaining.min(bucket.capacity))).ceil();
                Ok(vec![
                    ("RateLimit-Policy", policy),
                    (
                        "RateLimit",
                        format!("\"{}\";r={remaining};t={}", key.policy(), until_full as u64),
                    ),
                ])
            }
            Decision::Limited { retry_after } => {
                crate::metrics::RATE_LIMITED.inc();
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                Err(AdmissionError::RateLimited {
                    capacity: bucket.capacity,
                    window_secs: window.max(1),
                    retry_after_secs: secs,
                    budget: vec![
                        ("RateLimit-Policy", policy),
                        ("RateLimit", format!("\"{}\";r=0;t={secs}", key.policy())),
                    ],
                })
            }
        }
    }
}
