//! Deterministic PCM: the audio is a pure function of (spoken text, sha256 of the prompt WAV,
//! seed, speed). A cheap voice-like signal (a glottal pitch with a few harmonics shaped by
//! vowel-like weights, syllable envelopes, pauses between words) seeded from SHA-256 through a
//! SplitMix64 generator, so it is stable across Rust and crate versions.

use sha2::{Digest, Sha256};

/// The token CosyVoice3 needs between the instruction and the transcript.
pub const ENDOFPROMPT: &str = "<|endofprompt|>";

/// Seconds of audio per character of spoken text (at speed 1.0).
pub const SECONDS_PER_CHAR: f64 = 0.06;
/// The shortest utterance (at speed 1.0).
pub const MIN_SECONDS: f64 = 0.5;
/// Audio per streamed chunk, in seconds.
pub const CHUNK_SECONDS: f64 = 0.5;

/// Everything the audio depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioKey<'a> {
    /// The text as sent (an instruction prefix ending in `<|endofprompt|>` is not spoken).
    pub text: &'a str,
    /// SHA-256 of the prompt WAV bytes, when there is one.
    pub prompt_sha256: Option<[u8; 32]>,
    pub seed: u64,
    pub speed: f64,
}

/// The part of `text` that is spoken: whatever follows the last `<|endofprompt|>`.
pub fn spoken_text(text: &str) -> &str {
    match text.rfind(ENDOFPROMPT) {
        Some(i) => &text[i + ENDOFPROMPT.len()..],
        None => text,
    }
}

/// The voice identity of a preset (SFT) speaker, used where a prompt WAV's digest would be.
pub fn speaker_voice(spk_id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"cosyvoice-sim speaker\0");
    h.update(spk_id.as_bytes());
    h.finalize().into()
}

/// Length of the utterance in seconds: grows with the spoken text, shrinks with speed.
pub fn duration_secs(text: &str, speed: f64) -> f64 {
    let chars = spoken_text(text).chars().count() as f64;
    let speed = if speed.is_finite() && speed > 0.0 {
        speed
    } else {
        1.0
    };
    (chars * SECONDS_PER_CHAR).max(MIN_SECONDS) / speed
}

/// Number of sample frames for `key` at `sample_rate`.
pub fn frame_count(key: &AudioKey<'_>, sample_rate: u32) -> usize {
    (duration_secs(key.text, key.speed) * f64::from(sample_rate)).round() as usize
}

/// Bytes of PCM per streamed chunk (an even number, at least one sample).
pub fn chunk_bytes(sample_rate: u32) -> usize {
    ((f64::from(sample_rate) * CHUNK_SECONDS).round() as usize).max(1) * 2
}

/// A small generator with a fixed, documented algorithm (SplitMix64).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

