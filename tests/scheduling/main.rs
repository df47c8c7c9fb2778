//! GPU-slot scheduling end to end (issue 5), through the real `cosygate` and `cosyvoice-sim`
//! binaries over HTTP: overload never over-fills a GPU, the queue is fair across clients, failed
//! attempts are retried on another backend (4xx never), circuit breakers keep traffic off a
//! failing backend and probe it once, the fallback voice answers when no backend can, 202 jobs,
//! and a caller who disconnects while queued leaves the queue. Every wait polls with a deadline;
//! every assertion is on what a user sees (status, headers, bytes) or on the sim's own counters.
//!
//! One concern per module; `support` holds what several of them use.

#[path = "../common/mod.rs"]
mod common;

mod breaker;
mod fallback;
mod jobs;
mod overload;
mod retries;
mod support;
