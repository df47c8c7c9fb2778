//! Tests of config loading (`load.rs`): a minimal file parsing with its defaults, errors
//! carrying their line, and `${VAR}` substitution.

use super::*;
use crate::config::Rung;

const GOOD: &str = "threads: 2\ncosygate:\n  listen:\n    - addr: 127.0.0.1:8080\n  pools:\n    cosyvoice:\n      protocol: cosyvoice_fastapi\n      backends:\n        - addr: 127.0.0.1:50000\n";

fn parse_err(text: &str) -> ConfigError {
    parse("t.yaml", text).expect_err("should fail")
}

#[test]
fn a_minimal_file_parses_with_defaults() {
    let (server, g) = parse("t.yaml", GOOD).expect("parses");
    assert_eq!(server.threads, 2);
    // The drain deadline: the queue's 30 s, then the pool's deadline (30 s + 120 s), then 5 s.
    assert_eq!(server.grace_period_seconds, Some(185));
    let (server, _) = parse(
        "t.yaml",
        &GOOD.replace("threads: 2", "threads: 2\ngrace_period_seconds: 7"),
    )
    .expect("parses");
    assert_eq!(server.grace_period_seconds, Some(7));
    assert_eq!(g.limits.max_text_chars, 200);
    let pool = &g.pools.0["cosyvoice"];
    assert_eq!(pool.sample_rate, 24000);
    assert_eq!(pool.health_path(), "/docs");
    assert_eq!(pool.timeout.0, std::time::Duration::from_secs(120));
}

#[test]
fn errors_carry_the_line() {
    let e = parse_err(&GOOD.replace(
        "protocol: cosyvoice_fastapi",
        "protocol: cosyvoice_fastapi\n      colour: blue",
    ));
    assert_eq!(e.line, Some(8), "{e}");
    assert!(e.message.contains("unknown field `colour`"), "{e}");
    let e = parse_err(&GOOD.replace(
        "protocol: cosyvoice_fastapi",
        "protocol: cosyvoice_fastapi\n      timeout: 30 parsecs",
    ));
    assert_eq!(e.line, Some(8), "{e}");
    let e = parse_err(&GOOD.replace(
        "      backends:\n        - addr: 127.0.0.1:50000\n",
        "      backends: []\n",
    ));
    assert_eq!(e.line, Some(7), "{e}");
    assert!(
        e.message.contains("cosygate.pools.cosyvoice: an empty list"),
        "{e}"
    );
    let e = parse_err(&GOOD.replace("threads: 2", "threads: many"));
    assert_eq!(e.line, Some(1), "{e}");
}

#[test]
fn env_substitution() {
    let env = |n: &str| (n == "TOKEN").then(|| "s3cret".to_string());
    assert_eq!(substitute_env("a: ${TOKEN}\n", env), Ok("a: s3cret\n".into()));
    assert_eq!(
        substitute_env("# ${UNSET}\nb: 1\n", env),
        Ok("# ${UNSET}\nb: 1\n".into())
    );
    let (line, msg) = substitute_env("a: 1\nb: ${UNSET}\n", env).expect_err("unset");
    assert_eq!(line, 2);
    assert!(msg.contains("UNSET"));
}

#[test]
fn triton_options_belong_to_triton_pools_and_model_names_stay_in_their_path() {
    let triton = GOOD.replace(
        "protocol: cosyvoice_fastapi",
        "protocol: triton\n      transport: grpc",
    );
    let (_, g) = parse("t.yaml", &triton).expect("parses");
    assert_eq!(g.pools.0["cosyvoice"].model_name, "cosyvoice3");
    let e = parse_err(&GOOD.replace(
        "protocol: cosyvoice_fastapi",
        "protocol: cosyvoice_fastapi\n      transport: grpc",
    ));
    assert!(e.message.contains("only to protocol: triton"), "{e}");
    let e = parse_err(&GOOD.replace(
        "protocol: cosyvoice_fastapi",
        "protocol: triton\n      model_name: ../x",
    ));
    assert!(e.message.contains("model_name may only contain"), "{e}");
}

#[test]
fn the_degradation_ladder_defaults_to_same_voice_then_fallback_and_lists_each_rung_once() {
    let (_, g) = parse("t.yaml", GOOD).expect("parses");
    let degrade = &g.pools.0["cosyvoice"].degrade;
    assert_eq!(
        (degrade.ladder.as_slice(), degrade.fallback),
        (&[Rung::SameVoice][..], true)
    );
    let with = |ladder: &str| {
        GOOD.replace(
            "      backends:",
            &format!("      degrade: {ladder}\n      backends:"),
        )
    };
    let (_, g) = parse(
        "t.yaml",
        &with("{ ladder: [same_text, same_voice], fallback: false }"),
    )
    .expect("parses");
    let degrade = &g.pools.0["cosyvoice"].degrade;
    assert_eq!(degrade.ladder, vec![Rung::SameText, Rung::SameVoice]);
    assert!(!degrade.fallback);
    let e = parse_err(&with("{ ladder: [same_voice, same_voice] }"));
    assert!(e.message.contains("`same_voice` is listed twice"), "{e}");
    let e = parse_err(&with("{ ladder: [same_speaker] }"));
    assert!(e.message.contains("same_speaker"), "{e}");
}
