//! `facegate-relay`: the site relay's binary (see the library's docs). `run` relays until
//! SIGTERM; `validate` checks a config file (the unit's `ExecStartPre`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use facegate_relay::{Relay, RelayConfig};
use tracing_subscriber::EnvFilter;

/// Decision and alert events of a facegate terminal to an MQTT broker (allow-listed fields,
/// bounded on-disk spool).
#[derive(Debug, Parser)]
#[command(name = "facegate-relay", version)]
struct Cli {
    /// The relay's config file.
    #[arg(long, global = true, default_value = "/etc/facegate-relay/relay.toml")]
    config: PathBuf,
    /// Log as JSON lines (journald picks either).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Relay events until SIGTERM or SIGINT.
    Run,
    /// Check the config file and say what would be published where.
    Validate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("FACEGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: the journal gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("facegate-relay: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let config = RelayConfig::load(&cli.config)?;
    match cli.command {
        Command::Validate => {
            println!(
                "{}: ok: events from {} to mqtt://{}:{} as {}; decisions on {} with {}; alerts on {} with {}; spool {} (at most {} events)",
                cli.config.display(),
                config.events_socket.display(),
                config.mqtt.host,
                config.mqtt.port,
                config.mqtt.client_id,
                config.topics.events(),
                config.decision_fields.join(","),
                config.topics.alerts(),
                config.alert_fields.join(","),
                config.spool_path.display(),
                config.spool_max_events,
            );
            Ok(())
        }
        Command::Run => {
            let relay = Relay::new(config)?;
            let stop = relay.stop_flag();
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(sig, stop.clone())
                    .context("installing signal handlers")?;
            }
            relay.run()?;
            let s = relay.stats();
            tracing::info!(
                received = s.received.load(Ordering::Relaxed),
                spooled = s.spooled.load(Ordering::Relaxed),
                delivered = s.delivered.load(Ordering::Relaxed),
                "relay stopped"
            );
            Ok(())
        }
    }
}
