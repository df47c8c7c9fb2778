//! Unit tests of `cosyvoice_form`: the forms CosyVoice's clients send, and every refusal.

use super::*;
use crate::api::wav;
use crate::backend::multipart::Form;
use crate::backend::protocol::with_marker;

const LIMITS: RequestLimits = RequestLimits {
    max_text_chars: 20,
    max_prompt_seconds: 30.0,
};

fn prompt() -> Vec<u8> {
    wav::pcm16_to_wav(&[0u8; 3200], 16000).expect("wav")
}

fn multipart(
    route: Route,
    texts: &[(&str, &str)],
    wav: Option<&[u8]>,
    v3: bool,
) -> Result<GenerateRequest, InvalidRequest> {
    let mut form = Form::new();
    for (name, value) in texts {
        form.text(name, value);
    }
    if let Some(wav) = wav {
        form.file("prompt_wav", "prompt_wav", "application/octet-stream", wav);
    }
    let (content_type, body) = form.finish();
    let encoding = FormEncoding::from_content_type(&content_type)
        .expect("valid")
        .expect("a form");
    parse(route, &encoding, body, LIMITS, v3)
}

fn urlencoded(route: Route, body: &str) -> Result<GenerateRequest, InvalidRequest> {
    parse(
        route,
        &FormEncoding::UrlEncoded,
        Bytes::from(body.to_string()),
        LIMITS,
        true,
    )
}

fn code(r: Result<GenerateRequest, InvalidRequest>) -> &'static str {
    r.expect_err("refused").code
}

#[test]
fn routes_and_content_types() {
    assert_eq!(Route::from_path("/inference_instruct2"), Some(Route::Instruct2));
    assert_eq!(Route::from_path("/inference_instruct"), None);
    assert_eq!(Route::Instruct2.mode(), Mode::Instruct);
    let ct = FormEncoding::from_content_type;
    assert_eq!(
        ct("application/x-www-form-urlencoded; charset=utf-8"),
        Ok(Some(FormEncoding::UrlEncoded))
    );
    assert_eq!(
        ct("Multipart/Form-Data; boundary=abc"),
        Ok(Some(FormEncoding::Multipart {
            boundary: "abc".into()
        }))
    );
    assert_eq!(ct("application/json"), Ok(None));
    assert_eq!(ct(""), Ok(None));
    assert_eq!(
        ct("multipart/form-data").expect_err("no boundary").code,
        "invalid_form"
    );
}

#[test]
fn each_route_reads_its_fields() {
    let wav = prompt();
    let z = multipart(
        Route::ZeroShot,
        &[("tts_text", "Hello."), ("prompt_text", "A prompt.")],
        Some(&wav),
        true,
    )
    .expect("valid");
    assert_eq!(
        (z.mode, z.text.as_str(), z.prompt_text.as_deref()),
        (Mode::ZeroShot, "Hello.", Some("A prompt."))
    );
    assert_eq!(z.prompt_audio.as_deref(), Some(&wav[..]));
    assert_eq!((z.seed, z.speed), (0, 1.0));
    let c = multipart(Route::CrossLingual, &[("tts_text", "Hi.")], Some(&wav), true).expect("valid");
    assert_eq!(c.mode, Mode::CrossLingual);
    let i = multipart(
        Route::Instruct2,
        &[("tts_text", "Hi."), ("instruct_text", "Slowly.")],
        Some(&wav),
        true,
    )
    .expect("valid");
    assert_eq!(
        (i.mode, i.instruct_text.as_deref()),
        (Mode::Instruct, Some("Slowly."))
    );
    let s = urlencoded(
        Route::Sft,
        "tts_text=Hello+there%21&spk_id=%E4%B8%AD%E6%96%87%E5%A5%B3",
    )
    .expect("valid");
    assert_eq!(
        (s.mode, s.text.as_str(), s.spk_id.as_deref()),
        (Mode::Sft, "Hello there!", Some("中文女"))
    );
    assert!(s.prompt_audio.is_none());
}

