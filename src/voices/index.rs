//! What is known about voices without their samples: [`VoiceInfo`], this instance's in-memory
//! index of its voice directory (per scope), and the pure rules a registration is decided by
//! (lookup by id or name, name uniqueness, quotas).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// A registered voice, without its sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoiceInfo {
    /// Lowercase hex sha256 of the WAV bytes.
    pub voice_id: String,
    pub name: String,
    pub prompt_text: String,
    /// The WAV's length in bytes (what the byte quota counts).
    pub bytes: u64,
    pub seconds: f64,
    /// When it was first registered (Unix milliseconds).
    pub created_unix_ms: u64,
}

/// The quotas of one scope.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub max_count: usize,
    pub max_bytes: u64,
}

/// Why a registration or deletion was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VoiceError {
    /// Another voice of the scope has this name.
    #[error("the name {name} is taken by voice {by}")]
    NameTaken { name: String, by: String },
    /// The scope holds `max_count` voices already.
    #[error("at most {max_count} voices")]
    TooMany { max_count: usize },
    /// The sample would take the scope over `max_bytes`.
    #[error("at most {max_bytes} bytes")]
    TooLarge { max_bytes: u64, used: u64, adding: u64 },
    /// No such voice in the scope.
    #[error("no such voice")]
    NotFound,
    /// Redis is configured and did not answer, so a deletion could not reach other instances.
    #[error("shared store unreachable")]
    SharedUnavailable,
    /// The voice file could not be written.
    #[error("storage: {0}")]
    Storage(String),
}

/// What a registration does.
#[derive(Debug, Clone, PartialEq)]
pub enum Admit {
    /// A new voice.
    New,
    /// The same audio again: its name and transcript are updated; `created` is kept.
    Update { created_unix_ms: u64 },
}

/// The voice `id_or_name` among `voices` (ids first: a name never has a voice id's shape).
pub fn lookup<'a>(voices: &'a [VoiceInfo], id_or_name: &str) -> Option<&'a VoiceInfo> {
    voices
        .iter()
        .find(|v| v.voice_id == id_or_name)
        .or_else(|| voices.iter().find(|v| v.name == id_or_name))
}

/// Decides registering `id` as `name` (`bytes` long) into a scope holding `voices`.
pub fn admit(
    voices: &[VoiceInfo],
    id: &str,
    name: &str,
    bytes: u64,
    quota: Quota,
) -> Result<Admit, VoiceError> {
    if let Some(other) = voices.iter().find(|v| v.name == name && v.voice_id != id) {
        return Err(VoiceError::NameTaken {
            name: name.to_string(),
            by: other.voice_id.clone(),
        });
    }
    if let Some(same) = voices.iter().find(|v| v.voice_id == id) {
        return Ok(Admit::Update {
            created_unix_ms: same.created_unix_ms,
        });
    }
    if voices.len() >= quota.max_count {
        return Err(VoiceError::TooMany {
            max_count: quota.max_count,
        });
    }
    let used: u64 = voices.iter().map(|v| v.bytes).sum();
    if used.saturating_add(bytes) > quota.max_bytes {
        return Err(VoiceError::TooLarge {
            max_bytes: quota.max_bytes,
            used,
            adding: bytes,
        });
    }
    Ok(Admit::New)
}

/// This instance's voices by scope, then by id.
#[derive(Debug, Default)]
pub struct Index {
    scopes: HashMap<String, BTreeMap<String, VoiceInfo>>,
}

impl Index {
    /// The voices of `scope`.
    pub fn list(&self, scope: &str) -> Vec<VoiceInfo> {
        self.scopes
            .get(scope)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether `scope` holds `id` here.
    pub fn has(&self, scope: &str, id: &str) -> bool {
        self.scopes.get(scope).is_some_and(|m| m.contains_key(id))
    }

    /// Adds or replaces a voice.
    pub fn insert(&mut self, scope: &str, info: VoiceInfo) {
        self.scopes
            .entry(scope.to_string())
            .or_default()
            .insert(info.voice_id.clone(), info);
    }

    /// Removes a voice; what it was, if it was there.
    pub fn remove(&mut self, scope: &str, id: &str) -> Option<VoiceInfo> {
        let voices = self.scopes.get_mut(scope)?;
        let gone = voices.remove(id);
        if voices.is_empty() {
            self.scopes.remove(scope);
        }
        gone
    }

    /// Voices and their bytes over all scopes.
    pub fn totals(&self) -> (usize, u64) {
        self.scopes
            .values()
            .flat_map(|m| m.values())
            .fold((0, 0), |(n, b), v| (n + 1, b + v.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voice(id: &str, name: &str, bytes: u64) -> VoiceInfo {
        VoiceInfo {
            voice_id: id.into(),
            name: name.into(),
            prompt_text: "t".into(),
            bytes,
            seconds: 1.0,
            created_unix_ms: 7,
        }
    }

    const QUOTA: Quota = Quota {
        max_count: 2,
        max_bytes: 100,
    };

    #[test]
    fn names_are_unique_and_the_same_audio_updates() {
        let voices = [voice("a1", "anna", 40)];
        assert_eq!(admit(&voices, "b2", "bob", 10, QUOTA), Ok(Admit::New));
        assert_eq!(
            admit(&voices, "a1", "anna2", 40, QUOTA),
            Ok(Admit::Update { created_unix_ms: 7 })
        );
        assert!(matches!(
            admit(&voices, "b2", "anna", 10, QUOTA),
            Err(VoiceError::NameTaken { by, .. }) if by == "a1"
        ));
    }

    #[test]
    fn quotas_count_voices_and_bytes_but_not_an_update() {
        let voices = [voice("a1", "anna", 40), voice("b2", "bob", 40)];
        assert_eq!(
            admit(&voices, "c3", "cleo", 1, QUOTA),
            Err(VoiceError::TooMany { max_count: 2 })
        );
        assert!(
            admit(&voices, "a1", "anna", 40, QUOTA).is_ok(),
            "an update is not a new voice"
        );
        let one = [voice("a1", "anna", 60)];
        assert_eq!(
            admit(&one, "c3", "cleo", 41, QUOTA),
            Err(VoiceError::TooLarge {
                max_bytes: 100,
                used: 60,
                adding: 41
            })
        );
        assert_eq!(admit(&one, "c3", "cleo", 40, QUOTA), Ok(Admit::New));
    }

    #[test]
    fn lookup_by_id_or_name_and_the_index_keeps_scopes_apart() {
        let mut index = Index::default();
        index.insert("tenant:a", voice("a1", "anna", 5));
        index.insert("tenant:b", voice("b2", "bob", 7));
        let a = index.list("tenant:a");
        assert_eq!(lookup(&a, "a1").map(|v| v.name.as_str()), Some("anna"));
        assert_eq!(lookup(&a, "anna").map(|v| v.voice_id.as_str()), Some("a1"));
        assert_eq!(lookup(&a, "b2"), None);
        assert!(index.has("tenant:b", "b2") && !index.has("tenant:a", "b2"));
        assert_eq!(index.totals(), (2, 12));
        assert_eq!(index.remove("tenant:b", "b2").map(|v| v.bytes), Some(7));
        assert_eq!(index.remove("tenant:b", "b2"), None);
        assert_eq!(index.totals(), (1, 5));
    }
}
