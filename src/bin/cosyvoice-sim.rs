//! `cosyvoice-sim`: a simulated CosyVoice3 FastAPI backend for tests, benchmarks and the demo.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    cosygate::sim::main(cosygate::sim::Args::parse())
}
