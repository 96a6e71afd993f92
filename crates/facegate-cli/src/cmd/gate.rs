//! `facegate gate unit-dropin`: the systemd drop-in that lets the service reach exactly the
//! serial device of an OSDP gate output (the unit's `DevicePolicy=closed` blocks serial lines).

use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::cli::{Cli, GateCommand};
use crate::config::Config;

pub fn run(cli: &Cli, command: &GateCommand) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    match command {
        GateCommand::UnitDropin => {
            let dropin = config
                .gate
                .unit_dropin()
                .with_context(|| format!("config {}", config.source))?;
            let Some(text) = dropin else {
                bail!(
                    "config {}: gate.output = \"{}\" needs no serial device; the unit already \
                     allows GPIO chips (a drop-in is for gate.output = \"osdp\")",
                    config.source,
                    config.gate.output
                );
            };
            print!("{text}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
