//! Criterion micro-benchmarks of the gateway's per-request CPU work, through public APIs only:
//! parsing and validating `/generate` bodies (~2 KB sft, ~200 KB and ~10 MB zero-shot with a
//! prompt WAV), the cache key, the WAV checks (`parse_wav`, `header_info`) and wrapping PCM
//! into a WAV (`pcm16_to_wav`), and the degradation ladder's bookkeeping (`degrade`: a request's
//! approximate families, and finding a family's candidates in a full local index).
//!
//! Run with `cargo bench --bench hot_path` (add a filter to run some: `-- parse/`). `cargo
//! test` builds this file but does not run it; `cargo test --benches` runs each benchmark
//! once, as a smoke test. The numbers are in the README's "Micro-benchmarks".

use base64::Engine;
use cosygate::api::{GenerateRequest, RequestLimits};
use cosygate::cache::approx::{ApproxIndex, MAX_FAMILIES};
use cosygate::cache::key::{cache_key, prompt_sha256, Families};
use cosygate::cache::CacheKey;
use cosygate_wav::{header_info, parse_wav, pcm16_to_wav};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

/// CosyVoice 3's output rate, and the rate the prompt WAVs here are sampled at.
const RATE: u32 = 24_000;

/// Generous limits, so that every body here is valid: a 10 MB body's prompt is ~160 s of
/// 24 kHz audio, far over the default `limits.max_prompt_seconds`; the gateway would refuse it
/// after the same work, so the cost measured is the one a client can make it spend.
const LIMITS: RequestLimits = RequestLimits {
    max_text_chars: 4000,
    max_prompt_seconds: 600.0,
};

/// `bytes` of int16 mono PCM that is not silence (a fixed pseudo-random sequence), so that
/// base64 and sha256 see ordinary data.
fn pcm(bytes: usize) -> Vec<u8> {
    let mut state: u32 = 0x2545_f491;
    (0..bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// A WAV of about `bytes` bytes (a whole number of samples).
fn wav_of(bytes: usize) -> Vec<u8> {
    pcm16_to_wav(&pcm(bytes & !1), RATE).expect("an even PCM length wraps")
}

/// An sft body of about 2 KB: ~1,900 characters of text and a preset speaker.
fn sft_body() -> Vec<u8> {
    let sentence = "The quick brown fox jumps over the lazy dog, then rests a while. ";
    let text = sentence.repeat(1900 / sentence.len());
    serde_json::to_vec(&serde_json::json!({
        "text": text, "mode": "sft", "spk_id": "English Female", "seed": 7,
    }))
    .expect("json")
}

/// A zero-shot body of about `bytes` bytes, most of it the base64 of a prompt WAV.
fn zero_shot_body(bytes: usize) -> Vec<u8> {
    let wav = wav_of(bytes / 4 * 3);
    let audio = base64::engine::general_purpose::STANDARD.encode(&wav);
    serde_json::to_vec(&serde_json::json!({
        "text": "Hello there, this is a test of the edge gateway.",
        "mode": "zero_shot",
        "prompt_text": "What the prompt says, word for word.",
        "prompt_audio": audio,
        "seed": 7,
    }))
    .expect("json")
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    let bodies = [
        ("sft_2KB", sft_body()),
        ("zero_shot_200KB", zero_shot_body(200_000)),
        ("zero_shot_10MB", zero_shot_body(10_000_000)),
    ];
    for (name, body) in &bodies {
        GenerateRequest::parse(body, LIMITS).expect("the bench body is valid");
        if body.len() > 1_000_000 {
            group.sample_size(20);
        }
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), body, |b, body| {
            b.iter(|| GenerateRequest::parse(black_box(body), LIMITS));
        });
    }
    group.finish();
}

fn key(c: &mut Criterion) {
    let mut group = c.benchmark_group("cache_key");
    let requests = [
        ("sft_2KB", sft_body()),
        ("zero_shot_200KB", zero_shot_body(200_000)),
    ];
    for (name, body) in &requests {
        let req = GenerateRequest::parse(body, LIMITS).expect("the bench body is valid");
        let hashed = req.text.len() + req.prompt_audio.as_ref().map_or(0, |a| a.len());
        group.throughput(Throughput::Bytes(hashed as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &req, |b, req| {
            b.iter(|| cache_key(None, black_box("default"), "cosyvoice3", black_box(req)));
        });
    }
    group.finish();
}

fn wav(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_wav");
    for (name, bytes) in [("200KB", 200_000), ("2MB", 2_000_000)] {
        let wav = wav_of(bytes);
        parse_wav(&wav).expect("a valid WAV");
        group.throughput(Throughput::Bytes(wav.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &wav, |b, wav| {
            b.iter(|| parse_wav(black_box(wav)));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("header_info");
    let wav = wav_of(2_000_000);
    header_info(&wav).expect("a valid WAV");
    group.bench_function("2MB", |b| b.iter(|| header_info(black_box(&wav))));
    group.finish();

    let mut group = c.benchmark_group("pcm16_to_wav");
    for seconds in [1, 10] {
        let samples = pcm(RATE as usize * 2 * seconds);
        group.throughput(Throughput::Bytes(samples.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{seconds}s")),
            &samples,
            |b, samples| b.iter(|| pcm16_to_wav(black_box(samples), RATE)),
        );
    }
    group.finish();
}

fn degrade(c: &mut Criterion) {
    let mut group = c.benchmark_group("degrade");
    let req = GenerateRequest::parse(&sft_body(), LIMITS).expect("the bench body is valid");
    let prompt = prompt_sha256(&req);
    group.bench_function("families_sft_2KB", |b| {
        b.iter(|| {
            Families::of(
                None,
                "anonymous",
                black_box("default"),
                "cosyvoice3",
                black_box(&req),
                &prompt,
            )
        });
    });
    // The local index at its bound: every lookup of a stored family, as a rung makes it.
    let index = ApproxIndex::default();
    let key = |n: usize, tag: u8| {
        let mut k = [tag; 32];
        k[..8].copy_from_slice(&(n as u64).to_le_bytes());
        CacheKey(k)
    };
    for n in 0..MAX_FAMILIES / 2 {
        let families = Families {
            same_voice: key(n, 1),
            same_text: key(n, 2),
        };
        index.file(key(n, 3), families);
    }
    let mut n = 0;
    group.bench_function("candidates_in_a_full_index", |b| {
        b.iter(|| {
            n = (n + 7919) % (MAX_FAMILIES / 2);
            black_box(index.candidates(&key(n, 1)))
        });
    });
    group.finish();
}

criterion_group!(hot_path, parse, key, wav, degrade);
criterion_main!(hot_path);
