//! Admission, table-driven: every way a `/generate` request can be refused, each sent to the
//! real gateway over a raw HTTP/1.1 socket and checked for its status, its stable `code`, the
//! contract's JSON error shape and a matching `X-Request-Id`; the near misses that must pass
//! (limits hit exactly, multi-byte text, MIME-wrapped base64, allowed markers) answered with a
//! valid WAV. Afterwards the simulator's own counter proves that exactly the passing rows
//! reached a backend: a refused request never touches one.

mod common;

use base64::Engine;
use common::gateway::{pool_yaml, Gateway};
use common::sim::{test_wav, Sim};
use cosygate::api::wav::parse_wav;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The default limits the rows are written against (the gateway runs with no `limits:`).
const MAX_TEXT_CHARS: usize = 200;
const MAX_BODY: usize = 10 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// The rows
// ---------------------------------------------------------------------------------------------

/// What is sent: an HTTP/1.1 request the harness frames (Host, Content-Length, Connection:
/// close are added), or raw bytes sent exactly as given.
enum Req {
    Http {
        method: &'static str,
        path: &'static str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    Raw(Vec<u8>),
}

/// What must come back.
enum Want {
    /// 200, `audio/wav`, a valid WAV; the request reached the backend.
    Pass,
    /// A JSON error with this status and code.
    Refuse { status: u16, code: &'static str },
}

struct Row {
    name: String,
    req: Req,
    want: Want,
}

fn refuse(status: u16, code: &'static str) -> Want {
    Want::Refuse { status, code }
}

/// A POST /generate with `Content-Type: application/json` and these body bytes.
fn post(body: impl Into<Vec<u8>>) -> Req {
    post_with("application/json", body)
}

fn post_with(content_type: &str, body: impl Into<Vec<u8>>) -> Req {
    Req::Http {
        method: "POST",
        path: "/generate",
        headers: vec![("Content-Type", content_type.to_string())],
        body: body.into(),
    }
}

fn post_json(v: Value) -> Req {
    post(serde_json::to_vec(&v).expect("serialize"))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Overwrites the little-endian u32 at `at`.
fn patch_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// Prompt audio the rows share, encoded once.
struct Prompts {
    /// 0.25 s at 16 kHz: 8044 bytes, so its base64 ends in `==`.
    short: Vec<u8>,
    short_b64: String,
}

impl Prompts {
    fn new() -> Self {
        let short = test_wav(0.25, 16000);
        let short_b64 = b64(&short);
        Prompts { short, short_b64 }
    }

    /// A zero_shot body with the short prompt and `text`.
    fn zero_shot(&self, text: &str) -> Value {
        json!({"text": text, "prompt_text": "A short prompt.", "prompt_audio": self.short_b64})
    }

    /// A zero_shot body with the short prompt, `text` and one more field.
    fn zero_shot_with(&self, text: &str, field: &str, value: Value) -> Value {
        let mut v = self.zero_shot(text);
        v[field] = value;
        v
    }

    /// A zero_shot body whose `prompt_audio` is exactly `audio_b64`.
    fn with_audio(&self, audio_b64: String) -> Value {
        json!({"text": "Hello there.", "prompt_text": "A short prompt.", "prompt_audio": audio_b64})
    }
}

fn rows(p: &Prompts) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut add = |name: &str, req: Req, want: Want| {
        rows.push(Row {
            name: name.to_string(),
            req,
            want,
        })
    };
    let bad = |code| refuse(400, code);
    let unproc = |code| refuse(422, code);

    // --- invalid_json -------------------------------------------------------------------------
    add("truncated JSON", post(r#"{"text":"hel"#), bad("invalid_json"));
    add(
        "not JSON at all",
        post("hello, please speak"),
        bad("invalid_json"),
    );
    add("empty body", post(""), bad("invalid_json"));
    add("single-quoted JSON", post("{'text':'hi'}"), bad("invalid_json"));
    add(
        "trailing garbage after the object",
        post(r#"{"text":"hi","mode":"sft","spk_id":"中文女"} x"#),
        bad("invalid_json"),
    );
    add(
        "invalid UTF-8 in a string",
        post(&b"{\"text\":\"\xff\xfe\",\"mode\":\"sft\",\"spk_id\":\"x\"}"[..]),
        bad("invalid_json"),
    );
    add(
        "lone surrogate escape",
        post(r#"{"text":"hi\ud800","mode":"sft","spk_id":"x"}"#),
        bad("invalid_json"),
    );
    // BUG (src/api/request.rs:79): serde's derived struct also accepts a JSON *array*, so an
    // unterminated `[[[[...` is read as a sequence-form struct whose first element has the
    // wrong type: `invalid_field` instead of `invalid_json`.
    add(
        "10000 levels of [",
        post("[".repeat(10_000)),
        Want::Refuse {
            status: 400,
            code: "invalid_json",
        },
    );

    // --- unknown_field / duplicate_field ------------------------------------------------------
    add(
        "unknown field",
        post_json(p.zero_shot_with("Hi.", "voice", json!("alto"))),
        bad("unknown_field"),
    );
    add(
        "field names are case-sensitive",
        post_json(p.zero_shot_with("Hi.", "Text", json!("Hi."))),
        bad("unknown_field"),
    );
    add(
        "text twice",
        post(format!(
            r#"{{"text":"Hi.","text":"Ho.","prompt_audio":"{}"}}"#,
            p.short_b64
        )),
        bad("duplicate_field"),
    );
    add(
        "text twice, once with an escaped key",
        post(format!(
            r#"{{"text":"Hi.","te\u0078t":"<b>","prompt_audio":"{}"}}"#,
            p.short_b64
        )),
        bad("duplicate_field"),
    );
    add(
        "mode twice",
        post(r#"{"text":"Hi.","mode":"sft","mode":"zero_shot","spk_id":"中文女"}"#),
        bad("duplicate_field"),
    );

    // --- missing_field --------------------------------------------------------------------------
    add("empty object", post("{}"), bad("missing_field"));
    add(
        "no text",
        post_json(json!({"prompt_audio": p.short_b64})),
        bad("missing_field"),
    );
    add(
        "zero_shot without prompt_audio",
        post_json(json!({"text": "Hi.", "prompt_text": "x"})),
        bad("missing_field"),
    );
    add(
        "cross_lingual without prompt_audio",
        post_json(json!({"text": "Hi.", "mode": "cross_lingual"})),
        bad("missing_field"),
    );
    add(
        "instruct without instruct_text",
        post_json(json!({"text": "Hi.", "mode": "instruct", "prompt_audio": p.short_b64})),
        bad("missing_field"),
    );
    add(
        "sft without spk_id",
        post_json(json!({"text": "Hi.", "mode": "sft"})),
        bad("missing_field"),
    );
    add(
        "sft with a blank spk_id",
        post_json(json!({"text": "Hi.", "mode": "sft", "spk_id": "   "})),
        bad("missing_field"),
    );

    // --- invalid_field (wrong types) ------------------------------------------------------------
    let wrong = [
        ("text as a number", "text", json!(42)),
        ("text as null", "text", Value::Null),
        ("text as an array", "text", json!(["Hi."])),
        ("seed negative", "seed", json!(-1)),
        ("seed as a string", "seed", json!("7")),
        ("seed as a fraction", "seed", json!(1.5)),
        ("seed above u64", "seed", json!(1e20)),
        ("speed as a string", "speed", json!("1.0")),
        ("speed as a bool", "speed", json!(true)),
        ("prompt_audio as an array", "prompt_audio", json!([1, 2, 3])),
        ("prompt_text as an object", "prompt_text", json!({"a": 1})),
    ];
    for (name, field, value) in wrong {
        add(
            name,
            post_json(p.zero_shot_with("Hi.", field, value)),
            bad("invalid_field"),
        );
    }
    // BUG (src/api/request.rs:61, 218-221): serde_json reports a non-string enum as a syntax
    // error ("expected value"), so a well-formed body with `"mode": 3` is told it is not JSON.
    add(
        "mode as a number",
        post_json(p.zero_shot_with("Hi.", "mode", json!(3))),
        Want::Refuse {
            status: 400,
            code: "invalid_field",
        },
    );

    // --- invalid_mode ---------------------------------------------------------------------------
    add(
        "unknown mode",
        post_json(p.zero_shot_with("Hi.", "mode", json!("fast"))),
        bad("invalid_mode"),
    );
    add(
        "mode in capitals",
        post_json(p.zero_shot_with("Hi.", "mode", json!("ZERO_SHOT"))),
        bad("invalid_mode"),
    );

    // --- empty_text / text_too_long -------------------------------------------------------------
    add("empty text", post_json(p.zero_shot("")), unproc("empty_text"));
    add(
        "text of only spaces",
        post_json(p.zero_shot("     ")),
        unproc("empty_text"),
    );
    add(
        "text of only whitespace",
        post_json(p.zero_shot(" \n\t\u{3000} ")),
        unproc("empty_text"),
    );
    for (what, c) in [("ASCII", 'a'), ("é", 'é'), ("中", '中')] {
        let at_limit: String = std::iter::repeat_n(c, MAX_TEXT_CHARS).collect();
        let over: String = std::iter::repeat_n(c, MAX_TEXT_CHARS + 1).collect();
        add(
            &format!("text of {MAX_TEXT_CHARS} {what} characters passes"),
            post_json(p.zero_shot(&at_limit)),
            Want::Pass,
        );
        add(
            &format!("text of {} {what} characters", MAX_TEXT_CHARS + 1),
            post_json(p.zero_shot(&over)),
            unproc("text_too_long"),
        );
    }
    let padded = format!("   {}   \n", "b".repeat(MAX_TEXT_CHARS));
    add(
        "text at the limit once trimmed passes",
        post_json(p.zero_shot(&padded)),
        Want::Pass,
    );

    // --- speed ------------------------------------------------------------------------------------
    for (name, speed) in [
        ("speed 0.49", 0.49),
        ("speed 2.01", 2.01),
        ("speed 0", 0.0),
        ("speed negative", -1.0),
    ] {
        add(
            name,
            post_json(p.zero_shot_with("Hi.", "speed", json!(speed))),
            unproc("speed_out_of_range"),
        );
    }
    // In range, but this is a cosyvoice_fastapi pool: the real server has no speed control
    // (README: "`cosyvoice_fastapi` pools accept only 1.0").
    for (name, speed) in [
        ("speed 0.5 on a fastapi pool", 0.5),
        ("speed 2.0 on a fastapi pool", 2.0),
    ] {
        add(
            name,
            post_json(p.zero_shot_with("Hi.", "speed", json!(speed))),
            unproc("unsupported_parameter"),
        );
    }
    add(
        "speed 1.0 passes",
        post_json(p.zero_shot_with("Hi.", "speed", json!(1.0))),
        Want::Pass,
    );

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

    // --- media type -------------------------------------------------------------------------------
    let ok_body = serde_json::to_vec(&p.zero_shot("Hi.")).expect("serialize");
    add(
        "Content-Type text/plain",
        post_with("text/plain", br#"{"text":"Hi."}"#.to_vec()),
        refuse(415, "unsupported_media_type"),
    );
    add(
        "Content-Type form-urlencoded",
        post_with("application/x-www-form-urlencoded", b"text=Hi.".to_vec()),
        refuse(415, "unsupported_media_type"),
    );
    add(
        "Content-Type application/jsonx",
        post_with("application/jsonx", br#"{"text":"Hi."}"#.to_vec()),
        refuse(415, "unsupported_media_type"),
    );
    add(
        "no Content-Type",
        Req::Http {
            method: "POST",
            path: "/generate",
            headers: vec![],
            body: br#"{"text":"Hi."}"#.to_vec(),
        },
        refuse(415, "unsupported_media_type"),
    );
    add(
        "Content-Type with charset passes",
        post_with("Application/JSON; charset=utf-8", ok_body),
        Want::Pass,
    );

    // --- framing and size (raw bytes) -----------------------------------------------------------
    add(
        "Content-Length of 11 MiB, headers only",
        Req::Raw(
            format!(
                "POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                11 * 1024 * 1024
            )
            .into_bytes(),
        ),
        refuse(413, "body_too_large"),
    );
    add(
        "Content-Length one byte over max_body, headers only",
        Req::Raw(
            format!(
                "POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                MAX_BODY + 1
            )
            .into_bytes(),
        ),
        refuse(413, "body_too_large"),
    );
    add(
        "Content-Length and Transfer-Encoding",
        Req::Raw(
            b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        ),
        bad("conflicting_framing"),
    );
    add(
        "Transfer-Encoding before Content-Length",
        Req::Raw(
            b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n".to_vec(),
        ),
        bad("conflicting_framing"),
    );

    // --- routes and methods -------------------------------------------------------------------
    let call = |method: &'static str, path: &'static str| Req::Http {
        method,
        path,
        headers: vec![("Content-Type", "application/json".to_string())],
        body: Vec::new(),
    };
    add(
        "GET /generate",
        call("GET", "/generate"),
        refuse(405, "method_not_allowed"),
    );
    add(
        "PUT /generate",
        call("PUT", "/generate"),
        refuse(405, "method_not_allowed"),
    );
    add(
        "DELETE /generate",
        call("DELETE", "/generate"),
        refuse(405, "method_not_allowed"),
    );
    add(
        "POST /health",
        call("POST", "/health"),
        refuse(405, "method_not_allowed"),
    );
    add("GET /nope", call("GET", "/nope"), refuse(404, "not_found"));
    add(
        "POST /generate/",
        call("POST", "/generate/"),
        refuse(404, "not_found"),
    );
    add(
        "POST /GENERATE",
        call("POST", "/GENERATE"),
        refuse(404, "not_found"),
    );
    // --- what the pool's model cannot synthesize (refused up front, issue 9) -------------------
    for (name, text) in [
        ("text of punctuation only", "?!... ,;"),
        ("text of emoji only", "🙂🎉"),
        ("text of CJK punctuation only", "。，、！"),
    ] {
        add(name, post_json(p.zero_shot(text)), unproc("nothing_to_speak"));
    }
    add(
        "a digit is something to say",
        post_json(p.zero_shot("7")),
        Want::Pass,
    );
    add(
        "sft with a speaker the pool does not list",
        post_json(json!({"text": "Hi.", "mode": "sft", "spk_id": "nobody"})),
        unproc("unknown_speaker"),
    );
    add(
        "zero_shot without prompt_text",
        post_json(json!({"text": "Hi.", "prompt_audio": p.short_b64})),
        unproc("missing_prompt_text"),
    );
    add(
        "cross_lingual needs no prompt_text",
        post_json(json!({"text": "Hi.", "mode": "cross_lingual", "prompt_audio": p.short_b64})),
        Want::Pass,
    );
    add(
        "unknown pool",
        Req::Http {
            method: "POST",
            path: "/generate",
            headers: vec![
                ("Content-Type", "application/json".to_string()),
                ("X-Cosygate-Pool", "nope".to_string()),
            ],
            body: serde_json::to_vec(&p.zero_shot("Hi.")).expect("serialize"),
        },
        refuse(404, "unknown_pool"),
    );

    rows
}

// ---------------------------------------------------------------------------------------------
// One raw HTTP/1.1 exchange
// ---------------------------------------------------------------------------------------------

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn frame(req: &Req) -> Vec<u8> {
    match req {
        Req::Raw(bytes) => bytes.clone(),
        Req::Http {
            method,
            path,
            headers,
            body,
        } => {
            let mut head = format!(
                "{method} {path} HTTP/1.1\r\nHost: cosygate.test\r\nConnection: close\r\nContent-Length: {}\r\n",
                body.len()
            );
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let mut out = head.into_bytes();
            out.extend_from_slice(body);
            out
        }
    }
}

/// Sends the request and reads the answer's head and exactly `Content-Length` body bytes (no
/// waiting for the server to close).
fn exchange(addr: SocketAddr, req: &Req) -> Result<Answer, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(|e| e.to_string())?;
    s.write_all(&frame(req)).map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let mut read_more = |s: &mut TcpStream, buf: &mut Vec<u8>| -> Result<bool, String> {
        let n = s.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    };
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if !read_more(&mut s, &mut buf)? {
            return Err(format!(
                "closed before the answer's head: {:?}",
                String::from_utf8_lossy(&buf)
            ));
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut answer = Answer {
        status,
        headers,
        body: Vec::new(),
    };
    let len: usize = answer
        .header("Content-Length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
    let body_start = head_end + 4;
    while buf.len() < body_start + len {
        if !read_more(&mut s, &mut buf)? {
            return Err(format!(
                "closed after {} of {len} body bytes; head {head:?}",
                buf.len() - body_start
            ));
        }
    }
    answer.body = buf[body_start..body_start + len].to_vec();
    Ok(answer)
}

/// Checks one answer against its row; `Err` says what is wrong.
fn check(row: &Row, a: &Answer) -> Result<(), String> {
    let request_id = a
        .header("X-Request-Id")
        .filter(|v| !v.is_empty())
        .ok_or("no X-Request-Id")?;
    let snippet = || String::from_utf8_lossy(&a.body[..a.body.len().min(300)]).into_owned();
    match &row.want {
        Want::Pass => {
            if a.status != 200 {
                return Err(format!("status {} (want 200): {}", a.status, snippet()));
            }
            if a.header("Content-Type") != Some("audio/wav") {
                return Err(format!("Content-Type {:?}", a.header("Content-Type")));
            }
            let info = parse_wav(&a.body).map_err(|e| format!("not a valid WAV: {e}"))?;
            if info.frames == 0 {
                return Err("a WAV without audio".into());
            }
        }
        Want::Refuse { status, code } => {
            if a.status != *status {
                return Err(format!("status {} (want {status}): {}", a.status, snippet()));
            }
            if a.header("Content-Type") != Some("application/json") {
                return Err(format!("Content-Type {:?}", a.header("Content-Type")));
            }
            let v: Value =
                serde_json::from_slice(&a.body).map_err(|e| format!("not JSON ({e}): {}", snippet()))?;
            let top = v.as_object().ok_or("the body is not an object")?;
            let inner = v["error"].as_object().ok_or("no `error` object")?;
            let mut keys: Vec<&str> = inner.keys().map(String::as_str).collect();
            keys.sort_unstable();
            if top.len() != 1 || keys != ["code", "message", "request_id"] {
                return Err(format!(
                    "error shape is not {{error:{{code,message,request_id}}}}: {v}"
                ));
            }
            let got = v["error"]["code"].as_str().unwrap_or_default();
            if got != *code {
                return Err(format!("code {got:?} (want {code:?}): {v}"));
            }
            if v["error"]["message"].as_str().is_none_or(str::is_empty) {
                return Err(format!("empty message: {v}"));
            }
            if v["error"]["request_id"].as_str() != Some(request_id) {
                return Err(format!("X-Request-Id {request_id} differs from the body's: {v}"));
            }
            if *status == 405 && a.header("Allow").is_none() {
                return Err("405 without Allow".into());
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn every_bad_request_is_refused_with_its_code_and_never_reaches_a_backend() {
    let sim = Sim::start(&["--rtf", "0.01", "--first-chunk-ms", "5"]);
    let gw = Gateway::start(&pool_yaml("cosyvoice_fastapi", &[sim.addr()], ""));
    let prompts = Prompts::new();
    let rows = rows(&prompts);
    let refused = rows
        .iter()
        .filter(|r| matches!(r.want, Want::Refuse { .. }))
        .count();
    assert!(refused >= 45, "the table has {refused} bad requests");

    let started = Instant::now();
    let mut failures = Vec::new();
    for row in &rows {
        let t = Instant::now();
        match exchange(gw.addr, &row.req).and_then(|a| check(row, &a)) {
            Ok(()) => {}
            Err(e) => failures.push(format!("{}: {e}", row.name)),
        }
        if t.elapsed() > Duration::from_secs(3) {
            eprintln!("slow row {:?}: {:?}", row.name, t.elapsed());
        }
    }
    let passing = rows.len() - refused;
    eprintln!(
        "{} rows ({refused} refused, {passing} passing) in {:?}",
        rows.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n  {}",
        failures.len(),
        rows.len(),
        failures.join("\n  ")
    );
    let stats = sim.stats().await;
    assert_eq!(
        stats["requests"],
        json!(passing),
        "exactly the {passing} passing rows reached the backend: {stats}"
    );
}
