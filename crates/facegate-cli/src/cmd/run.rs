//! `facegate run`: the gate service. Start-up is fatal and precise (config, egress guard, models,
//! key, store); afterwards the engine owns the loop. systemd integration: `READY=1` once the
//! engine is built, `WATCHDOG=1` only while the loop answers, `STOPPING=1` on SIGTERM (the frame
//! in hand and pending credentials are decided, then the process exits 0), SIGHUP re-reads and
//! re-validates the config and hands the new policy to the store (retention, notice); an invalid
//! new config is refused and the running one kept.

use std::io::BufRead;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use facegate_capture::{CaptureOptions, SourceSpec};
use facegate_engine::{
    Credential, Engine, EngineConfig, EngineHandle, FramePolicy, JsonLinesSink, SocketBroadcaster,
};
use facegate_types::ErrorChain;
use sd_notify::NotifyState;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::cli::{Cli, RunArgs};
use crate::config::Config;

/// `pin 1234`, `card 0xA1B2`, `qr PAYLOAD`, `override OPERATOR`.
fn parse_credential(line: &str) -> Option<Credential> {
    let (kind, value) = line.trim().split_once(char::is_whitespace)?;
    let value = value.trim().to_string();
    match kind {
        "pin" => Some(Credential::Pin(value)),
        "card" => Some(Credential::Card(value)),
        "qr" => Some(Credential::Qr(value)),
        "override" => Some(Credential::OperatorOverride { operator: value }),
        _ => None,
    }
}

fn spawn_signals(handle: EngineHandle, cli_config: Option<std::path::PathBuf>) -> Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("installing signal handlers")?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        for sig in signals.forever() {
            if sig == SIGHUP {
                let _ = sd_notify::notify(&[NotifyState::Reloading]);
                match Config::load(cli_config.as_deref()) {
                    Ok(new) => {
                        let policy = new.policy.clone();
                        match handle.with_store(move |s| s.set_policy(&policy, "sighup"), Duration::from_secs(10)) {
                            Ok(Ok(())) => tracing::info!("configuration reloaded: policy applied (matching and capture changes need a restart)"),
                            Ok(Err(e)) => tracing::error!(error = %ErrorChain(&e), "reload: the store refused the new policy; keeping the old one"),
                            Err(e) => tracing::error!(error = %ErrorChain(&e), "reload: the engine did not take the new policy"),
                        }
                    }
                    Err(e) => tracing::error!(error = format!("{e:#}"), "reload: the new configuration is invalid; keeping the running one"),
                }
                let _ = sd_notify::notify(&[NotifyState::Ready]);
            } else {
                tracing::info!(signal = sig, "stopping: draining the frame in hand and pending credentials");
                let _ = sd_notify::notify(&[NotifyState::Stopping]);
                handle.stop();
            }
        }
    })?;
    Ok(())
}

fn spawn_watchdog(handle: EngineHandle) -> Result<()> {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return Ok(());
    };
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            while !handle.is_stopped() {
                // Ping only when the loop itself answers: a wedged camera read or a stuck model
                // stops the pings and systemd restarts the service.
                if handle.with_store(|_| (), period / 3).is_ok() {
                    let _ = sd_notify::notify(&[NotifyState::Watchdog]);
                }
                std::thread::sleep(period / 3);
            }
        })?;
    Ok(())
}

fn spawn_stdin(handle: EngineHandle) -> Result<()> {
    std::thread::Builder::new().name("credentials".into()).spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            match parse_credential(&line) {
                Some(c) => {
                    if let Err(e) = handle.submit(c) {
                        tracing::warn!(error = %ErrorChain(&e), "credential refused");
                    }
                }
                None => tracing::warn!("unreadable credential line (expected `pin|card|qr VALUE` or `override OPERATOR`)"),
            }
        }
    })?;
    Ok(())
}

pub fn run(cli: &Cli, args: &RunArgs) -> Result<ExitCode> {
    if !facegate_policy::egress::status().is_active() {
        bail!(
            "the egress guard is not active (seccomp refused?): refusing to process faces with network access (Art. 8)"
        );
    }
    // The config is read and validated once, here; SIGHUP reads it again on purpose.
    let loaded = super::load(cli, |v| v.liveness = true)?;
    let config = &loaded.config;
    let threshold = config.threshold(&loaded.manifest)?;
    let store = super::store::open_store(cli, config)?;
    let mut ec = EngineConfig::new(&config.policy, threshold);
    ec.fpir = config
        .policy
        .matching()
        .fpir()
        .map(|fpir| facegate_engine::FpirRule {
            fpir,
            calibration: Config::fpir_calibration(&loaded.manifest),
        });
    ec.liveness = config.liveness.clone();
    config.service.apply(&mut ec);
    ec.embedding_dim = loaded.pipeline.embedding_dim();
    let source = args
        .source
        .clone()
        .unwrap_or_else(|| config.service.source.clone());
    let spec = SourceSpec::parse(&source).with_context(|| format!("source {source}"))?;
    let replay = !matches!(spec, SourceSpec::Camera(_));
    if replay {
        ec.capture.policy = FramePolicy::Lossless;
        ec.capture.pace = args.realtime;
    }
    let opts = CaptureOptions::default().with_max_pixels(config.max_pixels);
    let gate = config.gate.open()?;
    let mut engine = Engine::new(ec, loaded.pipeline, store)?
        .with_source(&spec, &opts)
        .with_sink(Box::new(JsonLinesSink::stdout()))
        .with_gate(gate);
    if let Some(path) = &config.service.events_socket {
        engine = engine.with_sink(Box::new(
            SocketBroadcaster::bind(path)?
                .with_peer_check(Box::new(crate::adminsock::may_subscribe)),
        ));
    }
    let handle = engine.handle();
    if let Some(path) = &config.service.admin_socket {
        crate::adminsock::serve(path, handle.clone())?;
    }
    spawn_signals(handle.clone(), cli.config.clone())?;
    spawn_watchdog(handle.clone())?;
    if args.credentials_stdin {
        spawn_stdin(handle.clone())?;
    }
    let _ = sd_notify::notify(&[NotifyState::Ready]);
    tracing::info!(source = %source, gate = %config.gate.output, "facegate running");
    let summary = engine.run()?;
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
    eprintln!(
        "facegate: stopped ({:?}): {}",
        summary.ended,
        serde_json::to_string(&summary).unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_lines_parse() {
        assert!(matches!(parse_credential("pin 1234"), Some(Credential::Pin(v)) if v == "1234"));
        assert!(
            matches!(parse_credential("override guard-1"), Some(Credential::OperatorOverride { operator }) if operator == "guard-1")
        );
        assert!(parse_credential("pin").is_none());
        assert!(parse_credential("face 1").is_none());
    }
}
