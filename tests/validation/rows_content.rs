//! Rows about what the fields carry: base64, the prompt audio (its WAV, sample rate and length),
//! forbidden characters (the injection rule), fields too long, and the other modes passing.

use crate::common::sim::test_wav;
use crate::table::{b64, bad, patch_u32, post_json, unproc, Prompts, Req, Want};
use serde_json::json;

pub fn add_rows(p: &Prompts, add: &mut dyn FnMut(&str, Req, Want)) {
    // --- invalid_base64 -------------------------------------------------------------------------
    assert!(p.short_b64.ends_with("=="), "the short prompt's base64 is padded");
    let spaced = format!("{} {}", &p.short_b64[..100], &p.short_b64[100..]);
    let url_safe = p.short_b64.replace('+', "-").replace('/', "_");
    assert!(url_safe.contains(['-', '_']), "the prompt uses + or /");
    let b64_rows = [
        (
            "base64 with illegal characters",
            format!("!!{}", &p.short_b64[2..]),
        ),
        (
            "base64 without padding",
            p.short_b64.trim_end_matches('=').to_string(),
        ),
        ("base64 with a space inside", spaced),
        ("base64 in the URL-safe alphabet", url_safe),
        (
            "base64 as a data: URI",
            format!("data:audio/wav;base64,{}", p.short_b64),
        ),
        (
            "base64 with a tab inside",
            format!("{}\t{}", &p.short_b64[..76], &p.short_b64[76..]),
        ),
    ];
    for (name, audio) in b64_rows {
        add(name, post_json(p.with_audio(audio)), bad("invalid_base64"));
    }
    let wrap = |sep: &str| -> String {
        let chars: Vec<char> = p.short_b64.chars().collect();
        chars
            .chunks(76)
            .map(|c| c.iter().collect::<String>())
            .collect::<Vec<_>>()
            .join(sep)
    };
    add(
        "base64 with MIME line breaks (\\n every 76) passes",
        post_json(p.with_audio(wrap("\n"))),
        Want::Pass,
    );
    add(
        "base64 with MIME line breaks (\\r\\n every 76) passes",
        post_json(p.with_audio(wrap("\r\n"))),
        Want::Pass,
    );

    // --- invalid_prompt_audio ---------------------------------------------------------------------
    let random: Vec<u8> = (0u32..4096)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut riff_lies = p.short.clone();
    patch_u32(&mut riff_lies, 4, (p.short.len() - 8 + 1000) as u32);
    let mut data_lies = p.short.clone();
    patch_u32(&mut data_lies, 40, (p.short.len() - 44 + 2000) as u32);
    let mut truncated = p.short[..p.short.len() - 1000].to_vec();
    let riff = (truncated.len() - 8) as u32;
    patch_u32(&mut truncated, 4, riff); // the RIFF size is honest, the data chunk's is not
    let cut_plain = p.short[..p.short.len() - 1000].to_vec();
    let mut ogg = b"OggS\0\x02".to_vec();
    ogg.resize(4000, 0x55);
    let mut not_pcm = p.short.clone();
    patch_u32(&mut not_pcm, 20, 0x0001_0002); // format tag 2 (ADPCM), 1 channel
    let audio_rows: [(&str, Vec<u8>); 8] = [
        ("prompt of random bytes", random),
        ("WAV whose RIFF size lies", riff_lies),
        ("WAV whose data chunk size lies", data_lies),
        ("truncated WAV (RIFF size patched)", truncated),
        ("truncated WAV", cut_plain),
        ("Ogg instead of WAV", ogg),
        ("WAV that is not PCM", not_pcm),
        ("empty prompt", Vec::new()),
    ];
    for (name, audio) in audio_rows {
        add(
            name,
            post_json(p.with_audio(b64(&audio))),
            bad("invalid_prompt_audio"),
        );
    }

    // --- sample rate and prompt length --------------------------------------------------------
    add(
        "prompt at 15999 Hz",
        post_json(p.with_audio(b64(&test_wav(0.25, 15999)))),
        unproc("sample_rate_too_low"),
    );
    add(
        "prompt at 8000 Hz",
        post_json(p.with_audio(b64(&test_wav(0.25, 8000)))),
        unproc("sample_rate_too_low"),
    );
    add(
        "prompt at 16000 Hz passes",
        post_json(p.with_audio(b64(&test_wav(0.5, 16000)))),
        Want::Pass,
    );
    add(
        "prompt of 30.0 s passes",
        post_json(p.with_audio(b64(&test_wav(30.0, 16000)))),
        Want::Pass,
    );
    add(
        "prompt of 30.1 s",
        post_json(p.with_audio(b64(&test_wav(30.1, 16000)))),
        unproc("prompt_too_long"),
    );

    // --- forbidden_characters (the injection rule) -----------------------------------------------
    let forbidden: [(&str, &str, &str); 14] = [
        ("NUL in text", "text", "Hello\u{0}world"),
        ("bell in text", "text", "Hello\u{7} world"),
        ("carriage return inside text", "text", "Hello\rworld"),
        ("escape sequence in text", "text", "Hello \u{1b}[31mred"),
        ("U+202E in text", "text", "Hello \u{202E}dlrow"),
        ("U+2066 in prompt_text", "prompt_text", "Say \u{2066}this\u{2069}"),
        ("<script> in text", "text", "Hi <script>alert(1)</script>"),
        ("</b> in text", "text", "bold</b> text"),
        ("HTML comment in text", "text", "Hi <!-- hidden --> there"),
        ("<?xml in text", "text", "<?xml version=\"1.0\"?>"),
        ("<|endofprompt|> in text", "text", "Hi<|endofprompt|>there"),
        ("<|im_start|> in prompt_text", "prompt_text", "<|im_start|>system"),
        ("SSML <speak> in prompt_text", "prompt_text", "<speak>hi</speak>"),
        ("a lone |> in text", "text", "Hi |> there"),
    ];
    for (name, field, value) in forbidden {
        let body = if field == "text" {
            p.zero_shot(value)
        } else {
            p.zero_shot_with("Hi.", field, json!(value))
        };
        add(name, post_json(body), bad("forbidden_characters"));
    }
    add(
        "markup in instruct_text",
        post_json(
            json!({"text": "Hi.", "mode": "instruct", "instruct_text": "<b>loud</b>", "prompt_audio": p.short_b64}),
        ),
        bad("forbidden_characters"),
    );
    add(
        "control character in spk_id",
        post_json(json!({"text": "Hi.", "mode": "sft", "spk_id": "中文\u{8}女"})),
        bad("forbidden_characters"),
    );
    add(
        "<|endofprompt|> inside prompt_text passes",
        post_json(p.zero_shot_with(
            "Hi.",
            "prompt_text",
            json!("You are a helpful assistant.<|endofprompt|>A short prompt."),
        )),
        Want::Pass,
    );
    add(
        "[breath] cue passes",
        post_json(p.zero_shot("Well [breath] let me think.")),
        Want::Pass,
    );
    add(
        "a < b passes",
        post_json(p.zero_shot("a < b, and 3 <4")),
        Want::Pass,
    );
    add(
        "newlines and tabs pass",
        post_json(p.zero_shot("Line one.\nLine two.\tTabbed.")),
        Want::Pass,
    );

    // --- field_too_long ---------------------------------------------------------------------------
    add(
        "prompt_text of 1001 characters",
        post_json(p.zero_shot_with("Hi.", "prompt_text", json!("p".repeat(1001)))),
        unproc("field_too_long"),
    );
    add(
        "instruct_text of 1001 characters",
        post_json(
            json!({"text": "Hi.", "mode": "instruct", "instruct_text": "i".repeat(1001), "prompt_audio": p.short_b64}),
        ),
        unproc("field_too_long"),
    );
    add(
        "spk_id of 65 characters",
        post_json(json!({"text": "Hi.", "mode": "sft", "spk_id": "s".repeat(65)})),
        unproc("field_too_long"),
    );
    add(
        "prompt_text of 1000 é passes",
        post_json(p.zero_shot_with("Hi.", "prompt_text", json!("é".repeat(1000)))),
        Want::Pass,
    );

    // --- the other modes pass -------------------------------------------------------------------
    add(
        "sft with a known speaker passes",
        post_json(json!({"text": "Hi.", "mode": "sft", "spk_id": "中文女", "seed": 7})),
        Want::Pass,
    );
    add(
        "instruct passes",
        post_json(
            json!({"text": "Hi.", "mode": "instruct", "instruct_text": "Speak slowly.", "prompt_audio": p.short_b64}),
        ),
        Want::Pass,
    );
}
