//! Deterministic PCM: the audio is a pure function of (spoken text, sha256 of the prompt WAV,
//! seed, speed). The text is cut into segments as CosyVoice's frontend does (sentences,
//! grouped up to a size): each segment is synthesized on its own and is one streamed chunk.
//! Length follows the script: about 0.25 s per CJK character, 0.07 s per other letter or
//! digit; punctuation and spaces are silent, so a text without a speakable character has no
//! segment at all (CosyVoice answers it with an empty body). A cheap voice-like signal (a glottal pitch with a few harmonics shaped by
//! vowel-like weights, syllable envelopes, pauses between words) seeded from SHA-256 through a
//! SplitMix64 generator, so it is stable across Rust and crate versions.

use sha2::{Digest, Sha256};

/// The token CosyVoice3 needs between the instruction and the transcript.
pub const ENDOFPROMPT: &str = "<|endofprompt|>";

/// Seconds of audio per CJK character (Han, kana, hangul) at speed 1.0.
pub const SECONDS_PER_CJK_CHAR: f64 = 0.25;
/// Seconds of audio per other speakable character (Latin and other letters, digits).
pub const SECONDS_PER_OTHER_CHAR: f64 = 0.07;
/// A segment grows by whole sentences while it is under this many units (a CJK character or
/// a word of another script is one unit), as CosyVoice's `split_paragraph` (`token_min_n`).
pub const SEGMENT_MIN_UNITS: usize = 60;
/// ... and never past this many (`token_max_n`), unless one sentence alone is longer.
pub const SEGMENT_MAX_UNITS: usize = 80;
/// A last segment shorter than this joins the one before (`merge_len`).
pub const SEGMENT_MERGE_UNITS: usize = 20;

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

/// Whether a character is CJK (spoken at [`SECONDS_PER_CJK_CHAR`]).
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF       // hiragana, katakana
        | 0x3400..=0x4DBF     // CJK extension A
        | 0x4E00..=0x9FFF     // CJK unified ideographs
        | 0xAC00..=0xD7AF     // hangul syllables
        | 0xF900..=0xFAFF     // CJK compatibility ideographs
        | 0x20000..=0x2FFFF) // CJK extensions B..
}

/// Whether a character is spoken at all (a letter or digit of any script).
pub fn is_speakable(c: char) -> bool {
    c.is_alphanumeric()
}

/// Whether any character of the spoken part of `text` is speakable.
pub fn has_speakable(text: &str) -> bool {
    spoken_text(text).chars().any(is_speakable)
}

fn valid_speed(speed: f64) -> f64 {
    if speed.is_finite() && speed > 0.0 {
        speed
    } else {
        1.0
    }
}

/// Length of `text`'s audio in seconds (punctuation and spaces are silent), at `speed`.
pub fn duration_secs(text: &str, speed: f64) -> f64 {
    let secs: f64 = text
        .chars()
        .filter(|&c| is_speakable(c))
        .map(|c| {
            if is_cjk(c) {
                SECONDS_PER_CJK_CHAR
            } else {
                SECONDS_PER_OTHER_CHAR
            }
        })
        .sum();
    secs / valid_speed(speed)
}

/// Units of a piece of text for segment sizes: CJK characters, plus words of other scripts.
fn units(text: &str) -> usize {
    let mut n = 0;
    let mut in_word = false;
    for c in text.chars() {
        if is_cjk(c) {
            n += 1;
            in_word = false;
        } else if is_speakable(c) {
            if !in_word {
                n += 1;
            }
            in_word = true;
        } else {
            in_word = false;
        }
    }
    n
}

fn ends_sentence(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '。' | '！' | '？' | ';' | '；' | '\n' | '…')
}

