//! `cosygate -t` and startup refuse a bad configuration with `file:line: what is wrong` and a
//! non-zero exit; a good one passes.

mod common;

use common::gateway::check_config;

const GOOD: &str = "threads: 1
cosygate:
  listen:
    - addr: 127.0.0.1:18080
  limits: { max_body: 10MiB }
  pools:
    cosyvoice:
      protocol: cosyvoice_fastapi
      timeout: 30s
      backends:
        - addr: 127.0.0.1:50000
";

#[test]
fn a_good_file_passes_the_check() {
    let (code, out) = check_config(GOOD);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("is valid"), "{out}");
}

#[test]
fn the_shipped_example_configs_are_valid() {
    for file in ["conf/cosygate.yaml", "conf/demo.yaml"] {
        let text = std::fs::read_to_string(file).expect("shipped config");
        let (code, out) = check_config(&text);
        assert_eq!(code, 0, "{file}: {out}");
    }
}

#[test]
fn each_mistake_is_reported_with_its_line() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "unknown key",
            "      timeout: 30s\n      colour: blue\n",
            "cosygate.yaml:10: cosygate.pools.cosyvoice: unknown field `colour`",
        ),
        (
            "bad duration",
            "      timeout: 30 parsecs\n",
            "cosygate.yaml:9: cosygate.pools.cosyvoice.timeout: unknown duration unit",
        ),
        (
            "duration without unit",
            "      timeout: 30\n",
            "cosygate.yaml:9: cosygate.pools.cosyvoice.timeout: duration \"30\" has no unit",
        ),
        (
            "bad protocol",
            "      timeout: 30s\n      protocol: grpc\n",
            "cosygate.yaml:",
        ),
        (
            "unset variable",
            "      timeout: ${COSYGATE_TEST_UNSET}\n",
            "cosygate.yaml:9: environment variable COSYGATE_TEST_UNSET is not set",
        ),
    ];
    for (what, replacement, expected) in cases {
        let text = GOOD.replace("      timeout: 30s\n", replacement);
        let (code, out) = check_config(&text);
        assert_ne!(code, 0, "{what}: {out}");
        assert!(out.contains(expected), "{what}: expected {expected:?} in {out:?}");
    }
    let bad_size = GOOD.replace("max_body: 10MiB", "max_body: 10 MiBs");
    let (code, out) = check_config(&bad_size);
    assert_ne!(code, 0);
    assert!(
        out.contains("cosygate.yaml:5: cosygate.limits.max_body: unknown size unit"),
        "{out}"
    );

    let no_backends = GOOD.replace(
        "      backends:\n        - addr: 127.0.0.1:50000\n",
        "      backends: []\n",
    );
    let (code, out) = check_config(&no_backends);
    assert_ne!(code, 0);
    assert!(
        out.contains("cosygate.yaml:8: cosygate.pools.cosyvoice: an empty list"),
        "{out}"
    );

    let unknown_top = GOOD.replace("  limits:", "  limitz:");
    let (code, out) = check_config(&unknown_top);
    assert_ne!(code, 0);
    assert!(
        out.contains("cosygate.yaml:5: cosygate: unknown field `limitz`"),
        "{out}"
    );
}

#[test]
fn the_gateway_refuses_to_start_on_a_bad_file() {
    let dir = tempfile::tempdir().expect("dir");
    let conf = dir.path().join("bad.yaml");
    std::fs::write(&conf, GOOD.replace("30s", "soon")).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cosygate"))
        .arg("-c")
        .arg(&conf)
        .output()
        .expect("run");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.yaml:9: "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Redis passwords never reach `cosygate -t`'s output, whatever is wrong with the file: a URL
/// where a section belongs, a URL the client cannot read, a URL given to the wrong key.
#[test]
fn redis_passwords_never_appear_in_config_messages() {
    const PW: &str = "hunter2Secret";
    let with = |section: &str| format!("{GOOD}{section}");
    for (what, yaml, expected) in [
        (
            "a URL where the section belongs",
            with("  rate_limit:\n    store: redis\n    redis: \"redis://:hunter2Secret@127.0.0.1:6379/0\"\n"),
            "cosygate.yaml:14: cosygate.rate_limit.redis: invalid type: a string, expected struct RedisConf",
        ),
        (
            "an unreadable URL",
            with("  cache:\n    redis: { url: \"redis://:hunter2Secret@[::1:6379/0\" }\n"),
            "cosygate.yaml:13: cache.redis.url is not a valid Redis URL (",
        ),
        (
            "a URL given as the store",
            with("  rate_limit:\n    store: \"redis://user:hunter2Secret@h:1/0\"\n"),
            "unknown variant `redis://user:****@h:1/0`",
        ),
    ] {
        let (code, out) = check_config(&yaml);
        assert_ne!(code, 0, "{what}: {out}");
        assert!(!out.contains(PW), "{what}: the password shows: {out}");
        assert!(out.contains(expected), "{what}: {out}");
    }
    // A good file with a password passes, and says nothing of it.
    let (code, out) = check_config(&with(
        "  rate_limit:\n    store: redis\n    redis: { url: \"redis://:hunter2Secret@127.0.0.1:1/0\" }\n",
    ));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(PW), "{out}");
}