fn seed_of(key: &AudioKey<'_>) -> u64 {
    let mut h = Sha256::new();
    h.update(b"cosyvoice-sim audio v1\0");
    h.update(spoken_text(key.text).as_bytes());
    h.update([0u8]);
    match &key.prompt_sha256 {
        Some(sha) => {
            h.update([1u8]);
            h.update(sha);
        }
        None => h.update([0u8]),
    }
    h.update(key.seed.to_le_bytes());
    h.update(key.speed.to_bits().to_le_bytes());
    let d = h.finalize();
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// Relative weights of harmonics 1..=6 for a few vowel-like timbres.
const VOWELS: [[f64; 6]; 5] = [
    [1.0, 0.7, 0.5, 0.2, 0.1, 0.05],   // a
    [1.0, 0.3, 0.1, 0.3, 0.4, 0.2],    // i
    [1.0, 0.8, 0.2, 0.05, 0.02, 0.01], // u
    [1.0, 0.5, 0.6, 0.3, 0.1, 0.05],   // e
    [1.0, 0.9, 0.4, 0.1, 0.05, 0.02],  // o
];

/// Synthesizes the utterance: raw int16 little-endian mono PCM at `sample_rate`.
pub fn synthesize(key: &AudioKey<'_>, sample_rate: u32) -> Vec<u8> {
    let frames = frame_count(key, sample_rate);
    let sr = f64::from(sample_rate.max(1));
    let speed = if key.speed.is_finite() && key.speed > 0.0 {
        key.speed
    } else {
        1.0
    };
    let mut rng = SplitMix64(seed_of(key));
    let base_pitch = rng.range(95.0, 235.0);
    let mut out = Vec::with_capacity(frames * 2);

    let mut pitch = base_pitch;
    let mut phase = 0.0f64;
    let mut noise = SplitMix64(rng.next_u64());
    let mut written = 0usize;
    while written < frames {
        // One syllable, sometimes followed by a pause between words.
        let len = ((rng.range(0.12, 0.30) / speed) * sr) as usize;
        let len = len.clamp(1, frames - written);
        let target = base_pitch * rng.range(0.85, 1.18);
        let amp = rng.range(0.35, 0.75);
        let vowel = VOWELS[(rng.next_u64() % VOWELS.len() as u64) as usize];
        let onset_noise = rng.range(0.0, 0.25);
        for i in 0..len {
            let x = i as f64 / len as f64;
            let t = (written + i) as f64 / frames.max(1) as f64;
            // Glide towards the syllable's pitch, with a gentle declination over the utterance.
            pitch += (target * (1.08 - 0.16 * t) - pitch) * (30.0 / sr);
            phase += std::f64::consts::TAU * pitch / sr;
            if phase > std::f64::consts::TAU {
                phase -= std::f64::consts::TAU;
            }
            // Harmonics by the Chebyshev recurrence: two trig calls per sample.
            let (s1, c1) = phase.sin_cos();
            let (mut prev, mut cur) = (0.0, s1);
            let mut voiced = 0.0;
            for w in vowel {
                voiced += w * cur;
                let next = 2.0 * c1 * cur - prev;
                prev = cur;
                cur = next;
            }
            let env = (std::f64::consts::PI * x).sin();
            let hiss = if x < 0.15 {
                (noise.unit() * 2.0 - 1.0) * onset_noise * (1.0 - x / 0.15)
            } else {
                0.0
            };
            let v = (voiced * 0.3 * env * amp + hiss * 0.3) * 32767.0;
            let s = v.round().clamp(-32768.0, 32767.0) as i16;
            out.extend_from_slice(&s.to_le_bytes());
        }
        written += len;
        if written < frames && rng.unit() < 0.25 {
            let pause = ((rng.range(0.05, 0.12) / speed) * sr) as usize;
            let pause = pause.min(frames - written);
            out.resize(out.len() + pause * 2, 0);
            written += pause;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str, seed: u64) -> AudioKey<'_> {
        AudioKey {
            text,
            prompt_sha256: Some([7; 32]),
            seed,
            speed: 1.0,
        }
    }

    #[test]
    fn deterministic_and_sensitive_to_every_input() {
        let a = synthesize(&key("Hello there, world.", 0), 24000);
        assert_eq!(a, synthesize(&key("Hello there, world.", 0), 24000));
        assert_ne!(a, synthesize(&key("Hello there, world.", 1), 24000));
        assert_ne!(a, synthesize(&key("Hello there, world!", 0), 24000));
        let mut other_prompt = key("Hello there, world.", 0);
        other_prompt.prompt_sha256 = None;
        assert_ne!(a, synthesize(&other_prompt, 24000));
        assert_eq!(a.len(), frame_count(&key("Hello there, world.", 0), 24000) * 2);
        assert!(a.iter().any(|&b| b != 0), "not silence");
    }

    #[test]
    fn length_follows_text_and_speed_and_ignores_the_instruction() {
        assert_eq!(duration_secs("", 1.0), MIN_SECONDS);
        assert!((duration_secs(&"x".repeat(100), 1.0) - 6.0).abs() < 1e-9);
        assert!((duration_secs(&"x".repeat(100), 2.0) - 3.0).abs() < 1e-9);
        assert_eq!(spoken_text("Be calm.<|endofprompt|>Hi."), "Hi.");
        let plain = synthesize(&key("Bonjour.", 3), 16000);
        let marked = synthesize(
            &key("You are a helpful assistant.<|endofprompt|>Bonjour.", 3),
            16000,
        );
        assert_eq!(plain, marked);
        assert_eq!(chunk_bytes(24000), 24000);
    }
}