/// The segments of the spoken part of `text`, in order: sentences grouped up to
/// [`SEGMENT_MAX_UNITS`]; sentences without a speakable character are dropped. Empty when
/// nothing is speakable.
pub fn segments(text: &str) -> Vec<&str> {
    let spoken = spoken_text(text);
    let mut sentences = Vec::new();
    let mut start = 0;
    let mut iter = spoken.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        // A run of terminators ("?!", "...") ends one sentence.
        let next_ends = iter.peek().is_some_and(|&(_, n)| ends_sentence(n));
        if ends_sentence(c) && !next_ends {
            let end = i + c.len_utf8();
            sentences.push(&spoken[start..end]);
            start = end;
        }
    }
    sentences.push(&spoken[start..]);
    let mut out: Vec<(usize, usize, usize)> = Vec::new(); // (start, end, units) in `spoken`
    let base = spoken.as_ptr() as usize;
    for s in sentences.into_iter().filter(|s| s.chars().any(is_speakable)) {
        let (s_start, s_units) = (s.as_ptr() as usize - base, units(s));
        let s_end = s_start + s.len();
        match out.last_mut() {
            Some(last) if last.2 < SEGMENT_MIN_UNITS && last.2 + s_units <= SEGMENT_MAX_UNITS => {
                last.1 = s_end;
                last.2 += s_units;
            }
            _ => out.push((s_start, s_end, s_units)),
        }
    }
    if out.len() > 1 && out.last().is_some_and(|l| l.2 < SEGMENT_MERGE_UNITS) {
        if let Some((_, end, u)) = out.pop() {
            if let Some(last) = out.last_mut() {
                last.1 = end;
                last.2 += u;
            }
        }
    }
    out.into_iter().map(|(a, b, _)| spoken[a..b].trim()).collect()
}

/// Number of sample frames for `key` at `sample_rate`.
pub fn frame_count(key: &AudioKey<'_>, sample_rate: u32) -> usize {
    (duration_secs(spoken_text(key.text), key.speed) * f64::from(sample_rate)).round() as usize
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
    h.update(b"cosyvoice-sim audio v2\0");
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

/// Synthesizes `key.text` (one segment, or a whole text for `/generate`): raw int16 little-endian mono PCM at `sample_rate`.
pub fn synthesize(key: &AudioKey<'_>, sample_rate: u32) -> Vec<u8> {
    let frames = frame_count(key, sample_rate);
    let sr = f64::from(sample_rate.max(1));
    let speed = valid_speed(key.speed);
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
    fn length_follows_script_and_speed_and_ignores_the_instruction() {
        assert_eq!(duration_secs("", 1.0), 0.0);
        assert_eq!(duration_secs("... ,!", 1.0), 0.0);
        assert!((duration_secs(&"x".repeat(100), 1.0) - 7.0).abs() < 1e-9);
        assert!((duration_secs(&"x".repeat(100), 2.0) - 3.5).abs() < 1e-9);
        assert!((duration_secs("你好，世界。", 1.0) - 1.0).abs() < 1e-9);
        assert_eq!(spoken_text("Be calm.<|endofprompt|>Hi."), "Hi.");
        let plain = synthesize(&key("Bonjour.", 3), 16000);
        let marked = synthesize(
            &key("You are a helpful assistant.<|endofprompt|>Bonjour.", 3),
            16000,
        );
        assert_eq!(plain, marked);
        assert!(!has_speakable("Say<|endofprompt|> ...!"));
        assert!(has_speakable("。好"));
    }

    #[test]
    fn segments_group_sentences() {
        assert!(segments("").is_empty());
        assert!(segments(" ?! 。").is_empty());
        assert_eq!(segments("Hi there. How are you?"), vec!["Hi there. How are you?"]);
        let long = "This sentence has exactly ten words in it, you see. ".repeat(12);
        let segs = segments(&long);
        assert_eq!(segs.len(), 2, "{segs:?}");
        assert_eq!(segs.iter().map(|s| units(s)).sum::<usize>(), 120);
        assert!(segs.iter().all(|s| units(s) <= SEGMENT_MAX_UNITS));
        let zh = "今天天气很好。".repeat(30);
        let segs = segments(&zh);
        assert!(segs.len() >= 2 && segs.iter().all(|s| units(s) <= SEGMENT_MAX_UNITS));
        assert_eq!(segments("A.<|endofprompt|>One. Two!"), vec!["One. Two!"]);
    }
}
