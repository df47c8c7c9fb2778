//! Structure-aware generators for the fuzz targets in `tests/fuzz.rs`: inputs that get past
//! the first checks of each format (valid JSON with the API's fields, RIFF headers with
//! consistent sizes, multipart bodies with the right boundary, HTTP answers with chunked or
//! sized bodies, configs with every section), then go wrong in one place.

use crate::targets::BOUNDARY;
use base64::Engine;
use proptest::prelude::*;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A small PCM WAV (16-bit mono) with `frames` frames at `rate`.
pub fn small_wav(rate: u32, frames: usize) -> Vec<u8> {
    let pcm: Vec<u8> = (0..frames)
        .flat_map(|i| ((i as i16).wrapping_mul(97)).to_le_bytes())
        .collect();
    cosygate::api::wav::pcm16_to_wav(&pcm, rate).unwrap_or_default()
}

/// JSON bodies with the API's fields, values that are right, wrong or hostile.
pub fn request_body() -> impl Strategy<Value = Vec<u8>> {
    let text = prop_oneof![
        Just("Hello world.".to_string()),
        Just("-f/etc/hostname".to_string()),
        Just("--path=/tmp -f/etc/passwd".to_string()),
        Just("<|endofprompt|>x".to_string()),
        "[a-z \u{4e2d}\u{0}-\u{1f}<>|]{0,60}",
        any::<String>(),
        (1usize..400).prop_map(|n| "a".repeat(n)),
    ];
    let value = prop_oneof![
        text.clone().prop_map(serde_json::Value::from),
        prop::sample::select(vec!["sft", "zero_shot", "instruct", "cross_lingual", "x"])
            .prop_map(serde_json::Value::from),
        (8000u32..50000, 0usize..4000).prop_map(|(r, n)| serde_json::Value::from(b64(&small_wav(r, n)))),
        any::<f64>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
        Just(serde_json::json!([1, {"a": []}])),
    ];
    let key = prop::sample::select(vec![
        "text",
        "mode",
        "prompt_audio",
        "prompt_text",
        "instruct_text",
        "spk_id",
        "seed",
        "speed",
        "voice",
    ]);
    prop::collection::vec((key, value), 0..8).prop_map(|members| {
        let body: Vec<String> = members
            .iter()
            .map(|(k, v)| format!("{}:{v}", serde_json::Value::from(*k)))
            .collect();
        format!("{{{}}}", body.join(",")).into_bytes()
    })
}

/// RIFF/WAVE files whose RIFF size is right, with fmt fields, extra chunks and a data chunk
/// that may lie.
pub fn wav_file() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![1u16, 3, 0xfffe, 0, 2]),
        prop::sample::select(vec![0u16, 1, 2, 6, 65535]),
        prop::sample::select(vec![0u32, 8000, 16000, 24000, 48000, u32::MAX]),
        prop::sample::select(vec![0u16, 7, 8, 16, 24, 32, 64]),
        any::<u16>(),
        prop::collection::vec(
            (
                prop::sample::select(vec![*b"LIST", *b"fact", *b"JUNK", *b"fmt ", *b"data"]),
                prop::collection::vec(any::<u8>(), 0..9),
            ),
            0..3,
        ),
        prop::collection::vec(any::<u8>(), 0..256),
        prop::option::of(any::<u32>()),
        0u16..40,
    )
        .prop_map(
            |(tag, channels, rate, bits, align, extra, data, data_len, fmt_extra)| {
                let mut body = Vec::new();
                body.extend_from_slice(b"WAVE");
                let mut fmt = Vec::new();
                fmt.extend_from_slice(&tag.to_le_bytes());
                fmt.extend_from_slice(&channels.to_le_bytes());
                fmt.extend_from_slice(&rate.to_le_bytes());
                let byte_rate = rate
                    .wrapping_mul(u32::from(channels))
                    .wrapping_mul(u32::from(bits) / 8);
                fmt.extend_from_slice(&byte_rate.to_le_bytes());
                fmt.extend_from_slice(&align.to_le_bytes());
                fmt.extend_from_slice(&bits.to_le_bytes());
                if tag == 0xfffe || fmt_extra > 20 {
                    fmt.extend_from_slice(&fmt_extra.to_le_bytes());
                    fmt.extend(std::iter::repeat_n(0u8, usize::from(fmt_extra.min(22))));
                }
                let mut chunk = |id: &[u8], len: u32, bytes: &[u8]| {
                    body.extend_from_slice(id);
                    body.extend_from_slice(&len.to_le_bytes());
                    body.extend_from_slice(bytes);
                    if bytes.len() % 2 == 1 {
                        body.push(0);
                    }
                };
                chunk(b"fmt ", fmt.len() as u32, &fmt);
                for (id, bytes) in &extra {
                    chunk(id, bytes.len() as u32, bytes);
                }
                chunk(b"data", data_len.unwrap_or(data.len() as u32), &data);
                let mut out = b"RIFF".to_vec();
                out.extend_from_slice(&(body.len() as u32).to_le_bytes());
                out.extend_from_slice(&body);
                out
            },
        )
}

