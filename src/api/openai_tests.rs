//! Tests of OpenAI's speech request (`openai.rs`): defaults, every field, the refusals with the
//! field each names, and what a voice resolves to.
use super::*;

const LIMITS: RequestLimits = RequestLimits {
    max_text_chars: 20,
    max_prompt_seconds: 30.0,
};

fn parse(json: &str) -> Result<OpenAiSpeech, SpeechInvalid> {
    OpenAiSpeech::parse(json.as_bytes(), LIMITS)
}

fn refused(json: &str) -> (u16, &'static str, Option<&'static str>) {
    let e = parse(json).expect_err("refused");
    let status = match e.error.kind {
        crate::api::InvalidKind::Malformed => 400,
        crate::api::InvalidKind::Unprocessable => 422,
    };
    (status, e.error.code, e.param)
}

#[test]
fn a_minimal_request_takes_the_defaults() {
    let s = parse(r#"{"model":"cosyvoice","input":"  Hello. ","voice":"中文女"}"#).expect("valid");
    assert_eq!(s.model, "cosyvoice");
    assert_eq!(s.input, "Hello.");
    assert_eq!(s.voice, "中文女");
    assert_eq!(s.response_format, SpeechFormat::Wav);
    assert_eq!(s.speed, 1.0);
    assert_eq!(s.stream_format, None);
    assert_eq!(s.instructions, None);
}

#[test]
fn every_field_is_read() {
    let s = parse(
        r#"{"model":"p","input":"Hi","voice":{"id":"v1"},"instructions":" Speak slowly. ",
            "response_format":"pcm","speed":1.5,"stream_format":"audio"}"#,
    )
    .expect("valid");
    assert_eq!(s.voice, "v1");
    assert_eq!(s.instructions.as_deref(), Some("Speak slowly."));
    assert_eq!(s.response_format, SpeechFormat::Pcm);
    assert_eq!(s.speed, 1.5);
    assert_eq!(s.stream_format, Some(StreamFormat::Audio));
}

