//! `cosygate -c FILE`: reads the configuration, assembles the Pingora server (listeners, the
//! gateway service, health checkers) and runs it. Pingora's own flags (`-t`, `-u`, `-d`) work
//! as usual.

use clap::Parser;
use cosygate::admin::{AdminApp, StateView};
use cosygate::admission::Admission;
use cosygate::backend::deep_probe::DeepProbe;
use cosygate::backend::PoolSet;
use cosygate::cache::Cache;
use cosygate::config::{self, Config};
use cosygate::drain::{self, InFlight};
use cosygate::gateway::{ConnectionGuard, Gateway, PendingHeaders, ACCESS_LOG_TARGET};
use cosygate::jobs::{JobRecords, Jobs};
use cosygate::metrics;
use cosygate::periodic::Periodic;
use cosygate::supervisor::Supervisor;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig, DEFAULT_L4_WRITE_BUFFER_SIZE};

use pingora::server::configuration::Opt;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "cosygate",
    version,
    about = "An edge gateway for self-hosted CosyVoice3 speech synthesis"
)]
struct Cli {
    #[command(flatten)]
    opt: Opt,
}

fn main() -> ExitCode {
    init_logging();
    let mut opt = Cli::parse().opt;
    let Some(path) = opt.conf.take() else {
        eprintln!("cosygate: no configuration file: run `cosygate -c conf/cosygate.yaml` (see the README)");
        return ExitCode::from(2);
    };
    let config = match config::load(&PathBuf::from(&path)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    if opt.test {
        println!("cosygate: the configuration file {path} is valid");
        return ExitCode::SUCCESS;
    }
    match run(opt, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cosygate: {e}");
            ExitCode::from(1)
        }
    }
}

/// Diagnostics as `[time LEVEL target] message`; access lines (target `cosygate::access`) as
/// bare JSON, one per line, so a log shipper can tell them apart by their first byte.
fn init_logging() {
    use std::io::Write;
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            if record.target() == ACCESS_LOG_TARGET {
                writeln!(buf, "{}", record.args())
            } else {
                let time = buf.timestamp_millis();
                writeln!(
                    buf,
                    "[{time} {} {}] {}",
                    record.level(),
                    record.target(),
                    record.args()
                )
            }
        })
        .init();
}

fn run(opt: Opt, config: Config) -> Result<(), String> {
    let Config {
        server: server_conf,
        gateway: conf,
        ..
    } = config;
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);
    server.bootstrap();
    // The sockets are ours now (after a `-u` upgrade too): say which process serves.
    cosygate::pid_file::announce(&server.configuration)?;

    let (pools, health_services) = PoolSet::new(&conf)?;
    let admission = Arc::new(Admission::new(&conf)?);
    if let Some(limits) = admission.rate_limits() {
        let sweeper = Periodic::new(Duration::from_secs(60), move || limits.forget_idle());
        server.add_service(background_service("forget idle rate-limit buckets", sweeper));
    }
    for pool in pools.pools() {
        // Free slots reach queued requests when a backend recovers or a breaker half-opens.
        let scheduler = pool.scheduler.clone();
        let dispatch = Periodic::new(Duration::from_millis(100), move || scheduler.dispatch());
        server.add_service(background_service(&format!("dispatch {}", pool.name), dispatch));
    }
    let supervisor = Supervisor::new(&conf.supervisor, &pools)?;
    if let Some(supervisor) = supervisor.clone() {
        // Restarts backends that stay unhealthy (`backends[].restart`); see the README.
        server.add_service(background_service("backend supervisor", supervisor));
    }
    let pending_headers = Arc::new(PendingHeaders::default());
    let cache = match &conf.cache {
        // The disk tier scans its directory once, before the server starts.
        Some(c) => Some(Arc::new(
            tokio::runtime::Runtime::new()
                .map_err(|e| format!("cannot start a runtime to open the cache: {e}"))?
                .block_on(Cache::open(c))?,
        )),
        None => None,
    };
    let pools = Arc::new(pools);
    for pool in pools.pools() {
        if let Some(probe) = DeepProbe::new(&pools, pool) {
            // `health.synthesize_every`: a tiny synthesis, its audio checked (see `deep_probe`).
            server.add_service(background_service(&format!("deep probe {}", pool.name), probe));
        }
    }
    metrics::register_all();
    if let Some(admin) = &conf.admin {
        let view = Arc::new(StateView {
            pools: pools.clone(),
            cache: cache.clone(),
            supervisor,
            started: std::time::Instant::now(),
        });
        let app = AdminApp::new(admin.token_sha256.as_ref().map(|t| t.0), view);
        let mut service = Service::new("cosygate admin".to_string(), app);
        service.add_tcp(&admin.addr.to_string());
        server.add_service(service);
    }
    let records = match JobRecords::new(&conf)? {
        Some((records, writer)) => {
            // Jobs outlive this process (graceful upgrades): see `jobs::records`.
            server.add_service(background_service("job records", writer));
            Some(records)
        }
        None => None,
    };
    let jobs = Arc::new(Jobs::new(&conf.jobs).with_records(records));
    let in_flight = InFlight::new(jobs.clone(), cache.clone());
    let gateway = Gateway::new(
        admission,
        cache,
        pools,
        jobs,
        conf.limits.clone(),
        pending_headers.clone(),
        in_flight.clone(),
    )
    .with_voices(Arc::new(cosygate::voices::VoiceStore::open(&conf)?));
    // What `http_proxy_service_with_name` builds (`http_proxy` runs `handle_init_modules`), with
    // the connection guard (per-IP cap, header deadline) between the listeners and the proxy.
    let mut proxy = pingora::proxy::http_proxy(&server.configuration, gateway);
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    // An HTTP/2 connection with no open stream is closed like an idle HTTP/1 keep-alive one.
    options.h2_idle_timeout = Some(conf.limits.header_timeout.0);
    proxy.server_options = Some(options);
    let trusted = conf
        .rate_limit
        .as_ref()
        .map(|r| r.trusted_proxies.clone())
        .unwrap_or_default();
    let guard = ConnectionGuard::new(proxy, pending_headers, &conf.limits, trusted);
    let mut service = Service::new("cosygate".to_string(), guard);
    for listen in &conf.listen.0 {
        let addr = listen.addr.to_string();
        match &listen.tls {
            // No L4 read buffer on cleartext: Pingora's default is 64 KiB per connection, held
            // even while it is idle; HTTP/1 and HTTP/2 parsers read into their own buffers.
            None => service.add_listener(
                ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE)),
            ),
            Some(tls) => {
                let cert = tls.cert.to_string_lossy();
                let key = tls.key.to_string_lossy();
                let mut settings = TlsSettings::intermediate(&cert, &key).map_err(|e| {
                    format!("listen {addr}: cannot load TLS certificate {cert} and key {key}: {e}")
                })?;
                settings.enable_h2();
                service.add_tls_with_settings(&addr, None, settings);
            }
        }
    }
    server.add_service(service);
    for health in health_services {
        server.add_service(health);
    }
    // SIGTERM and SIGQUIT: finish what is in flight, then exit (see `drain`).
    let grace = Duration::from_secs(server.configuration.grace_period_seconds.unwrap_or(0));
    drain::watch(server.watch_execution_phase(), in_flight, grace);
    server.run_forever()
}
