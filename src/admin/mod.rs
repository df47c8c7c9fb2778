//! The operators' listener (`admin.addr`), apart from the public ones: `GET /metrics`,
//! `GET /admin/backends`, `GET /admin/status`, `POST /admin/cache/purge` and the status page on
//! `GET /`. Owns the admin routes, the admin token check and their answers; reads the live state
//! through [`StateView`] and changes nothing but the cache (purge).
//!
//! With `admin.token_sha256` set, every request needs the token: `Authorization: Bearer <token>`
//! for tools, or HTTP Basic with the token as the password, so a browser can open the status
//! page (it asks once, then sends it with the page's own requests).

mod view;

pub use view::{BackendRow, StateView};

use crate::cache::CacheKey;
use crate::gateway::ApiError;
use async_trait::async_trait;
use base64::Engine;
use http::{Method, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// The status page: one self-contained file (no CDN, no build step).
const STATUS_PAGE: &str = include_str!("status_page.html");
/// Largest purge body read.
const MAX_BODY: usize = 4096;
/// Longest a client may take to send a purge body.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// The admin listener's HTTP application.
pub struct AdminApp {
    /// sha256 of the admin token; None: no token needed (loopback only, see `AdminConf::check`).
    token: Option<[u8; 32]>,
    view: Arc<StateView>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    all: bool,
}

impl AdminApp {
    pub fn new(token_sha256: Option<[u8; 32]>, view: Arc<StateView>) -> Self {
        Self {
            token: token_sha256,
            view,
        }
    }

    /// Whether the request carries the admin token (always, when none is configured).
    fn authorized(&self, session: &ServerSession) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        let Some(value) = session.req_header().headers.get(http::header::AUTHORIZATION) else {
            return false;
        };
        let token = crate::admission::auth::bearer_token(value.as_bytes())
            .map(<[u8]>::to_vec)
            .or_else(|| basic_password(value.as_bytes()));
        token.is_some_and(|t| {
            let digest: [u8; 32] = Sha256::digest(&t).into();
            bool::from(digest.ct_eq(expected))
        })
    }

    async fn purge(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let Some(cache) = &self.view.cache else {
            return error(ApiError::new(
                409,
                "no_cache",
                "this gateway has no cache configured; there is nothing to purge",
            ));
        };
        let body = match read_small_body(session).await {
            Ok(body) => body,
            Err(e) => return error(e),
        };
        let parsed: PurgeBody = match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(e) => {
                return error(ApiError::bad_request(
                    "invalid_json",
                    format!("send {{\"key\":\"<64 hex digits>\"}} or {{\"all\":true}}: {e}"),
                ))
            }
        };
        match (parsed.key, parsed.all) {
            (Some(hex), false) => {
                let Some(key) = CacheKey::from_hex(&hex) else {
                    return error(ApiError::bad_request(
                        "invalid_key",
                        "`key` must be the 64 hex digits of an X-Cache-Key header",
                    ));
                };
                let removed = cache.purge(&key).await;
                log::info!("admin: purged cache key {hex} (found: {removed})");
                json(200, &serde_json::json!({"purged": removed, "key": hex}))
            }
            (None, true) => {
                cache.purge_all().await;
                log::warn!("admin: purged the whole cache");
                json(200, &serde_json::json!({"purged": true, "all": true}))
            }
            _ => error(ApiError::bad_request(
                "invalid_purge",
                "send exactly one of {\"key\":\"<64 hex digits>\"} or {\"all\":true}",
            )),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    /// Runs once per admin request, after its headers are read; answers it whole.
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        if !self.authorized(session) {
            let mut answer = error(ApiError::new(
                401,
                "admin_token_required",
                "the admin API needs the admin token: Authorization: Bearer <token>",
            ));
            let headers = answer.headers_mut();
            headers.append(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Basic realm=\"cosygate admin\", charset=\"UTF-8\""),
            );
            headers.append(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"cosygate admin\""),
            );
            return answer;
        }
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        match (path.as_str(), &method) {
            ("/metrics", &Method::GET) => {
                self.view.refresh_gauges().await;
                answer(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    crate::metrics::encode(),
                )
            }
            ("/admin/backends", &Method::GET) => json(200, &self.view.backends()),
            ("/admin/status", &Method::GET) => json(200, &self.view.status().await),
            ("/admin/cache/purge", &Method::POST) => self.purge(session).await,
            ("/", &Method::GET) => answer(200, "text/html; charset=utf-8", STATUS_PAGE.as_bytes().to_vec()),
            ("/metrics" | "/admin/backends" | "/admin/status" | "/", _) => {
                error(ApiError::new(405, "method_not_allowed", "use GET on this path"))
            }
            ("/admin/cache/purge", _) => {
                error(ApiError::new(405, "method_not_allowed", "use POST on this path"))
            }
            _ => error(ApiError::new(
                404,
                "not_found",
                format!(
                    "no admin route {path}; the admin API is GET /metrics, GET /admin/backends, \
                     GET /admin/status, POST /admin/cache/purge and the status page at GET /"
                ),
            )),
        }
    }
}

/// The password of an `Authorization: Basic base64(user:password)` value.
fn basic_password(value: &[u8]) -> Option<Vec<u8>> {
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    Some(decoded[colon + 1..].to_vec())
}

/// Reads a request body of at most [`MAX_BODY`] bytes within [`BODY_TIMEOUT`].
async fn read_small_body(session: &mut ServerSession) -> Result<Vec<u8>, ApiError> {
    let read = async {
        let mut body = Vec::new();
        while let Some(chunk) = session
            .read_request_body()
            .await
            .map_err(|e| ApiError::bad_request("invalid_body", format!("cannot read the body: {e}")))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(ApiError::new(
                    413,
                    "body_too_large",
                    format!("admin bodies are at most {MAX_BODY} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .map_err(|_| ApiError::new(408, "body_timeout", "the body did not arrive in time"))?
}

fn answer(status: u16, content_type: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    if let Ok(len) = http::HeaderValue::from_str(&response.body().len().to_string()) {
        response.headers_mut().insert(http::header::CONTENT_LENGTH, len);
    }
    response
}

fn json<T: serde::Serialize>(status: u16, value: &T) -> Response<Vec<u8>> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    answer(status, "application/json", body)
}

fn error(e: ApiError) -> Response<Vec<u8>> {
    let request_id = format!("{:032x}", rand::random::<u128>());
    let mut response = answer(e.status, "application/json", e.to_json(&request_id));
    for (name, value) in &e.headers {
        if let Ok(v) = http::HeaderValue::from_str(value) {
            response.headers_mut().insert(*name, v);
        }
    }
    response
}
