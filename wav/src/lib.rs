//! WAV in and out: wrapping raw PCM into a RIFF/WAVE file with exact sizes, and checking that
//! bytes which claim to be a WAV really are one (header, sizes, every sample readable).
//!
//! The one crate the gateway (`cosygate`: prompt audio, backend answers) and the simulator
//! (`cosyvoice-sim`) share; nothing here knows about HTTP. The gateway re-exports it as
//! `cosygate::api::wav`.

mod resample;

pub use resample::resample;
use std::io::Cursor;

/// Size of the canonical 44-byte PCM WAV header that [`pcm16_to_wav`] writes.
pub const WAV_HEADER_LEN: usize = 44;

/// What a parsed WAV says about itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WavInfo {
    pub sample_rate: u32,
    pub channels: u16,
    pub bits_per_sample: u16,
    /// Sample frames (one sample per channel).
    pub frames: u32,
}

impl WavInfo {
    /// Length of the audio in seconds.
    pub fn duration_secs(&self) -> f64 {
        f64::from(self.frames) / f64::from(self.sample_rate.max(1))
    }
}

/// Why some bytes are not an acceptable WAV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WavError(pub String);

impl std::fmt::Display for WavError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WavError {}

/// Wraps raw int16 little-endian mono PCM (what CosyVoice's FastAPI server streams) into a
/// complete WAV file with correct RIFF and data sizes. An odd trailing byte is an error: it
/// means the stream was cut in the middle of a sample.
pub fn pcm16_to_wav(pcm: &[u8], sample_rate: u32) -> Result<Vec<u8>, WavError> {
    if !pcm.len().is_multiple_of(2) {
        return Err(WavError(format!(
            "PCM stream has an odd length ({} bytes): cut inside a sample",
            pcm.len()
        )));
    }
    // The samples are little-endian int16 already, as a WAV stores them: header + a copy.
    let len = u32::try_from(pcm.len())
        .ok()
        .filter(|n| n.checked_add(36).is_some())
        .ok_or_else(|| WavError("PCM stream too long for a WAV file".into()))?;
    let mut out = Vec::with_capacity(WAV_HEADER_LEN + pcm.len());
    out.extend_from_slice(&pcm16_header(sample_rate, 1, Some(len)));
    out.extend_from_slice(pcm);
    Ok(out)
}

/// What a WAV's header says (format, length), without reading its samples: for a WAV this
/// process made or already checked with [`parse_wav`]. O(header), not O(samples).
pub fn header_info(bytes: &[u8]) -> Result<WavInfo, WavError> {
    let reader =
        hound::WavReader::new(Cursor::new(bytes)).map_err(|e| WavError(format!("invalid WAV: {e}")))?;
    let spec = reader.spec();
    Ok(WavInfo {
        sample_rate: spec.sample_rate,
        channels: spec.channels,
        bits_per_sample: spec.bits_per_sample,
        frames: reader.duration(),
    })
}

/// Parses and checks a WAV file: the RIFF size matches the byte count, the format is PCM
/// (integer or 32-bit float) as hound reads it, and the data chunk lies whole inside the file
/// and holds whole sample frames. O(header): every sample of a data chunk of the right size is
/// readable (any bit pattern is a valid PCM sample), so the samples are not decoded.
pub fn parse_wav(bytes: &[u8]) -> Result<WavInfo, WavError> {
    if bytes.len() < WAV_HEADER_LEN || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(WavError("not a RIFF/WAVE file".into()));
    }
    let riff_size = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    if riff_size != bytes.len() - 8 {
        return Err(WavError(format!(
            "RIFF header says {} bytes follow, the file has {}",
            riff_size,
            bytes.len() - 8
        )));
    }
    let reader =
        hound::WavReader::new(Cursor::new(bytes)).map_err(|e| WavError(format!("invalid WAV: {e}")))?;
    let spec = reader.spec();
    let (start, declared) = data_chunk(bytes).ok_or_else(|| WavError("no data chunk".into()))?;
    let available = bytes.len() - start;
    if declared > available {
        return Err(WavError(format!(
            "data chunk claims {declared} bytes, the file has {available} after its header"
        )));
    }
    let supported = match spec.sample_format {
        hound::SampleFormat::Int => matches!(spec.bits_per_sample, 8 | 16 | 24 | 32),
        hound::SampleFormat::Float => spec.bits_per_sample == 32,
    };
    if !supported || spec.channels == 0 {
        return Err(WavError(format!(
            "unsupported sample format: {} channels of {} bits",
            spec.channels, spec.bits_per_sample
        )));
    }
    let frame = usize::from(spec.bits_per_sample / 8) * usize::from(spec.channels);
    if !declared.is_multiple_of(frame) {
        return Err(WavError(format!(
            "data chunk of {declared} bytes ends inside a sample frame of {frame} bytes"
        )));
    }
    let frames = reader.duration();
    if frames as usize * frame != declared {
        return Err(WavError(format!(
            "the header's {frames} frames do not fill the {declared}-byte data chunk"
        )));
    }
    Ok(WavInfo {
        sample_rate: spec.sample_rate,
        channels: spec.channels,
        bits_per_sample: spec.bits_per_sample,
        frames,
    })
}

