//! Property tests of the request parser and the WAV checker, in process (no binaries):
//! whatever bytes arrive, `GenerateRequest::parse` and `parse_wav` answer `Ok` or `Err` and
//! never panic; every refusal carries a documented status and code; every valid request is
//! accepted with its text trimmed and within the limits; and the injection rule (`check_text`)
//! refuses every C0 control character it is shown.

use base64::Engine;
use cosygate::api::request::{check_text, MAX_AUX_TEXT_CHARS, MAX_SPK_ID_CHARS};
use cosygate::api::wav::parse_wav;
use cosygate::api::{GenerateRequest, InvalidKind, Mode, RequestLimits, END_OF_PROMPT};
use cosygate::gateway::ApiError;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Map, Value};
use std::io::Cursor;
use std::sync::OnceLock;

const LIMITS: RequestLimits = RequestLimits {
    max_text_chars: 200,
    max_prompt_seconds: 30.0,
};

/// The request-level codes of the README's error table (those `parse` can produce).
const README_CODES: &[&str] = &[
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
const STATUSES: &[u16] = &[400, 413, 415, 422];

const FIELDS: &[&str] = &[
    "text",
    "mode",
    "prompt_audio",
    "prompt_text",
    "instruct_text",
    "spk_id",
    "seed",
    "speed",
];

fn config(cases: u32) -> Config {
    Config {
        cases,
        // Shrunk failures are printed; no regression files are written into the tree.
        failure_persistence: None,
        ..Config::default()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A short WAV in each accepted format: (rate, channels, bits, float).
fn valid_wavs() -> &'static [Vec<u8>] {
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

fn wav(sample_rate: u32, channels: u16, bits: u16, float: bool, frames: u32) -> Vec<u8> {
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

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// Strings a caller might send: plain text, markup, control tokens, controls, bidi, long runs.
fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9 ,.!?é中\\[\\]]{0,40}",
        2 => any::<String>(),
        1 => Just(String::new()),
        1 => Just("   ".to_string()),
        1 => prop::sample::select(vec![
            "<script>", "</b>", "<!--", "<?xml", "<|endofprompt|>", "<|im_start|>", "|>", "a < b",
            "\u{0}", "\u{7}", "\r", "\u{202E}", "\u{2066}", "\n\t", "[breath]", "zero_shot", "sft",
            "instruct", "cross_lingual", "中文女",
        ])
        .prop_map(String::from),
        1 => (prop::sample::select(vec!['a', 'é', '中', ' ']), 190usize..1100)
            .prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
        1 => Just(()).prop_map(|_| b64(&valid_wavs()[0])),
        1 => (0..6usize, 0usize..200).prop_map(|(i, cut)| {
            let s = b64(&valid_wavs()[i]);
            s[..s.len().saturating_sub(cut)].to_string()
        }),
    ]
}

/// Any JSON value, biased to the shapes the fields expect.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        (0.0f64..3.0).prop_map(Value::from),
        prop::sample::select(vec![0.49, 0.5, 1.0, 2.0, 2.01]).prop_map(Value::from),
        interesting_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A key: mostly the API's, sometimes one it does not have.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(FIELDS).prop_map(String::from),
        1 => prop::sample::select(vec!["voice", "Text", "", "te\\u0078t"]).prop_map(String::from),
    ]
}

/// A JSON object text with arbitrary members, written by hand so keys may repeat.
fn json_object() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((key(), json_value()), 0..8).prop_map(|members| {
        let body: Vec<String> = members
            .iter()
            .map(|(k, v)| {
                // `te\u0078t` stays escaped in the text, to reach serde as a second `text`.
                let k = if k.contains('\\') {
                    format!("\"{k}\"")
                } else {
                    Value::String(k.clone()).to_string()
                };
                format!("{k}:{v}")
            })
            .collect();
        format!("{{{}}}", body.join(",")).into_bytes()
    })
}

/// Text that passes the injection rule: letters, digits, punctuation, brackets, a lone `<`
/// before a space or digit, newlines and tabs inside; non-blank.
fn safe_text(max_chars: usize) -> impl Strategy<Value = String> {
    const PIECES: &[&str] = &[
        "a", "b", "e", "k", "s", "t", "A", "Z", "0", "7", " ", " ", ",", ".", "!", "?", ";", ":", "'", "(",
        ")", "é", "ü", "ß", "中", "文", "日", "本", "語", "[breath]", "< ", "<3", "\n", "\t", "\"", "\\",
    ];
    prop::collection::vec(prop::sample::select(PIECES), 1..max_chars)
        .prop_map(move |parts| parts.concat().chars().take(max_chars).collect::<String>())
        .prop_filter("not blank", |s: &String| !s.trim().is_empty())
}

/// Whitespace the parser trims away.
fn padding() -> impl Strategy<Value = String> {
    "[ \t\n\u{3000}]{0,4}"
}

#[derive(Debug, Clone)]
struct ValidCase {
    body: Value,
    mode: Mode,
    text: String,
    seed: Option<u64>,
    speed: Option<f64>,
    audio: Option<Vec<u8>>,
}

