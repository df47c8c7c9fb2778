//! API tokens: `Authorization: Bearer <token>` checked against the sha256 digests in
//! `auth.tokens` (the configuration never holds a token), in constant time, giving the caller's
//! identity (name, tenant, allowed pools, own rate limit).

use super::AdmissionError;
use crate::config::{AuthConf, BucketConf};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Who a valid token belongs to.
#[derive(Debug)]
pub struct Identity {
    pub name: String,
    pub tenant: Option<String>,
    pools: Option<Vec<String>>,
    pub bucket: Option<BucketConf>,
}

impl Identity {
    /// Whether this token may use the pool.
    pub fn may_use(&self, pool: &str) -> bool {
        self.pools.as_ref().is_none_or(|p| p.iter().any(|n| n == pool))
    }
}

pub struct Auth {
    allow_anonymous: bool,
    tokens: Vec<([u8; 32], Arc<Identity>)>,
}

impl Auth {
    /// No `auth` section: everyone is anonymous.
    pub fn new(conf: Option<&AuthConf>) -> Self {
        let Some(conf) = conf else {
            return Self {
                allow_anonymous: true,
                tokens: Vec::new(),
            };
        };
        let tokens = conf
            .tokens
            .iter()
            .map(|t| {
                let id = Identity {
                    name: t.name.clone(),
                    tenant: t.tenant.clone(),
                    pools: t.pools.clone(),
                    bucket: t.rate_limit,
                };
                (t.sha256.0, Arc::new(id))
            })
            .collect();
        Self {
            allow_anonymous: conf.allow_anonymous,
            tokens,
        }
    }

    /// The identity behind the `Authorization` header value, None for an anonymous caller, or
    /// 401. A token that is presented but unknown is refused even when anonymous access is on.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
    ) -> Result<Option<Arc<Identity>>, AdmissionError> {
        let Some(value) = authorization else {
            if self.allow_anonymous {
                return Ok(None);
            }
            return Err(unauthorized(
                "missing_token",
                "this gateway needs an API token: send Authorization: Bearer <token>",
            ));
        };
        let token = bearer_token(value).ok_or_else(|| {
            unauthorized(
                "invalid_token",
                "the Authorization header must be `Bearer <token>`",
            )
        })?;
        let digest: [u8; 32] = Sha256::digest(token).into();
        // Compare against every digest without stopping early.
        let mut found = None;
        for (known, identity) in &self.tokens {
            if bool::from(known.ct_eq(&digest)) {
                found = Some(identity.clone());
            }
        }
        found.map(Some).ok_or_else(|| {
            unauthorized(
                "invalid_token",
                "the API token is not valid; ask the operator for a new one",
            )
        })
    }
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive).
pub(crate) fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn unauthorized(code: &'static str, message: &'static str) -> AdmissionError {
    AdmissionError::Unauthenticated { code, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Sha256Hex, TokenConf};

    fn auth(allow_anonymous: bool) -> Auth {
        let token = TokenConf {
            name: "school-a".into(),
            sha256: Sha256Hex(Sha256::digest(b"s3cret").into()),
            tenant: Some("school-a".into()),
            pools: Some(vec!["cosyvoice".into()]),
            rate_limit: None,
        };
        Auth::new(Some(&AuthConf {
            allow_anonymous,
            tokens: vec![token],
        }))
    }

    #[test]
    fn tokens_are_checked_by_digest() {
        let a = auth(false);
        let id = a
            .authenticate(Some(b"Bearer s3cret"))
            .expect("valid")
            .expect("identity");
        assert_eq!(id.tenant.as_deref(), Some("school-a"));
        assert!(id.may_use("cosyvoice") && !id.may_use("other"));
        assert!(a.authenticate(Some(b"bearer   s3cret ")).is_ok());
        let code = |r: Result<Option<Arc<Identity>>, AdmissionError>| match r {
            Err(AdmissionError::Unauthenticated { code, .. }) => code,
            other => panic!("not a 401: {other:?}"),
        };
        assert_eq!(code(a.authenticate(Some(b"Bearer wrong"))), "invalid_token");
        assert_eq!(code(a.authenticate(Some(b"Basic czNjcmV0"))), "invalid_token");
        assert_eq!(code(a.authenticate(None)), "missing_token");
        assert!(auth(true).authenticate(None).expect("anonymous").is_none());
        assert_eq!(
            code(auth(true).authenticate(Some(b"Bearer wrong"))),
            "invalid_token"
        );
    }
}
