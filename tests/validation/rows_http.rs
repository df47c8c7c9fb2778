//! Rows about the HTTP around the body: media types, framing and size (raw bytes), routes and
//! methods, and what the pool's model cannot synthesize (refused up front).

use crate::table::{bad, post_json, post_with, refuse, unproc, Prompts, Req, Want, MAX_BODY};
use serde_json::json;

pub fn add_rows(p: &Prompts, add: &mut dyn FnMut(&str, Req, Want)) {
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
}
