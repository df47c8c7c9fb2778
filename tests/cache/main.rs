//! The WAV cache end to end (issue 4), through the real binaries: client → cosygate →
//! cosyvoice-sim (and a real redis-server for the shared tier). Every assertion is about what a
//! user sees (status, `X-Cache`, `Age`, `X-Cache-Key`, the exact bytes) or what the backend
//! itself counted (`/__sim/stats`), plus the disk tier's files where the README promises a
//! layout. `in_process` drives `cosygate::cache::Cache` in-process, as the admin purge will;
//! `crash` SIGKILLs a gateway while it stores and checks what the disk tier kept; `degrade` walks
//! the degradation ladder (approximate cached answers when no backend can serve).
//!
//! One concern per module; `support` holds what several of them use.

#[path = "../common/mod.rs"]
mod common;

mod crash;
mod degrade;
mod disk;
mod hits;
mod in_process;
mod keys;
mod redis;
mod support;
mod tenants;
