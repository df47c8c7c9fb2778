//! Sample-rate conversion: prompts to a model's input rate (Triton's 16 kHz), waveforms to a pool's
//! `sample_rate`, and any answer to the rate a raw-PCM client expects.
//!
//! A plain band-limited (windowed-sinc) resampler with a precomputed table per output phase:
//! exact for any pair of integer rates, O(output × taps), no state between calls. Written here
//! instead of taking a DSP crate because one offline mono conversion per request is all that is
//! needed (the prompt, at most 30 s).

use std::f64::consts::PI;

/// Zero crossings of the sinc on each side: stop-band ~ -60 dB with the Blackman window.
const ZERO_CROSSINGS: f64 = 16.0;
/// Fraction of the lower Nyquist frequency kept (the rest is the transition band).
const PASSBAND: f64 = 0.95;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// `input` (mono, at `from` Hz) at `to` Hz. Equal rates return a copy.
pub fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || input.is_empty() || from == 0 || to == 0 {
        return input.to_vec();
    }
    let g = gcd(u64::from(from), u64::from(to));
    // Output sample j sits at input position j * up / down... expressed as from/to in lowest terms.
    let up = u64::from(to) / g; // output phases
    let down = u64::from(from) / g;
    // Cutoff relative to the input's Nyquist frequency.
    let cutoff = (f64::from(to) / f64::from(from)).min(1.0) * PASSBAND;
    let half = (ZERO_CROSSINGS / cutoff).ceil() as i64;
    let taps = usize::try_from(2 * half).unwrap_or(0);
    // table[phase][k]: weight of input sample (base - half + 1 + k) for output phase `phase`,
    // where the output's position is base + phase/up.
    let phases = usize::try_from(up).unwrap_or(1);
    let mut table = vec![0f32; phases * taps];
    for phase in 0..phases {
        let frac = phase as f64 / up as f64;
        let row = &mut table[phase * taps..(phase + 1) * taps];
        let mut sum = 0.0;
        let mut weights = vec![0f64; taps];
        for (k, w) in weights.iter_mut().enumerate() {
            let offset = (k as i64 - half + 1) as f64 - frac;
            let x = offset * cutoff;
            let sinc = if x.abs() < 1e-12 {
                1.0
            } else {
                (PI * x).sin() / (PI * x)
            };
            let t = offset / half as f64; // -1..1
            let window = if t.abs() >= 1.0 {
                0.0
            } else {
                0.42 + 0.5 * (PI * t).cos() + 0.08 * (2.0 * PI * t).cos()
            };
            *w = sinc * window;
            sum += *w;
        }
        // Unity gain at DC for every phase.
        for (r, w) in row.iter_mut().zip(&weights) {
            *r = (w / sum) as f32;
        }
    }
    let out_len = (input.len() as u128 * u128::from(up) / u128::from(down)) as usize;
    let n = input.len() as i64;
    let mut out = Vec::with_capacity(out_len);
    for j in 0..out_len as u64 {
        let pos = j * down;
        let base = (pos / up) as i64;
        let phase = usize::try_from(pos % up).unwrap_or(0);
        let row = &table[phase * taps..(phase + 1) * taps];
        let start = base - half + 1;
        let mut acc = 0f32;
        for (k, w) in row.iter().enumerate() {
            let i = start + k as i64;
            if (0..n).contains(&i) {
                acc += input[i as usize] * w;
            }
        }
        out.push(acc);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, rate: u32, secs: f64) -> Vec<f32> {
        let n = (secs * f64::from(rate)) as usize;
        (0..n)
            .map(|i| (0.5 * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()) as f32)
            .collect()
    }

    fn rms(x: &[f32]) -> f64 {
        (x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
    }

    #[test]
    fn lengths_follow_the_rate_ratio() {
        for (from, to) in [
            (48000, 16000),
            (44100, 16000),
            (22050, 16000),
            (24000, 22050),
            (16000, 16000),
        ] {
            let out = resample(&vec![0.0; from as usize], from, to);
            assert_eq!(out.len(), to as usize, "{from} -> {to}");
        }
    }

    #[test]
    fn a_tone_in_the_passband_keeps_its_level_and_one_above_is_removed() {
        // 1 kHz survives 44.1 kHz -> 16 kHz; 12 kHz (above the new 8 kHz Nyquist) is filtered.
        let kept = resample(&tone(1000.0, 44100, 1.0), 44100, 16000);
        let mid = &kept[1000..15000];
        assert!((rms(mid) - 0.5 / 2f64.sqrt()).abs() < 0.01, "rms {}", rms(mid));
        let gone = resample(&tone(12000.0, 44100, 1.0), 44100, 16000);
        assert!(
            rms(&gone[1000..15000]) < 0.01,
            "alias rms {}",
            rms(&gone[1000..15000])
        );
        // And the compared sample values of the kept tone are right, not just its level.
        let expected = tone(1000.0, 16000, 1.0);
        let worst = mid
            .iter()
            .zip(&expected[1000..15000])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 0.01, "worst sample error {worst}");
    }
}
