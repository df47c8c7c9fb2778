//! The CosyVoice3 simulator behind the `cosyvoice-sim` binary (see `cosyvoice-sim --help`): a
//! stand-in for CosyVoice's FastAPI server (`runtime/python/fastapi/server.py`) with the same
//! routes and wire format, plus the contract's JSON `POST /generate`, deterministic audio, a
//! latency and GPU-capacity model, and test hooks under `/__sim/`.
//!
//! One concern per module: [`cli`] flags, [`audio`] deterministic PCM, [`model`] latency and
//! capacity, [`faults`] injected failures, [`state`] shared counters, [`form`] FastAPI form
//! semantics, [`synth`] running and answering one synthesis, [`routes`] the HTTP surface,
//! [`server`] startup.
//!
//! Its own crate, not part of the gateway: the gateway's library and dependency tree hold no
//! simulator code and no `axum`. The two share only the WAV helpers (`cosygate-wav`).

pub mod audio;
pub mod cli;
pub mod faults;
pub mod form;
pub mod model;
pub mod routes;
pub mod server;
pub mod state;
pub mod synth;
pub mod triton;
pub mod triton_grpc;

pub use cli::Args;
pub use server::main;
