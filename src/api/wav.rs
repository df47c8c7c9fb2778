//! WAV in and out, from the `cosygate-wav` crate (the one crate the gateway shares with the
//! simulator): PCM wrapped into an exact RIFF/WAVE file, and bytes checked to be a whole WAV.

pub use cosygate_wav::{header_info, parse_wav, pcm16_to_wav, WavError, WavInfo, WAV_HEADER_LEN};