#[test]
fn missing_duplicate_and_misplaced_fields_are_refused() {
    let wav = prompt();
    let missing =
        multipart(Route::ZeroShot, &[("tts_text", "Hello.")], Some(&wav), true).expect_err("refused");
    assert_eq!(missing.code, "missing_field");
    assert!(missing.message.contains("`prompt_text`"), "{}", missing.message);
    assert_eq!(
        code(multipart(Route::CrossLingual, &[("tts_text", "Hi.")], None, true)),
        "missing_field"
    );
    assert_eq!(code(urlencoded(Route::Sft, "spk_id=A")), "missing_field");
    assert_eq!(
        code(urlencoded(Route::Sft, "tts_text=a&tts_text=b&spk_id=A")),
        "duplicate_field"
    );
    // prompt_wav sent as a plain field (urlencoded cannot carry a file), tts_text as a file.
    assert_eq!(
        code(urlencoded(Route::CrossLingual, "tts_text=Hi.&prompt_wav=x")),
        "invalid_field"
    );
    let mut form = Form::new();
    form.file("tts_text", "t.txt", "text/plain", b"Hi.")
        .text("spk_id", "A");
    let (ct, body) = form.finish();
    let enc = FormEncoding::from_content_type(&ct).expect("ok").expect("form");
    assert_eq!(code(parse(Route::Sft, &enc, body, LIMITS, true)), "invalid_field");
}

#[test]
fn extra_fields_are_ignored_within_the_part_count() {
    let ok = urlencoded(Route::Sft, "tts_text=Hi.&spk_id=A&stream=false&speed=2").expect("ignored");
    assert_eq!(ok.speed, 1.0);
    let many: String = (0..MAX_PARTS).map(|i| format!("x{i}=1&")).collect();
    assert_eq!(
        code(urlencoded(Route::Sft, &format!("{many}tts_text=Hi.&spk_id=A"))),
        "too_many_fields"
    );
    let texts: Vec<(String, &str)> = (0..MAX_PARTS).map(|i| (format!("x{i}"), "1")).collect();
    let texts: Vec<(&str, &str)> = texts.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    assert_eq!(
        code(multipart(Route::CrossLingual, &texts, Some(&prompt()), true)),
        "too_many_fields"
    );
}

#[test]
fn bad_values_get_the_generate_codes() {
    let wav = prompt();
    assert_eq!(
        code(multipart(
            Route::CrossLingual,
            &[("tts_text", "  ")],
            Some(&wav),
            true
        )),
        "empty_text"
    );
    let long = "a".repeat(21);
    assert_eq!(
        code(multipart(
            Route::CrossLingual,
            &[("tts_text", &long)],
            Some(&wav),
            true
        )),
        "text_too_long"
    );
    assert_eq!(
        code(multipart(
            Route::CrossLingual,
            &[("tts_text", "Hi.")],
            Some(b"not a wav"),
            true
        )),
        "invalid_prompt_audio"
    );
    assert_eq!(
        code(urlencoded(Route::Sft, "tts_text=%FF&spk_id=A")),
        "invalid_field"
    );
    assert_eq!(
        code(urlencoded(Route::Sft, "tts_text=<b>Hi</b>&spk_id=A")),
        "forbidden_characters"
    );
    let huge = "a".repeat(MAX_TEXT_PART_BYTES + 1);
    assert_eq!(
        code(urlencoded(Route::Sft, &format!("tts_text={huge}&spk_id=A"))),
        "part_too_large"
    );
    assert_eq!(
        code(multipart(
            Route::Sft,
            &[("tts_text", &huge), ("spk_id", "A")],
            None,
            true
        )),
        "part_too_large"
    );
    let broken = Bytes::from_static(b"--abc\r\nContent-Disposition: form-data; name=\"tts_text\"\r\n\r\nHi");
    let enc = FormEncoding::Multipart {
        boundary: "abc".into(),
    };
    assert_eq!(
        code(parse(Route::Sft, &enc, broken, LIMITS, true)),
        "invalid_form"
    );
}

