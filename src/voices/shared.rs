//! Voices in Redis, so every instance knows every voice: per scope (tagged by
//! [`super::scope_tag`]) a hash `cosygate:voice:<tag>:index` (voice id → [`VoiceInfo`] as
//! JSON), the WAV bytes under `cosygate:voice:<tag>:wav:<id>`, and a sorted set
//! `cosygate:voice:<tag>:deleted` (voice id scored by deletion time, the newest
//! [`MAX_TOMBSTONES`] kept) so an instance can tell a voice deleted elsewhere from one Redis
//! lost (a flush, a restart without persistence), which it publishes again. Every call is
//! bounded by the link's timeout; None means Redis did not answer.

use super::index::VoiceInfo;
use crate::redis_link::RedisLink;
use bytes::Bytes;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Deletions remembered per scope.
const MAX_TOMBSTONES: isize = 10_000;

pub struct SharedVoices {
    link: RedisLink,
}

fn key(scope: &str, what: &str) -> String {
    format!("cosygate:voice:{}:{what}", super::scope_tag(scope))
}

impl SharedVoices {
    /// Wraps the link (which connects lazily); runs once at start.
    pub fn new(link: RedisLink) -> Self {
        Self { link }
    }

    /// The voices Redis holds for `scope`.
    pub async fn index(&self, scope: &str) -> Option<Vec<VoiceInfo>> {
        let cmd = redis::cmd("HGETALL").arg(key(scope, "index")).clone();
        let all: HashMap<String, String> = self.link.query(&cmd).await?;
        Some(
            all.into_iter()
                .filter_map(|(id, json)| {
                    serde_json::from_str::<VoiceInfo>(&json)
                        .ok()
                        .filter(|v| v.voice_id == id)
                })
                .collect(),
        )
    }

    /// For each of `ids`, whether it was deleted (through any instance).
    pub async fn deleted(&self, scope: &str, ids: &[&str]) -> Option<Vec<bool>> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("ZSCORE").arg(key(scope, "deleted")).arg(*id);
        }
        let scores: Vec<Option<f64>> = self.link.query(&pipe).await?;
        Some(scores.into_iter().map(|s| s.is_some()).collect())
    }

    /// The WAV of voice `id` in `scope`.
    pub async fn sample(&self, scope: &str, id: &str) -> Option<Bytes> {
        let cmd = redis::cmd("GET").arg(key(scope, &format!("wav:{id}"))).clone();
        let wav: Option<Vec<u8>> = self.link.query(&cmd).await?;
        wav.map(Bytes::from)
    }

    /// Stores (or updates) a voice; false if Redis did not take it.
    pub async fn put(&self, scope: &str, info: &VoiceInfo, wav: &[u8]) -> bool {
        let Ok(json) = serde_json::to_string(info) else {
            return false;
        };
        let id = &info.voice_id;
        let pipe = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(key(scope, &format!("wav:{id}")))
            .arg(wav)
            .ignore()
            .cmd("HSET")
            .arg(key(scope, "index"))
            .arg(id)
            .arg(json)
            .ignore()
            .cmd("ZREM")
            .arg(key(scope, "deleted"))
            .arg(id)
            .ignore()
            .clone();
        self.link.query::<()>(&pipe).await.is_some()
    }

    /// Removes a voice and remembers the deletion; false if Redis did not answer.
    pub async fn remove(&self, scope: &str, id: &str) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let deleted = key(scope, "deleted");
        let pipe = redis::pipe()
            .atomic()
            .cmd("DEL")
            .arg(key(scope, &format!("wav:{id}")))
            .ignore()
            .cmd("HDEL")
            .arg(key(scope, "index"))
            .arg(id)
            .ignore()
            .cmd("ZADD")
            .arg(&deleted)
            .arg(now)
            .arg(id)
            .ignore()
            .cmd("ZREMRANGEBYRANK")
            .arg(&deleted)
            .arg(0)
            .arg(-(MAX_TOMBSTONES + 1))
            .ignore()
            .clone();
        self.link.query::<()>(&pipe).await.is_some()
    }
}