fn part() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![
            "tts_text",
            "prompt_text",
            "prompt_wav",
            "spk_id",
            "",
            "a\"b",
            "x;y",
        ]),
        prop::option::of(prop::sample::select(vec![
            "a.wav",
            "",
            "../../etc/passwd",
            "\u{4e2d}.wav",
        ])),
        prop::sample::select(vec![
            "",
            "Content-Type: audio/wav\r\n",
            "Content-Type: text/plain; charset=latin1\r\n",
            "X: y\r\n",
        ]),
        prop::collection::vec(any::<u8>(), 0..200),
        prop::sample::select(vec!["form-data", "attachment", "FORM-DATA", ""]),
    )
        .prop_map(|(name, file, headers, data, disposition)| {
            let mut p = format!("Content-Disposition: {disposition}; name=\"{name}\"");
            if let Some(f) = file {
                p.push_str(&format!("; filename=\"{f}\""));
            }
            p.push_str("\r\n");
            p.push_str(headers);
            p.push_str("\r\n");
            let mut out = p.into_bytes();
            out.extend_from_slice(&data);
            out
        })
}

/// Multipart bodies with the reader's boundary: parts with odd names, file names and headers,
/// sometimes without a closing delimiter or with a preamble and epilogue.
pub fn multipart_body() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(part(), 0..5),
        prop::sample::select(vec!["", "preamble\r\n"]),
        prop::sample::select(vec!["--XyZ--\r\n", "--XyZ--", "--XyZ", "", "--XyZ--\r\nepilogue"]),
    )
        .prop_map(|(parts, preamble, close)| {
            let mut out = preamble.as_bytes().to_vec();
            for p in parts {
                out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
                out.extend_from_slice(&p);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(close.as_bytes());
            out
        })
}

/// Text fields (names and values as the gateway may send them) and a file for the writer.
pub fn form_fields() -> impl Strategy<Value = (Vec<(String, String)>, Vec<u8>)> {
    let name = prop::sample::select(vec!["tts_text", "prompt_text", "instruct_text", "spk_id"])
        .prop_map(String::from);
    let value = prop_oneof![
        "[a-zA-Z0-9 .,!?\u{4e2d}\u{6587}\n\t<|>-]{0,80}",
        Just("--cosygate-".to_string()),
        Just("\r\n--\r\n".to_string()),
    ];
    (
        prop::collection::vec((name, value), 0..5),
        prop::collection::vec(any::<u8>(), 0..2048),
    )
}

fn status_line() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("HTTP/1.1 200 OK\r\n".to_string()),
        1 => prop::sample::select(vec![
            "HTTP/1.0 200 OK\r\n", "HTTP/1.1 500 Internal Server Error\r\n", "HTTP/1.1 422 Unprocessable\r\n",
            "HTTP/1.1 204 No Content\r\n", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n",
            "HTTP/1.1 99999 X\r\n", "HTTP/2 200\r\n", "ICY 200 OK\r\n",
        ])
        .prop_map(String::from),
    ]
}