#[test]
fn the_marker_is_allowed_where_the_model_expects_it() {
    let wav = prompt();
    // The spoken part counts against the limit, not the system prompt in front of it.
    let custom = "Speak like a pirate, with a lot of feeling.<|endofprompt|>Ahoy there.";
    let c = multipart(Route::CrossLingual, &[("tts_text", custom)], Some(&wav), true).expect("valid");
    assert_eq!(c.text, custom, "a system prompt of the client's own is kept");
    let long_prefix = format!(
        "{}<|endofprompt|>Hi.",
        "a".repeat(crate::api::MAX_AUX_TEXT_CHARS + 1)
    );
    let err = multipart(
        Route::CrossLingual,
        &[("tts_text", &long_prefix)],
        Some(&wav),
        true,
    )
    .expect_err("refused");
    assert_eq!(err.code, "field_too_long");
    assert!(err.message.contains("before <|endofprompt|>"), "{}", err.message);
    let nothing = "Be calm.<|endofprompt|> ...";
    assert_eq!(
        code(multipart(
            Route::CrossLingual,
            &[("tts_text", nothing)],
            Some(&wav),
            true
        )),
        "nothing_to_speak"
    );
    assert_eq!(
        code(multipart(
            Route::CrossLingual,
            &[("tts_text", "Hi <|im_start|>")],
            Some(&wav),
            true
        )),
        "forbidden_characters"
    );
    // zero_shot and instruct2 expect it on the prompt side, not in tts_text.
    let in_text = [("tts_text", "A.<|endofprompt|>Hi."), ("prompt_text", "A prompt.")];
    assert_eq!(
        code(multipart(Route::ZeroShot, &in_text, Some(&wav), true)),
        "forbidden_characters"
    );
    let z = multipart(
        Route::ZeroShot,
        &[
            ("tts_text", "Hi."),
            ("prompt_text", "Be calm.<|endofprompt|>A prompt."),
        ],
        Some(&wav),
        true,
    )
    .expect("valid");
    assert_eq!(z.prompt_text.as_deref(), Some("Be calm.<|endofprompt|>A prompt."));
}

#[test]
fn the_default_spelling_reads_back_to_the_plain_request() {
    let wav = prompt();
    let mark = |s: &str| with_marker(true, s, false);
    let c = multipart(
        Route::CrossLingual,
        &[("tts_text", &mark("Hi."))],
        Some(&wav),
        true,
    )
    .expect("valid");
    assert_eq!(c.text, "Hi.");
    let s = urlencoded(
        Route::Sft,
        &format!("tts_text={}&spk_id=A", mark("Hi.").replace('|', "%7C")),
    )
    .expect("valid");
    assert_eq!(s.text, "Hi.");
    let z = multipart(
        Route::ZeroShot,
        &[("tts_text", "Hi."), ("prompt_text", &mark("A prompt."))],
        Some(&wav),
        true,
    )
    .expect("valid");
    assert_eq!(z.prompt_text.as_deref(), Some("A prompt."));
    let instruction = with_marker(true, "Speak slowly.", true);
    let i = multipart(
        Route::Instruct2,
        &[("tts_text", "Hi."), ("instruct_text", &instruction)],
        Some(&wav),
        true,
    )
    .expect("valid");
    assert_eq!(i.instruct_text.as_deref(), Some("Speak slowly."));
    // Only the exact spelling: a near miss is kept as sent (it reaches the backend unchanged).
    let near = "You are a helpful assistant.<|endofprompt|> Hi.";
    let c = multipart(Route::CrossLingual, &[("tts_text", near)], Some(&wav), true).expect("valid");
    assert_eq!(c.text, near);
    // Not for other models, which take the text as sent.
    let c = multipart(
        Route::CrossLingual,
        &[("tts_text", &mark("Hi."))],
        Some(&wav),
        false,
    )
    .expect("valid");
    assert_eq!(c.text, mark("Hi."));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// Any body, whatever it claims to be, is a request or a refusal: never a panic.
    #[test]
    fn any_body_is_read_or_refused(
        body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        prefix in proptest::sample::select(vec![
            &b""[..],
            b"--B\r\nContent-Disposition: form-data; name=\"tts_text\"\r\n\r\n",
            b"--B\r\nContent-Disposition: form-data; name=\"prompt_wav\"; filename=\"p\"\r\n\r\n",
            b"tts_text=",
        ]),
        multipart in proptest::prelude::any::<bool>(),
    ) {
        let encoding = if multipart {
            FormEncoding::Multipart { boundary: "B".into() }
        } else {
            FormEncoding::UrlEncoded
        };
        let body = Bytes::from([prefix, &body[..]].concat());
        for route in [Route::ZeroShot, Route::CrossLingual, Route::Instruct2, Route::Sft] {
            let _ = parse(route, &encoding, body.clone(), LIMITS, true);
        }
    }
}
