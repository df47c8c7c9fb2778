//! Admission, table-driven: every way a `/generate` request can be refused, each sent to the
//! real gateway over a raw HTTP/1.1 socket and checked for its status, its stable `code`, the
//! contract's JSON error shape and a matching `X-Request-Id`; the near misses that must pass
//! (limits hit exactly, multi-byte text, MIME-wrapped base64, allowed markers) answered with a
//! valid WAV. Afterwards the simulator's own counter proves that exactly the passing rows
//! reached a backend: a refused request never touches one.
//!
//! This file holds the one test; `table` and the `rows_*` modules the table, `exchange` the
//! socket and the checks.

#[path = "../common/mod.rs"]
mod common;

mod exchange;
mod rows_content;
mod rows_http;
mod rows_json;
mod table;

use crate::common::gateway::{pool_yaml, Gateway};
use crate::common::sim::Sim;
use crate::exchange::{check, exchange};
use crate::table::{rows, Prompts, Want};
use serde_json::json;
use std::time::{Duration, Instant};

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