/// The data chunk's start and declared length (not clamped to the file).
fn data_chunk(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut at = 12usize;
    while at.checked_add(8)? <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().ok()?) as usize;
        let body = at + 8;
        if id == b"data" {
            return Some((body, len));
        }
        at = body.checked_add(len)?.checked_add(len % 2)?;
    }
    None
}

/// The 44-byte header of a 16-bit PCM WAV at `sample_rate` with `channels`. With
/// `data_len: None` it is a *streaming* header: the RIFF and data sizes are `0xFFFFFFFF`
/// ("unknown length", as OpenAI and most streaming TTS servers send; players read to the end).
pub fn pcm16_header(sample_rate: u32, channels: u16, data_len: Option<u32>) -> [u8; WAV_HEADER_LEN] {
    let block_align = channels.saturating_mul(2);
    let byte_rate = sample_rate.saturating_mul(u32::from(block_align));
    let (riff_len, data_len) = match data_len {
        Some(n) => (n.saturating_add(36), n),
        None => (u32::MAX, u32::MAX),
    };
    let mut h = [0u8; WAV_HEADER_LEN];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&riff_len.to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&sample_rate.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

/// A WAV's samples (int of any width, or float; any channel count) as mono floats in -1..1,
/// channels averaged, with the WAV's sample rate. Reads every sample: for a WAV already checked.
pub fn mono_f32(bytes: &[u8]) -> Result<(Vec<f32>, u32), WavError> {
    let bad = |e: hound::Error| WavError(format!("invalid WAV: {e}"));
    let reader = hound::WavReader::new(Cursor::new(bytes)).map_err(bad)?;
    let spec = reader.spec();
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .into_samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(bad)?,
        hound::SampleFormat::Int => {
            let scale = 2f32.powi(i32::from(spec.bits_per_sample.clamp(1, 32)) - 1);
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| v as f32 / scale))
                .collect::<Result<_, _>>()
                .map_err(bad)?
        }
    };
    let channels = usize::from(spec.channels.max(1));
    let mono = interleaved
        .chunks(channels)
        .map(|frame| frame.iter().sum::<f32>() / frame.len() as f32)
        .collect();
    Ok((mono, spec.sample_rate))
}

/// Where a WAV's sample data starts and how long it is, from its chunks (`fmt ` may be followed
/// by others, such as `LIST`), clamped to the file. For a WAV already checked.
pub fn data_range(bytes: &[u8]) -> Option<std::ops::Range<usize>> {
    let (start, len) = data_chunk(bytes)?;
    Some(start..start.checked_add(len)?.min(bytes.len()))
}