#[test]
fn refusals_name_their_field() {
    let base = r#""model":"p","voice":"v""#;
    let cases = [
        (format!(r#"{{{base}}}"#), (400, "missing_field", Some("input"))),
        (
            format!(r#"{{{base},"input":"x","foo":1}}"#),
            (400, "unknown_field", None),
        ),
        (
            format!(r#"{{{base},"input":"x","response_format":"mp3"}}"#),
            (400, "unsupported_response_format", Some("response_format")),
        ),
        (
            format!(r#"{{{base},"input":"x","response_format":"opus"}}"#),
            (400, "unsupported_response_format", Some("response_format")),
        ),
        (
            format!(r#"{{{base},"input":"x","stream_format":"webrtc"}}"#),
            (400, "unsupported_stream_format", Some("stream_format")),
        ),
        (
            format!(r#"{{{base},"input":"x","speed":4.0}}"#),
            (422, "speed_out_of_range", Some("speed")),
        ),
        (
            format!(r#"{{{base},"input":"x","speed":"fast"}}"#),
            (400, "invalid_field", Some("speed")),
        ),
        (
            format!(r#"{{{base},"input":"   "}}"#),
            (422, "empty_text", Some("input")),
        ),
        (
            format!(r#"{{{base},"input":"{}"}}"#, "a".repeat(21)),
            (422, "text_too_long", Some("input")),
        ),
        (
            format!(r#"{{{base},"input":"<speak>x</speak>"}}"#),
            (400, "forbidden_characters", Some("input")),
        ),
        (
            format!(r#"{{{base},"input":"x","instructions":"<|im_start|>"}}"#),
            (400, "forbidden_characters", Some("instructions")),
        ),
        (
            r#"{"model":"p","input":"x","voice":""}"#.to_string(),
            (400, "missing_field", Some("voice")),
        ),
        (
            r#"{"model":" ","input":"x","voice":"v"}"#.to_string(),
            (400, "missing_field", Some("model")),
        ),
        ("[1]".to_string(), (400, "invalid_json", None)),
    ];
    for (json, want) in cases {
        assert_eq!(refused(&json), want, "{json}");
    }
}

#[test]
fn the_end_of_prompt_marker_is_allowed_in_instructions_only() {
    assert!(
        parse(r#"{"model":"p","input":"x","voice":"v","instructions":"Be calm.<|endofprompt|>"}"#).is_ok()
    );
    assert_eq!(
        refused(r#"{"model":"p","input":"x<|endofprompt|>","voice":"v"}"#),
        (400, "forbidden_characters", Some("input"))
    );
}

fn voice(prompt_text: &str) -> Voice {
    Voice {
        id: "ab".repeat(32),
        name: "narrator".to_string(),
        prompt_audio: bytes::Bytes::from_static(b"RIFF...."),
        prompt_text: prompt_text.to_string(),
    }
}

fn speech(voice: &str, instructions: Option<&str>) -> OpenAiSpeech {
    let mut s = parse(&format!(
        r#"{{"model":"p","input":"Hello.","voice":"{voice}","speed":1.5}}"#
    ))
    .expect("valid");
    s.instructions = instructions.map(str::to_string);
    s
}

#[test]
fn a_registered_voice_gives_zero_shot_cross_lingual_or_instruct() {
    let presets = vec!["中文女".to_string()];
    let p = speech("narrator", None)
        .into_parts(Some(voice("Its transcript.")), "p", Some(&presets))
        .expect("zero_shot");
    assert_eq!(p.mode, Mode::ZeroShot);
    assert_eq!(p.prompt_text.as_deref(), Some("Its transcript."));
    assert_eq!(
        p.prompt_audio,
        Some(crate::api::PromptAudio::Checked(bytes::Bytes::from_static(
            b"RIFF...."
        )))
    );
    assert_eq!((p.text.as_str(), p.speed, p.seed), ("Hello.", 1.5, 0));
    let p = speech("narrator", None)
        .into_parts(Some(voice(" ")), "p", None)
        .expect("cross_lingual");
    assert_eq!((p.mode, p.prompt_text), (Mode::CrossLingual, None));
    let p = speech("narrator", Some("Whisper."))
        .into_parts(Some(voice("T.")), "p", None)
        .expect("instruct");
    assert_eq!(p.mode, Mode::Instruct);
    assert_eq!(p.instruct_text.as_deref(), Some("Whisper."));
    assert!(p.prompt_audio.is_some());
}

#[test]
fn a_preset_speaker_gives_sft_and_anything_else_is_refused() {
    let presets = vec!["中文女".to_string(), "英文男".to_string()];
    let p = speech("中文女", None)
        .into_parts(None, "p", Some(&presets))
        .expect("sft");
    assert_eq!(
        (p.mode, p.spk_id.as_deref(), p.prompt_audio),
        (Mode::Sft, Some("中文女"), None)
    );
    assert!(matches!(
        speech("中文女", Some("Whisper.")).into_parts(None, "p", Some(&presets)),
        Err(VoiceRefusal::InstructionsNeedVoice { .. })
    ));
    assert_eq!(
        speech("alloy", None).into_parts(None, "p", Some(&presets)).err(),
        Some(VoiceRefusal::NotFound {
            voice: "alloy".to_string(),
            pool: "p".to_string(),
            presets
        })
    );
    assert!(
        speech("中文女", None).into_parts(None, "p", None).is_err(),
        "no presets configured"
    );
}

#[test]
fn trailing_bytes_and_duplicate_fields_are_refused() {
    assert_eq!(
        refused(r#"{"model":"p","input":"x","voice":"v"} {}"#),
        (400, "invalid_json", None)
    );
    assert_eq!(
        refused(r#"{"model":"p","input":"x","input":"y","voice":"v"}"#),
        (400, "duplicate_field", None)
    );
}
