//! Registered voices: a prompt sample and its transcript stored once (`POST /v1/voices`) and
//! named by `voice_id` (the sha256 of the sample's bytes) or by name afterwards, so clients do
//! not upload the same sample with every sentence. Per caller scope (tenant), with quotas.
//!
//! (Skeleton: the store is filled in by the voices work; until then no voice is ever found.)

use bytes::Bytes;

/// One registered voice, as synthesis needs it.
#[derive(Debug, Clone)]
pub struct Voice {
    /// Hex sha256 of `prompt_audio` (64 characters).
    pub id: String,
    pub name: String,
    /// The validated WAV sample.
    pub prompt_audio: Bytes,
    pub prompt_text: String,
}

/// Every registered voice this gateway can see.
#[derive(Debug, Default)]
pub struct VoiceStore {}

#[allow(clippy::unused_async)] // skeleton
impl VoiceStore {
    /// The voice `id_or_name` (a voice id, or a name) registered in `scope` (see
    /// `Caller::cache_scope`), if any.
    pub async fn find(&self, scope: &str, id_or_name: &str) -> Option<Voice> {
        let _ = (scope, id_or_name);
        None
    }
}