/// HTTP answers that are almost right: chunked with odd sizes and extensions, sized bodies
/// whose length lies, both framings at once, cut anywhere.
pub fn http_answer() -> impl Strategy<Value = Vec<u8>> {
    let chunk = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 1..64).prop_map(|d| {
            let mut c = format!("{:x}\r\n", d.len()).into_bytes();
            c.extend_from_slice(&d);
            c.extend_from_slice(b"\r\n");
            c
        }),
        1 => prop::sample::select(vec![
            "ffffffffffffffffff\r\n", "-5\r\nabc\r\n", "4;ext=\"x\"\r\nabcd\r\n", "4\r\nab", "4\r\nabcdXX",
            "0x4\r\nabcd\r\n", " 4\r\nabcd\r\n", "4 \r\nabcd\r\n", "4\nabcd\n", "100000000\r\n",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ];
    (
        status_line(),
        prop::sample::select(vec![0u8, 1, 2, 3]),
        prop::collection::vec(chunk, 0..6),
        prop::sample::select(vec!["0\r\n\r\n", "0\r\nX-Trailer: 1\r\n\r\n", "0\r\n", ""]),
        any::<u32>(),
        prop::option::of(any::<usize>()),
    )
        .prop_map(|(status, framing, chunks, last, len, cut)| {
            let body: Vec<u8> = chunks.concat();
            let mut head = status;
            match framing {
                0 => head.push_str("Transfer-Encoding: chunked\r\n"),
                1 => head.push_str(&format!("Content-Length: {}\r\n", len % 512)),
                2 => head.push_str(&format!(
                    "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
                    len % 512
                )),
                _ => head.push_str("Connection: close\r\n"),
            }
            head.push_str("\r\n");
            let mut out = head.into_bytes();
            out.extend_from_slice(&body);
            if framing == 0 || framing == 2 {
                out.extend_from_slice(last.as_bytes());
            }
            if let Some(cut) = cut {
                out.truncate(cut % (out.len() + 1));
            }
            out
        })
}

/// Correct answers (chunked in random pieces, or sized), with the body they carry.
pub fn well_formed_answer() -> impl Strategy<Value = (Vec<u8>, Option<Vec<u8>>)> {
    (
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 0..8),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(pieces, chunked, ext)| {
            let body: Vec<u8> = pieces.concat();
            let mut out = Vec::new();
            if chunked {
                out.extend_from_slice(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                for p in &pieces {
                    let size = if ext {
                        format!("{:X};a=b", p.len())
                    } else {
                        format!("{:x}", p.len())
                    };
                    out.extend_from_slice(size.as_bytes());
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(p);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            } else {
                out.extend_from_slice(
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
                );
                out.extend_from_slice(&body);
            }
            (out, Some(body))
        })
}

/// A valid config with every section, then some of its lines replaced by hostile values.
const BASE_CONFIG: &str = r#"threads: 2
grace_period_seconds: 1
cosygate:
  listen:
    - addr: 127.0.0.1:8080
  limits: { max_body: 10MiB, max_text_chars: 200, max_prompt_seconds: 30 }
  auth:
    allow_anonymous: true
    tokens: [ { name: a, sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", tenant: a } ]
  rate_limit:
    per_ip: { capacity: 5, refill: 1, per: 1m }
    store: redis
    redis: { url: "redis://:s3cr3tPassw0rd@127.0.0.1:6379/0", timeout: 50ms }
  cache:
    ttl: 24h
    memory: { max: 64MiB }
    redis: { url: "redis://:s3cr3tPassw0rd@127.0.0.1:6379/0" }
  fallback:
    command: ["espeak-ng", "-v", "en-us", "-w", "{out}", "--stdin"]
  jobs: { keep: 10m }
  pools:
    p:
      protocol: cosyvoice_fastapi
      backends:
        - addr: 127.0.0.1:50000
"#;

pub fn config_text() -> impl Strategy<Value = Vec<u8>> {
    let value = prop::sample::select(vec![
        "~",
        "[]",
        "{}",
        "-1",
        "0",
        "1e999",
        "18446744073709551616",
        "10XiB",
        "${UNSET}",
        "${SET}",
        "\"redis://:s3cr3tPassw0rd@h\"",
        "!!binary aGk=",
        "&a [1]",
        "*a",
        "\"{text}\"",
        "[\"sh\", \"-c\", \"{text}\"]",
        "[\"espeak-ng\", \"{text}\"]",
        "[\"espeak-ng\", \"--\", \"{text}\"]",
        "[\"e\", \"--text={text}\"]",
        "\"\"",
        "yes",
        "0x10",
    ]);
    let edit = (any::<prop::sample::Index>(), value, any::<bool>());
    prop::collection::vec(edit, 0..4).prop_map(|edits| {
        let mut lines: Vec<String> = BASE_CONFIG.lines().map(String::from).collect();
        for (at, value, whole) in edits {
            let i = at.index(lines.len());
            let line = &lines[i];
            lines[i] = match line.split_once(": ") {
                Some((key, _)) if !whole => format!("{key}: {value}"),
                _ => format!("{}{value}", " ".repeat(line.len() - line.trim_start().len())),
            };
        }
        (lines.join("\n") + "\n").into_bytes()
    })
}
