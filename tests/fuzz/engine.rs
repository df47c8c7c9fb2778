//! The fuzzing engine behind `tests/fuzz.rs`: proptest's generators and shrinking, driven either
//! for a fixed small number of cases (the test suite) or for `FUZZ_SECONDS` seconds per target
//! (the long run). Every run first replays the target's seed corpus (`tests/fuzz-corpus/NAME/`),
//! then mixes three kinds of input: arbitrary bytes, corpus files mutated the way coverage
//! fuzzers mutate (flips, inserts, deletions, duplications, dictionary splices), and the
//! target's own structure-aware generator. A failure panics with the seed of its batch and the
//! shrunk input, so it can be replayed.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};
use std::fmt::Debug;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The seed corpus of one target: every file in `tests/fuzz-corpus/<name>/`, sorted by name.
pub fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the seed corpus {} is missing: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let out: Vec<Vec<u8>> = files
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect();
    assert!(!out.is_empty(), "the seed corpus {} is empty", dir.display());
    out
}

/// One mutation of a byte string, as coverage fuzzers apply them.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, byte: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
    Duplicate { at: usize, len: usize },
    Splice { at: usize, token: usize },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        3 => (any::<usize>(), prop::sample::select(vec![0u8, 0xff, 0x7f, 0x80, b'-', b'"', b'\r', b'\n', b'0', b'9', b'{', b'}', b':', b' ']))
            .prop_map(|(at, byte)| Mutation::Set { at, byte }),
        2 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8)).prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        2 => (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        1 => (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
        3 => (any::<usize>(), any::<usize>()).prop_map(|(at, token)| Mutation::Splice { at, token }),
        1 => any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation], dictionary: &[&[u8]]) -> Vec<u8> {
    for m in mutations {
        let n = bytes.len();
        let pos = |at: usize| if n == 0 { 0 } else { at % (n + 1) };
        match m {
            Mutation::Flip { at, bit } if n > 0 => bytes[at % n] ^= 1 << bit,
            Mutation::Set { at, byte } if n > 0 => bytes[at % n] = *byte,
            Mutation::Insert { at, bytes: b } => {
                let p = pos(*at);
                bytes.splice(p..p, b.iter().copied());
            }
            Mutation::Delete { at, len } if n > 0 => {
                let p = at % n;
                bytes.drain(p..(p + len).min(n));
            }
            Mutation::Duplicate { at, len } if n > 0 => {
                let p = at % n;
                let piece: Vec<u8> = bytes[p..(p + len).min(n)].to_vec();
                bytes.splice(p..p, piece);
            }
            Mutation::Splice { at, token } if !dictionary.is_empty() => {
                let p = pos(*at);
                bytes.splice(p..p, dictionary[token % dictionary.len()].iter().copied());
            }
            Mutation::Truncate { at } => bytes.truncate(pos(*at)),
            _ => {}
        }
    }
    bytes
}

/// Arbitrary bytes, mutated corpus files and the target's own generator, in the proportions
/// 1 : 3 : 3. `dictionary` holds the tokens the target's format is made of.
pub fn inputs(
    corpus: Vec<Vec<u8>>,
    dictionary: &'static [&'static [u8]],
    structured: impl Strategy<Value = Vec<u8>> + 'static,
) -> impl Strategy<Value = Vec<u8>> {
    let mutated = (
        prop::sample::select(corpus),
        prop::collection::vec(mutation(), 1..8),
    )
        .prop_map(move |(seed, ms)| apply(seed, &ms, dictionary));
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..2048),
        3 => mutated,
        3 => structured,
    ]
}

/// How long the long run lasts per target, from `FUZZ_SECONDS`; None in the ordinary suite.
pub fn long_run() -> Option<Duration> {
    std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

/// Runs `property` on the corpus as is, then on `short_cases` generated inputs (or, with
/// `FUZZ_SECONDS` set, on as many as fit in that time) and prints the figures. Panics on the
/// first failing input, after shrinking it.
pub fn fuzz<S>(
    name: &str,
    strategy: S,
    short_cases: u32,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let started = Instant::now();
    let budget = long_run();
    let batch = if budget.is_some() { 2000 } else { short_cases };
    let mut executions: u64 = 0;
    loop {
        let seed: [u8; 32] = rand::random();
        let config = Config {
            cases: batch,
            failure_persistence: None,
            max_shrink_iters: 4096,
            ..Config::default()
        };
        let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
        match runner.run(&strategy, &property) {
            Ok(()) => executions += u64::from(batch),
            Err(TestError::Fail(why, input)) => panic!(
                "fuzz {name}: FAILED after {executions} executions (batch seed {}): {why}\nminimal input: {input:#?}",
                hex::encode(seed)
            ),
            Err(TestError::Abort(why)) => panic!("fuzz {name}: aborted: {why}"),
        }
        match budget {
            Some(b) if started.elapsed() < b => continue,
            _ => break,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz {name}: {executions} executions in {secs:.0} s ({:.0}/s), 0 failures",
        executions as f64 / secs.max(1e-9)
    );
}
