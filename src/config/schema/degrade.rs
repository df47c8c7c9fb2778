//! `pools.NAME.degrade`: the ladder a request walks when its pool cannot serve it (every backend
//! down or breaker-open, the deadline passed, every attempt failed) and its exact cache key
//! misses: approximate cached answers first, then the fallback voice, then the error.

use serde::{de, Deserialize, Deserializer, Serialize};

/// One approximate rung: which cached entries may stand in for the exact one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rung {
    /// The same pool, mode, text and voice (prompt audio and transcript, `spk_id` or
    /// `voice_id`; the same instruction), made with any seed or speed.
    SameVoice,
    /// The same text, in any voice, from any pool, among the caller's own tenant's entries
    /// (also with `cache.share: global`: another tenant's may be in a voice cloned from its
    /// private sample).
    SameText,
}

impl Rung {
    /// The name in the config, `X-Degraded-Reason`, the metrics and the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            Rung::SameVoice => "same_voice",
            Rung::SameText => "same_text",
        }
    }
}

/// `degrade: { ladder: [same_voice, same_text], fallback: true }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DegradeConf {
    /// The approximate rungs, tried in order (each at most once). Default: `[same_voice]`;
    /// `same_text` is off unless listed (a different voice can surprise); `[]` turns them off.
    #[serde(deserialize_with = "distinct_rungs")]
    pub ladder: Vec<Rung>,
    /// Then the fallback voice, when a top-level `fallback:` is configured (default true).
    pub fallback: bool,
}

impl Default for DegradeConf {
    fn default() -> Self {
        Self {
            ladder: vec![Rung::SameVoice],
            fallback: true,
        }
    }
}

fn distinct_rungs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Rung>, D::Error> {
    let ladder = Vec::<Rung>::deserialize(d)?;
    for (i, rung) in ladder.iter().enumerate() {
        if ladder[..i].contains(rung) {
            return Err(de::Error::custom(format!(
                "`{}` is listed twice in the ladder; list each rung once",
                rung.as_str()
            )));
        }
    }
    Ok(ladder)
}
