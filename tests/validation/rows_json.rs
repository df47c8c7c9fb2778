//! Rows about the JSON body itself: invalid JSON, unknown, duplicate and missing fields, wrong
//! types, the mode, empty and too long text, and `speed`.

use crate::table::{bad, post, post_json, unproc, Prompts, Req, Want, MAX_TEXT_CHARS};
use serde_json::{json, Value};

pub fn add_rows(p: &Prompts, add: &mut dyn FnMut(&str, Req, Want)) {
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
}
