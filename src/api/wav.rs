//! WAV in and out, from the `cosygate-wav` crate (the one crate the gateway shares with the
//! simulator): PCM wrapped into an exact RIFF/WAVE file, bytes checked to be a whole WAV, and
//! conversions (mono, sample rate, raw PCM).

pub use cosygate_wav::{
    data_range, header_info, mono_f32, parse_wav, pcm16_header, pcm16_to_wav, resample, to_pcm16_mono,
    WavError, WavInfo, WAV_HEADER_LEN,
};
