//! Starting the simulator: logging, the runtime, binding, the one stdout line announcing the
//! address (`cosyvoice-sim listening on http://IP:PORT`), then serving until killed.

use super::cli::{Args, Serve};
use super::routes::{gradio_router, router};
use super::state::SimState;
use axum::serve::ListenerExt;
use std::io::Write;
use std::process::ExitCode;

/// Runs the simulator with parsed flags until the process is killed. Exit code 2 when it
/// cannot start (for instance, the address is in use).
pub fn main(args: Args) -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cosyvoice-sim: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cosyvoice-sim: {e}");
            ExitCode::from(2)
        }
    }
}

/// Binds, announces the address on stdout, and serves.
pub async fn serve(args: Args) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener.local_addr()?;
    let state = SimState::new(&args);
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "cosyvoice-sim listening on http://{addr}")?;
        out.flush()?;
    }
    if args.serve == Serve::Triton {
        return crate::triton::serve(args, listener, state).await;
    }
    log::info!(
        "{:?} simulator ({:?} API) on {addr}: {} slots, rtf {}, first chunk {} ms, {} Hz, overload {:?}",
        args.model,
        args.serve,
        args.slots,
        args.rtf,
        args.first_chunk_ms,
        args.sample_rate,
        args.overload
    );
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            log::debug!("TCP_NODELAY not set: {e}");
        }
    });
    let app = match args.serve {
        Serve::Gradio => gradio_router(state),
        // Triton returned above.
        Serve::Fastapi | Serve::Triton => router(state, args.json_health),
    };
    axum::serve(listener, app).await
}
