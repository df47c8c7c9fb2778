//! Registered voices: how many this instance holds on disk, and their bytes.

use super::{metric, opts};
use prometheus::IntGauge;

metric! {
    /// Voices in this instance's voice directory (all scopes).
    VOICES: IntGauge = IntGauge::with_opts(opts(
        "cosygate_voices",
        "Registered voices held by this instance (all tenants)",
    ))
}

metric! {
    /// WAV bytes of the voices in this instance's voice directory.
    VOICE_BYTES: IntGauge = IntGauge::with_opts(opts(
        "cosygate_voice_bytes",
        "WAV bytes of the registered voices held by this instance",
    ))
}

pub(super) fn touch() {
    let _ = (&*VOICES, &*VOICE_BYTES);
}
