//! `cosyvoice-sim`: a simulated CosyVoice3 FastAPI backend for tests, benchmarks and the demo.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    cosyvoice_sim::main(cosyvoice_sim::Args::parse())
}
