//! Tests of the `gradio` protocol (`gradio.rs`): the event-stream parser, outcome
//! classification, URLs built from the FileData the WebUI sends, and the request framing.
use super::*;

fn feed(stream: &str, piece: usize) -> Result<Events, AttemptError> {
    let mut events = Events::default();
    for chunk in stream.as_bytes().chunks(piece) {
        if events.take(chunk)? {
            break;
        }
    }
    Ok(events)
}

#[test]
fn events_end_at_complete_or_error_in_any_chunking() {
    let stream = "event: heartbeat\ndata: null\n\nevent: generating\r\ndata: [{\"path\":\"s/1/9\",\"is_stream\":true}]\r\n\r\nevent: complete\ndata: [null]\n\nevent: junk\n";
    for piece in [1, 3, 7, 1000] {
        let e = feed(stream, piece).expect("parses");
        assert_eq!(e.outcome, Some(Outcome::Complete(json!([null]))), "piece {piece}");
        assert_eq!(e.last_file, Some(json!({"path": "s/1/9", "is_stream": true})));
    }
    let e = feed("event: error\ndata: null\n\n", 2).expect("parses");
    assert_eq!(e.outcome, Some(Outcome::Error("null".into())));
    let long = format!("data: {}", "x".repeat(SSE_LINE_MAX + 1));
    assert!(matches!(feed(&long, 4096), Err(AttemptError::Protocol(_))));
}

#[test]
fn outcomes_are_classified() {
    let file = json!({"path": "a/b/c", "is_stream": true});
    assert_eq!(
        outcome_file(Some(Outcome::Complete(json!([null]))), None, 9),
        Err(AttemptError::Empty)
    );
    assert_eq!(
        outcome_file(Some(Outcome::Complete(json!([null]))), Some(file.clone()), 9),
        Ok(file.clone())
    );
    assert_eq!(
        outcome_file(Some(Outcome::Complete(json!([file]))), None, 9),
        Ok(file)
    );
    assert!(matches!(
        outcome_file(Some(Outcome::Error("null".into())), None, 9),
        Err(AttemptError::Truncated { after: 0, .. })
    ));
    assert!(matches!(
        outcome_file(None, None, 9),
        Err(AttemptError::Truncated { after: 9, .. })
    ));
}

#[test]
fn audio_urls_come_from_the_path() {
    let p = |v: Value| audio_path(&v);
    assert_eq!(
        p(json!({"path": "abc/0/12", "is_stream": true, "url": "http://wrong/file=abc/0/12"})),
        Ok("/gradio_api/stream/abc/0/12/playlist-file".into())
    );
    // As Gradio 5.4.0 sends it (seen against gradio 5.4.0 here): a playlist path, a wrong url.
    assert_eq!(
        p(
            json!({"path": "e9af4bd6/140354777793488/12/playlist.m3u8", "is_stream": true,
                 "url": "http://localhost:7860/gradio_a/gradio_api/stream/e9af4bd6/140354777793488/12/playlist.m3u8"})
        ),
        Ok("/gradio_api/stream/e9af4bd6/140354777793488/12/playlist-file".into())
    );
    assert_eq!(
        p(json!({"path": "/gradio_api/stream/abc/0/12/playlist.m3u8"})),
        Ok("/gradio_api/stream/abc/0/12/playlist-file".into())
    );
    assert_eq!(
        p(json!({"path": "/tmp/gradio/x y/audio.wav", "is_stream": false})),
        Ok("/gradio_api/file=/tmp/gradio/x%20y/audio.wav".into())
    );
    assert!(p(json!({"path": "../../etc/playlist.m3u8"})).is_err());
    assert!(p(json!({"url": "x"})).is_err());
    assert_eq!(escape_path("a\r\nb"), "a%0D%0Ab");
}

#[test]
fn built_requests_unframe_to_the_ten_inputs_and_the_prompt() {
    let limits = crate::api::RequestLimits {
        max_text_chars: 200,
        max_prompt_seconds: 30.0,
    };
    let req = GenerateRequest::parse(br#"{"text":"Hi.","mode":"sft","spk_id":"A","seed":7}"#, limits)
        .expect("valid");
    let texts = Texts {
        tts_text: "t".into(),
        sft_speaker: "A".into(),
        prompt_text: String::new(),
        instruct_text: String::new(),
    };
    let up = build(&req, texts);
    let (call, prompt) = unframe(&up).expect("unframes");
    assert!(prompt.is_empty());
    assert_eq!(
        call["data"],
        json!(["t", "预训练音色", "A", "", null, null, "", 7, false, 1.0])
    );
}
