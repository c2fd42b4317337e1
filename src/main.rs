//! The `edgerelay` command: run the relay, check a config, run the benchmarks.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "edgerelay",
    version,
    about = "Camera events to MQTT brokers and object storage, with a durable outbox"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay.
    Run {
        /// Config file.
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Validate a config file; print every problem as `file:line: key: what is wrong`.
    Check {
        /// Config file.
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Measure the relay on this machine (outbox, broker ceiling, end to end, latency, memory,
    /// drain, RTSP parsing) and print one Markdown table.
    Bench {
        /// Smaller runs (seconds instead of a minute or so).
        #[arg(long)]
        quick: bool,
    },
    /// Show what a camera offers (ONVIF device, events, metadata stream; VAPIX) and print a
    /// `[[camera]]` stanza. Credentials from EDGERELAY_PROBE_USERNAME / EDGERELAY_PROBE_PASSWORD.
    Probe {
        /// The camera, `http://HOST[:PORT]`.
        url: String,
    },
    /// GET a health URL; exit 0 on a 2xx answer, 1 otherwise (container HEALTHCHECK, no curl).
    Healthcheck {
        /// URL to check.
        #[arg(long, default_value = "http://127.0.0.1:8734/healthz")]
        url: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3)]
        timeout_s: u64,
    },
}

fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if std::env::var("EDGERELAY_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The bench keeps the relay's info lines (connects, outbox opens) off the terminal.
    init_logging(if matches!(cli.command, Command::Bench { .. }) {
        "warn"
    } else {
        "info"
    });
    match cli.command {
        Command::Bench { quick } => match edgerelay::bench::run(quick) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("edgerelay bench: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Probe { url } => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let user = std::env::var("EDGERELAY_PROBE_USERNAME").ok();
            let pass = std::env::var("EDGERELAY_PROBE_PASSWORD").ok();
            match rt.block_on(edgerelay::sources::onvif::probe::probe(&url, user, pass)) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("probe: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Healthcheck { url, timeout_s } => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(edgerelay::http::check(
                &url,
                std::time::Duration::from_secs(timeout_s),
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { config } => match edgerelay::config::load_with_warnings(&config) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    eprintln!("warning: {w}");
                }
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Run { config } => {
            let cfg = match edgerelay::config::load_with_warnings(&config) {
                Ok(loaded) => {
                    for w in &loaded.warnings {
                        tracing::warn!("config: {w}");
                    }
                    loaded.config
                }
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run(cfg, &config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("edgerelay: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(cfg: edgerelay::config::Config, path: &std::path::Path) -> anyhow::Result<()> {
    use edgerelay::observe::Parts;
    use edgerelay::pipeline::Relay;
    use tokio::signal::unix::{SignalKind, signal};

    let clock: edgerelay::clock::SharedClock = Arc::new(edgerelay::clock::SystemClock);
    // Signals first: a SIGTERM during start-up still stops gracefully.
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let observed = edgerelay::observe::Observed::new(clock.clone());
    let http = match &cfg.relay.http {
        Some(addr) => {
            let listener = edgerelay::http::bind(addr).await?;
            let local = listener.local_addr()?;
            tracing::info!(addr = %local, "HTTP endpoint listening (/healthz /readyz /metrics /status /status.json)");
            Some(tokio::spawn(edgerelay::http::serve(
                listener,
                observed.clone(),
                edgerelay::http::Login::from_config(&cfg.relay),
            )))
        }
        None => None,
    };
    let parts = |r: &Relay| Parts {
        sources: r.sources.clone(),
        destinations: r.destinations.clone(),
        topics: r.topics.clone(),
        supervisor: r.supervisor.clone(),
        rule_state_evictions: r.rule_state_evictions.clone(),
        commands: r.commands.clone(),
    };
    let mut running = cfg.clone();
    let mut relay = Relay::start(cfg, clock.clone()).await?;
    observed.set_ready(parts(&relay));
    let mut died = None;
    loop {
        let supervisor = relay.supervisor.clone();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            why = supervisor.wait() => {
                died = Some(why);
                break;
            }
            _ = hup.recv() => {
                let next = match edgerelay::config::load_with_warnings(path) {
                    Ok(loaded) => loaded.config,
                    Err(e) => {
                        tracing::error!("reload refused, the running config stays:\n{e}");
                        continue;
                    }
                };
                tracing::info!(config = %path.display(), "reloading");
                observed.clear();
                relay.shutdown_for_reload().await;
                report_removed_destinations(&running, &next);
                relay = match Relay::start(next.clone(), clock.clone()).await {
                    Ok(r) => {
                        running = next;
                        r
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "the new config does not start; back to the previous one");
                        Relay::start(running.clone(), clock.clone()).await?
                    }
                };
                observed.set_ready(parts(&relay));
                tracing::info!("reloaded");
            }
        }
    }
    tracing::info!("stopping: sources first, then sending what is queued");
    observed.set_stopping();
    if died.is_none() {
        observed.clear();
    }
    if died.is_some() {
        // What is queued stays in the outboxes; the fresh process sends it.
        relay.shutdown_within(Duration::ZERO).await;
    } else {
        relay.shutdown().await;
    }
    if let Some(h) = http {
        h.abort();
    }
    match died {
        // Non-zero, so a container or service manager starts a fresh relay.
        Some(why) => anyhow::bail!("{why}; stopped so that a fresh process takes over"),
        None => Ok(()),
    }
}

/// A destination gone from the config keeps its queue on disk: say how much waits there.
fn report_removed_destinations(old: &edgerelay::config::Config, new: &edgerelay::config::Config) {
    use edgerelay::outbox::{Outbox, OutboxOptions};
    for name in old
        .destination
        .keys()
        .filter(|n| !new.destination.contains_key(*n))
    {
        let dir = old.relay.data_dir.join("outbox").join(name);
        let queued = Outbox::open(&dir, OutboxOptions::default())
            .map(|(o, _)| o.stats().depth)
            .unwrap_or(0);
        if queued > 0 {
            tracing::warn!(destination = %name, queued, dir = %dir.display(),
                "destination removed from the config: its queued deliveries stay on disk and are sent if it comes back");
        } else {
            tracing::info!(destination = %name, "destination removed from the config");
        }
    }
}