fn valid_request() -> impl Strategy<Value = ValidCase> {
    let mode = prop::sample::select(vec![
        Mode::ZeroShot,
        Mode::CrossLingual,
        Mode::Instruct,
        Mode::Sft,
    ]);
    (
        mode,
        any::<bool>(),
        (padding(), safe_text(200), padding()),
        (0..6usize, any::<bool>()),
        // Room for the `Prompt.<|endofprompt|>` prefix, which counts towards the limit.
        prop::option::of(safe_text(MAX_AUX_TEXT_CHARS - 30)),
        safe_text(MAX_AUX_TEXT_CHARS),
        any::<bool>(),
        safe_text(MAX_SPK_ID_CHARS),
        prop::option::of(any::<u64>()),
        prop::option::of(prop_oneof![Just(0.5), Just(2.0), 0.5f64..=2.0]),
    )
        .prop_map(
            |(
                mode,
                explicit_mode,
                (pre, text, post),
                (wav_i, wrap),
                prompt_text,
                instruct,
                marker,
                spk,
                seed,
                speed,
            )| {
                let mut body = Map::new();
                body.insert("text".into(), json!(format!("{pre}{text}{post}")));
                if mode != Mode::ZeroShot || explicit_mode {
                    body.insert("mode".into(), json!(mode.as_str()));
                }
                let wav = valid_wavs()[wav_i].clone();
                let audio = (mode != Mode::Sft).then_some(wav);
                if let Some(a) = &audio {
                    let mut enc = b64(a);
                    if wrap {
                        let chars: Vec<char> = enc.chars().collect();
                        enc = chars
                            .chunks(76)
                            .map(|c| c.iter().collect::<String>())
                            .collect::<Vec<_>>()
                            .join("\r\n");
                    }
                    body.insert("prompt_audio".into(), json!(enc));
                }
                if let Some(pt) = prompt_text {
                    let pt = if marker {
                        format!("Prompt.{END_OF_PROMPT}{pt}")
                    } else {
                        pt
                    };
                    body.insert("prompt_text".into(), json!(pt));
                }
                if mode == Mode::Instruct {
                    body.insert("instruct_text".into(), json!(instruct));
                }
                if mode == Mode::Sft {
                    body.insert("spk_id".into(), json!(spk));
                }
                if let Some(s) = seed {
                    body.insert("seed".into(), json!(s));
                }
                if let Some(s) = speed {
                    body.insert("speed".into(), json!(s));
                }
                ValidCase {
                    body: Value::Object(body),
                    mode,
                    text: text.trim().to_string(),
                    seed,
                    speed,
                    audio,
                }
            },
        )
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

fn assert_documented(e: &cosygate::api::InvalidRequest) -> Result<(), TestCaseError> {
    let e = &ApiError::from(e.clone());
    prop_assert!(STATUSES.contains(&e.status), "status {} in {e}", e.status);
    prop_assert!(
        README_CODES.contains(&e.code),
        "code {:?} is not in the README's list: {e}",
        e.code
    );
    prop_assert!(!e.message.is_empty(), "an empty message for {}", e.code);
    Ok(())
}

/// What every accepted request guarantees to the stages after the parser.
fn assert_trustworthy(r: &GenerateRequest) -> Result<(), TestCaseError> {
    prop_assert_eq!(r.text.trim(), r.text.as_str(), "text is trimmed");
    prop_assert!(!r.text.is_empty());
    prop_assert!(r.text.chars().count() <= LIMITS.max_text_chars);
    prop_assert!(check_text("text", &r.text, false).is_ok());
    prop_assert!((0.5..=2.0).contains(&r.speed), "speed {}", r.speed);
    prop_assert_eq!(r.prompt_audio.is_some(), r.mode != Mode::Sft);
    if let Some(audio) = &r.prompt_audio {
        let info = parse_wav(audio).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(info.sample_rate >= 16000);
        prop_assert!(info.duration_secs() <= LIMITS.max_prompt_seconds);
    }
    if r.mode == Mode::Instruct {
        prop_assert!(r.instruct_text.is_some());
    }
    if r.mode == Mode::Sft {
        prop_assert!(r.spk_id.is_some());
    }
    for t in [&r.prompt_text, &r.instruct_text].into_iter().flatten() {
        prop_assert!(!t.is_empty() && t.chars().count() <= MAX_AUX_TEXT_CHARS);
        prop_assert!(check_text("aux", t, true).is_ok());
    }
    if let Some(spk) = &r.spk_id {
        prop_assert!(!spk.is_empty() && spk.chars().count() <= MAX_SPK_ID_CHARS);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn any_bytes_are_answered_without_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        if let Err(e) = GenerateRequest::parse(&bytes, LIMITS) {
            assert_documented(&e)?;
        }
        let _ = parse_wav(&bytes);
    }

    #[test]
    fn json_like_text_is_answered_without_a_panic(s in "[\\[\\]{}\":,0-9a-z_\\\\ .eE+-]{0,300}") {
        match GenerateRequest::parse(s.as_bytes(), LIMITS) {
            Ok(r) => assert_trustworthy(&r)?,
            Err(e) => assert_documented(&e)?,
        }
    }

    #[test]
    fn check_text_never_panics_and_refuses_low_controls(
        s in any::<String>(),
        c in (0u32..=8).prop_map(|c| char::from_u32(c).expect("a C0 control")),
        at in any::<prop::sample::Index>(),
        allow in any::<bool>(),
    ) {
        let _ = check_text("text", &s, allow);
        let chars: Vec<char> = s.chars().collect();
        let i = at.index(chars.len() + 1);
        let with: String = chars[..i].iter().chain(std::iter::once(&c)).chain(&chars[i..]).collect();
        let e = check_text("text", &with, allow).expect_err("a C0 control is refused");
        prop_assert_eq!(e.code, "forbidden_characters");
        prop_assert_eq!(e.kind, InvalidKind::Malformed);
    }
}

proptest! {
    #![proptest_config(config(384))]

    #[test]
    fn arbitrary_objects_are_refused_with_documented_codes(body in json_object()) {
        match GenerateRequest::parse(&body, LIMITS) {
            Ok(r) => assert_trustworthy(&r)?,
            Err(e) => assert_documented(&e)?,
        }
    }

    #[test]
    fn mutated_wavs_never_panic_and_never_overstate_their_data(
        i in 0..6usize,
        edits in prop::collection::vec((0usize..80, any::<u8>()), 1..6),
        cut in prop::option::of(0usize..200),
    ) {
        let mut bytes = valid_wavs()[i].clone();
        for (at, b) in edits {
            bytes[at] = b;
        }
        if let Some(cut) = cut {
            bytes.truncate(bytes.len().saturating_sub(cut));
        }
        if let Ok(info) = parse_wav(&bytes) {
            let sample_bytes = usize::from(info.bits_per_sample.div_ceil(8));
            let data = info.frames as usize * usize::from(info.channels) * sample_bytes;
            prop_assert!(data <= bytes.len(), "{info:?} claims {data} data bytes in {}", bytes.len());
            prop_assert!(info.channels > 0);
        }
        if let Err(e) = GenerateRequest::parse(
            json!({"text": "Hi.", "prompt_audio": b64(&bytes)}).to_string().as_bytes(),
            LIMITS,
        ) {
            assert_documented(&e)?;
        }
    }

    #[test]
    fn valid_requests_are_accepted_trimmed(case in valid_request()) {
        let bytes = serde_json::to_vec(&case.body).expect("serialize");
        let r = GenerateRequest::parse(&bytes, LIMITS)
            .map_err(|e| TestCaseError::fail(format!("{e} for {}", case.body)))?;
        assert_trustworthy(&r)?;
        prop_assert_eq!(r.mode, case.mode);
        prop_assert_eq!(&r.text, &case.text);
        prop_assert_eq!(r.seed, case.seed.unwrap_or(0));
        // serde_json (without its `float_roundtrip` feature) may read a float 1 ULP off.
        prop_assert!((r.speed - case.speed.unwrap_or(1.0)).abs() < 1e-12, "speed {}", r.speed);
        prop_assert_eq!(r.prompt_audio.as_deref(), case.audio.as_deref());
    }

    #[test]
    fn bidi_controls_and_markup_are_refused_everywhere(
        pre in safe_text(20),
        bad in prop::sample::select(vec![
            "\u{202A}", "\u{202B}", "\u{202C}", "\u{202D}", "\u{202E}", "\u{2066}", "\u{2067}",
            "\u{2068}", "\u{2069}", "\u{1b}", "\u{7f}", "\u{85}x", "<b>", "</", "<!", "<?", "<|x|>",
        ]),
        post in safe_text(20),
        allow in any::<bool>(),
    ) {
        let e = check_text("text", &format!("{pre}{bad}{post}"), allow).expect_err("refused");
        prop_assert_eq!(e.code, "forbidden_characters");
    }
}

/// Bodies that are JSON but not an object, or an object with a mistyped `mode`, get the
/// code the README promises. Ignored until src/api/request.rs is fixed (see the report):
/// today a JSON array is accepted as a request (serde's derived struct also reads the
/// sequence form), an unterminated `[[[...` is `invalid_field`, and `"mode": 3` is
/// `invalid_json`.
#[test]

fn non_object_bodies_and_mistyped_mode_get_the_documented_codes() {
    let code = |body: &[u8]| match GenerateRequest::parse(body, LIMITS) {
        Ok(r) => format!("accepted as {r:?}"),
        Err(e) => e.code.to_string(),
    };
    assert_eq!(
        code(br#"["hello world","sft",null,null,null,"x"]"#),
        "invalid_json"
    );
    assert_eq!(code("[".repeat(10_000).as_bytes()), "invalid_json");
    assert_eq!(code(br#"{"text":"hi","mode":3,"spk_id":"x"}"#), "invalid_field");
}
