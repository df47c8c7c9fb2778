//! The properties: any bytes are answered without a panic, every refusal has a documented status
//! and code, valid requests are accepted trimmed, WAVs never overstate their data, and bidi
//! controls and markup are refused everywhere.

use crate::strategies::{json_object, safe_text, valid_request};
use crate::support::{b64, config, valid_wavs, LIMITS, README_CODES, STATUSES};
use cosygate::api::checks::{check_text, MAX_AUX_TEXT_CHARS, MAX_SPK_ID_CHARS};
use cosygate::api::wav::parse_wav;
use cosygate::api::{GenerateRequest, InvalidKind, Mode};
use cosygate::gateway::ApiError;
use proptest::prelude::*;
use serde_json::json;

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
