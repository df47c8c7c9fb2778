//! The proptest strategies: strings a caller might send, arbitrary JSON values and objects, safe
//! text, padding, and valid requests with what the parser must make of them ([`ValidCase`]).

use crate::support::{b64, valid_wavs, FIELDS};
use cosygate::api::checks::{MAX_AUX_TEXT_CHARS, MAX_SPK_ID_CHARS};
use cosygate::api::{Mode, END_OF_PROMPT};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Strings a caller might send: plain text, markup, control tokens, controls, bidi, long runs.
pub fn interesting_string() -> impl Strategy<Value = String> {
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
pub fn json_value() -> impl Strategy<Value = Value> {
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
pub fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(FIELDS).prop_map(String::from),
        1 => prop::sample::select(vec!["voice", "Text", "", "te\\u0078t"]).prop_map(String::from),
    ]
}

/// A JSON object text with arbitrary members, written by hand so keys may repeat.
pub fn json_object() -> impl Strategy<Value = Vec<u8>> {
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
pub fn safe_text(max_chars: usize) -> impl Strategy<Value = String> {
    const PIECES: &[&str] = &[
        "a", "b", "e", "k", "s", "t", "A", "Z", "0", "7", " ", " ", ",", ".", "!", "?", ";", ":", "'", "(",
        ")", "é", "ü", "ß", "中", "文", "日", "本", "語", "[breath]", "< ", "<3", "\n", "\t", "\"", "\\",
    ];
    prop::collection::vec(prop::sample::select(PIECES), 1..max_chars)
        .prop_map(move |parts| parts.concat().chars().take(max_chars).collect::<String>())
        .prop_filter("not blank", |s: &String| !s.trim().is_empty())
}

/// Whitespace the parser trims away.
pub fn padding() -> impl Strategy<Value = String> {
    "[ \t\n\u{3000}]{0,4}"
}

#[derive(Debug, Clone)]
pub struct ValidCase {
    pub body: Value,
    pub mode: Mode,
    pub text: String,
    pub seed: Option<u64>,
    pub speed: Option<f64>,
    pub audio: Option<Vec<u8>>,
}

pub fn valid_request() -> impl Strategy<Value = ValidCase> {
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