/// `cosygate -t` refuses a fallback command where the request text could be read as an option
/// (or run as code), pointing at the line and saying what to write; the safe forms pass.
#[test]
fn a_fallback_command_that_could_read_the_text_as_an_option_is_refused() {
    let with = |command: &str| format!("{GOOD}  fallback:\n    command: {command}\n");
    for (command, says) in [
        (
            r#"["espeak-ng", "-v", "en-us", "-w", "{out}", "{text}"]"#,
            "cosygate.yaml:13: fallback.command: {text} in \"{text}\" is not safe: a text starting with '-' would be read as an option",
        ),
        (
            r#"["espeak-ng", "-w", "{out}", "-f", "{text}"]"#,
            "is not safe",
        ),
        (
            r#"["sh", "-c", "espeak-ng -w {out} '{text}'"]"#,
            "sh runs its arguments as code",
        ),
        (r#"["espeak-ng", "--stdin"]"#, "cosygate.yaml:13: fallback.command has no {out} argument"),
    ] {
        let (code, out) = check_config(&with(command));
        assert_ne!(code, 0, "{command}: {out}");
        assert!(out.contains(says), "{command}: expected {says:?} in {out}");
        assert!(out.contains("--stdin") || says.contains("{out}"), "says what to write: {out}");
    }
    for command in [
        r#"["espeak-ng", "-v", "en-us", "-w", "{out}", "--stdin"]"#,
        r#"["espeak-ng", "-w", "{out}", "--", "{text}"]"#,
        r#"["piper", "--output_file={out}", "--text={text}"]"#,
    ] {
        let (code, out) = check_config(&with(command));
        assert_eq!(code, 0, "{command}: {out}");
    }
}

/// `cosygate -t` loads every TLS listener's certificate and key as the listener will: a good
/// pair passes with the usual line; a missing file, a file that is not PEM, and a key from
/// another pair are refused at the listener's line, naming the file and what to do.
#[test]
fn tls_certificate_and_key_are_checked() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = common::tls::make_pair(&dir.path().join("a"));
    let (_, other_key) = common::tls::make_pair(&dir.path().join("b"));
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate\n").expect("write");
    let broken = dir.path().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let missing = dir.path().join("missing.pem");
    let with = |c: &std::path::Path, k: &std::path::Path| {
        GOOD.replace(
            "    - addr: 127.0.0.1:18080\n",
            &format!(
                "    - addr: 127.0.0.1:18080\n    - addr: 127.0.0.1:18443\n      tls: {{ cert: {}, key: {} }}\n",
                c.display(),
                k.display()
            ),
        )
    };

    let (code, out) = check_config(&with(&cert, &key));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("cosygate: the configuration file cosygate.yaml is valid"),
        "{out}"
    );

    let (c, k, g, b, m) = (
        cert.display(),
        key.display(),
        garbage.display(),
        broken.display(),
        missing.display(),
    );
    for (what, yaml, expected) in [
        (
            "a missing certificate",
            with(&missing, &key),
            format!("cosygate.yaml:5: listen 127.0.0.1:18443: cannot read the TLS certificate {m}: No such file"),
        ),
        (
            "a missing key",
            with(&cert, &missing),
            format!("cosygate.yaml:5: listen 127.0.0.1:18443: cannot read the TLS key {m}"),
        ),
        (
            "a certificate file without PEM",
            with(&garbage, &key),
            format!("cosygate.yaml:5: listen 127.0.0.1:18443: the certificate file {g} holds no PEM certificate"),
        ),
        (
            "a certificate that is not DER inside",
            with(&broken, &key),
            format!("cosygate.yaml:5: listen 127.0.0.1:18443: the certificate file {b} is not valid PEM"),
        ),
        (
            "a key file without PEM",
            with(&cert, &garbage),
            format!("cosygate.yaml:5: listen 127.0.0.1:18443: the key file {g} holds no PEM private key"),
        ),
        (
            "the certificate given as the key",
            with(&cert, &cert),
            format!("the key file {c} holds no PEM private key"),
        ),
        (
            "a key from another pair",
            with(&cert, &other_key),
            format!(
                "cosygate.yaml:5: listen 127.0.0.1:18443: the key {} does not match the certificate {c}; make a new pair with scripts/make-cert.sh",
                other_key.display()
            ),
        ),
    ] {
        let (code, out) = check_config(&yaml);
        assert_ne!(code, 0, "{what}: {out}");
        assert!(out.contains(&expected), "{what}: expected {expected:?} in {out}");
        assert!(!out.contains("is valid"), "{what}: {out}");
    }
    let _ = k;
}