/// A WAV as raw signed 16-bit little-endian mono PCM at `sample_rate`: a 16-bit mono WAV at
/// that rate is its data chunk as is; anything else is mixed down and resampled.
pub fn to_pcm16_mono(bytes: &[u8], sample_rate: u32) -> Result<Vec<u8>, WavError> {
    let info = header_info(bytes)?;
    if info.channels == 1 && info.bits_per_sample == 16 && info.sample_rate == sample_rate {
        if let Some(range) = data_range(bytes) {
            let mut pcm = bytes[range].to_vec();
            pcm.truncate(pcm.len() & !1);
            return Ok(pcm);
        }
    }
    let (mono, rate) = mono_f32(bytes)?;
    let at_rate = resample(&mono, rate, sample_rate);
    Ok(at_rate
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcm_round_trips_through_a_checked_wav() {
        let pcm: Vec<u8> = (0..4800i16).flat_map(|s| s.to_le_bytes()).collect();
        let wav = pcm16_to_wav(&pcm, 24000).expect("wav");
        assert_eq!(wav.len(), WAV_HEADER_LEN + pcm.len());
        assert_eq!(&wav[WAV_HEADER_LEN..], &pcm[..]);
        let info = parse_wav(&wav).expect("valid");
        assert_eq!((info.sample_rate, info.channels, info.frames), (24000, 1, 4800));
        assert!((info.duration_secs() - 0.2).abs() < 1e-9);
    }

    #[test]
    fn odd_pcm_and_cut_or_lying_wavs_are_refused() {
        assert!(pcm16_to_wav(&[1, 2, 3], 24000).is_err());
        let wav = pcm16_to_wav(&[0u8; 200], 16000).expect("wav");
        assert!(parse_wav(&wav[..wav.len() - 2]).is_err(), "cut file");
        let mut lying = wav.clone();
        lying[40] = 0xff; // data size larger than the file
        let riff = (lying.len() - 8) as u32;
        lying[4..8].copy_from_slice(&riff.to_le_bytes());
        assert!(parse_wav(&lying).is_err(), "lying data size");
        assert!(parse_wav(b"RIFF....WAVEfmt nothing at all here, really, no").is_err());
        let mut torn = pcm16_to_wav(&[0u8; 200], 16000).expect("wav");
        torn[40..44].copy_from_slice(&199u32.to_le_bytes()); // ends inside a sample
        torn.truncate(44 + 199);
        let riff = (torn.len() - 8) as u32;
        torn[4..8].copy_from_slice(&riff.to_le_bytes());
        assert!(
            parse_wav(&torn).is_err(),
            "a data chunk that ends inside a sample"
        );
        let stereo24 = {
            let spec = hound::WavSpec {
                channels: 2,
                sample_rate: 48000,
                bits_per_sample: 24,
                sample_format: hound::SampleFormat::Int,
            };
            let mut out = Cursor::new(Vec::new());
            let mut w = hound::WavWriter::new(&mut out, spec).expect("writer");
            for i in 0..960 {
                w.write_sample(i * 1000).expect("sample");
            }
            w.finalize().expect("finalize");
            out.into_inner()
        };
        let info = parse_wav(&stereo24).expect("24-bit stereo is fine");
        assert_eq!((info.channels, info.bits_per_sample, info.frames), (2, 24, 480));
    }

    #[test]
    fn pcm_answers_are_the_data_chunk_or_a_conversion() {
        let pcm: Vec<u8> = (0..2400i16).flat_map(|i| (i * 7).to_le_bytes()).collect();
        let wav = pcm16_to_wav(&pcm, 24000).expect("wav");
        assert_eq!(to_pcm16_mono(&wav, 24000).expect("same rate"), pcm);
        let halved = to_pcm16_mono(&wav, 12000).expect("resampled");
        assert_eq!(halved.len(), pcm.len() / 2, "half the rate, half the samples");
        assert_eq!(data_range(&wav), Some(WAV_HEADER_LEN..WAV_HEADER_LEN + pcm.len()));
        let by_hound = {
            let spec = hound::WavSpec {
                channels: 1,
                sample_rate: 24000,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            };
            let mut out = Cursor::new(Vec::new());
            let mut w = hound::WavWriter::new(&mut out, spec).expect("writer");
            for pair in pcm.chunks_exact(2) {
                w.write_sample(i16::from_le_bytes([pair[0], pair[1]]))
                    .expect("sample");
            }
            w.finalize().expect("finalize");
            out.into_inner()
        };
        assert_eq!(wav, by_hound, "the same bytes hound writes");
        let streaming = pcm16_header(24000, 1, None);
        assert_eq!(&streaming[4..8], &[0xFF; 4]);
        assert_eq!(&streaming[40..44], &[0xFF; 4]);
    }
}
