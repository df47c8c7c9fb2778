//! Fuzzing, short run: every fuzz target (`tests/fuzz/targets.rs`) replays its seed corpus in
//! `tests/fuzz-corpus/NAME/`, then runs a few hundred proptest-generated inputs (arbitrary
//! bytes, mutated corpus files, structure-aware generators) in seconds. With `FUZZ_SECONDS=N`
//! each target runs for N seconds instead. The long, coverage-guided runs use the same targets
//! through `cargo fuzz` (`fuzz/`, see the README's "Fuzzing").

#[path = "fuzz/engine.rs"]
mod engine;
#[path = "fuzz/gen.rs"]
mod gen;
#[path = "fuzz/targets.rs"]
mod targets;
#[path = "fuzz/tokens.rs"]
mod tokens;

use engine::{corpus, fuzz, inputs};
use proptest::prelude::*;

/// Replays a target's seed corpus, each file as it is.
fn replay(name: &str, target: fn(&[u8])) {
    for input in corpus(name) {
        target(&input);
    }
}

/// Runs a bytes target on generated inputs; a panic is a failure (shrunk by proptest).
fn run(name: &str, strategy: impl Strategy<Value = Vec<u8>>, cases: u32, target: fn(&[u8])) {
    replay(name, target);
    fuzz(name, strategy, cases, |bytes| {
        target(&bytes);
        Ok(())
    });
}

#[test]
fn fuzz_request_parser() {
    let strategy = inputs(corpus("request"), tokens::REQUEST_TOKENS, gen::request_body());
    run("request", strategy, 1000, targets::request);
}

#[test]
fn fuzz_wav_reader() {
    let strategy = inputs(corpus("wav"), tokens::WAV_TOKENS, gen::wav_file());
    run("wav", strategy, 1000, targets::wav);
}

#[test]
fn fuzz_multipart_reader() {
    let strategy = inputs(
        corpus("multipart"),
        tokens::MULTIPART_TOKENS,
        gen::multipart_body(),
    );
    run("multipart", strategy, 1000, targets::multipart);
}

#[test]
fn fuzz_multipart_writer_round_trips_through_the_reader() {
    fuzz(
        "multipart-round-trip",
        gen::form_fields(),
        200,
        |(texts, file)| {
            targets::multipart_round_trip(&texts, &file);
            Ok(())
        },
    );
    // The byte-driven form the cargo-fuzz target uses.
    replay("multipart_round_trip", |bytes| {
        let (texts, file) = targets::fields_from_bytes(bytes);
        targets::multipart_round_trip(&texts, &file);
    });
    fuzz(
        "multipart-round-trip-bytes",
        prop::collection::vec(any::<u8>(), 0..512),
        100,
        |bytes| {
            let (texts, file) = targets::fields_from_bytes(&bytes);
            targets::multipart_round_trip(&texts, &file);
            Ok(())
        },
    );
}

#[test]
fn fuzz_upstream_reader() {
    replay("upstream", targets::upstream);
    let strategy = prop_oneof![
        1 => inputs(corpus("upstream"), tokens::HTTP_TOKENS, gen::http_answer()).prop_map(|b| (b, None)),
        1 => gen::well_formed_answer(),
    ];
    fuzz("upstream", strategy, 400, |(answer, expected)| {
        targets::upstream_with(&answer, expected.as_deref());
        Ok(())
    });
}

#[test]
fn fuzz_config_loader() {
    let strategy = inputs(corpus("config"), tokens::YAML_TOKENS, gen::config_text());
    run("config", strategy, 500, targets::config);
}
