//! What the properties check against and build from: the parser's limits, the README's error
//! codes and statuses, the request fields, the proptest config, and valid WAVs of every shape.

use base64::Engine;
use cosygate::api::RequestLimits;
use proptest::test_runner::Config;
use std::io::Cursor;
use std::sync::OnceLock;

pub const LIMITS: RequestLimits = RequestLimits {
    max_text_chars: 200,
    max_prompt_seconds: 30.0,
};

/// The request-level codes of the README's error table (those `parse` can produce).
pub const README_CODES: &[&str] = &[
    "invalid_json",
    "unknown_field",
    "duplicate_field",
    "missing_field",
    "invalid_field",
    "invalid_mode",
    "invalid_base64",
    "invalid_prompt_audio",
    "forbidden_characters",
    "empty_text",
    "text_too_long",
    "speed_out_of_range",
    "sample_rate_too_low",
    "prompt_too_long",
    "field_too_long",
];
pub const STATUSES: &[u16] = &[400, 413, 415, 422];

pub const FIELDS: &[&str] = &[
    "text",
    "mode",
    "prompt_audio",
    "prompt_text",
    "instruct_text",
    "spk_id",
    "seed",
    "speed",
];

pub fn config(cases: u32) -> Config {
    Config {
        cases,
        // Shrunk failures are printed; no regression files are written into the tree.
        failure_persistence: None,
        ..Config::default()
    }
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A short WAV in each accepted format: (rate, channels, bits, float).
pub fn valid_wavs() -> &'static [Vec<u8>] {
    static WAVS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    WAVS.get_or_init(|| {
        [
            (16000, 1, 16, false),
            (24000, 2, 16, false),
            (44100, 1, 24, false),
            (22050, 2, 8, false),
            (16000, 1, 32, false),
            (48000, 1, 32, true),
        ]
        .into_iter()
        .map(|(rate, channels, bits, float)| wav(rate, channels, bits, float, rate / 20))
        .collect()
    })
}

pub fn wav(sample_rate: u32, channels: u16, bits: u16, float: bool, frames: u32) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels,
        sample_rate,
        bits_per_sample: bits,
        sample_format: if float {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        },
    };
    let mut out = Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut out, spec).expect("writer");
    for i in 0..frames * u32::from(channels) {
        let x = ((i as f32) * 0.05).sin() * 0.5;
        if float {
            w.write_sample(x).expect("sample");
        } else {
            let max = (1i64 << (bits - 1)) - 1;
            w.write_sample((f64::from(x) * max as f64) as i32)
                .expect("sample");
        }
    }
    w.finalize().expect("finalize");
    out.into_inner()
}
