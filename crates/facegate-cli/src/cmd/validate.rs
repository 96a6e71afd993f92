//! `facegate validate`: the config, the manifest and every model (hash, shapes), then exit.
//! With `--service` (the unit's `ExecStartPre`) also everything `facegate run` needs on this
//! machine: the frame source, the gate output (GPIO chip or program) and the master key, so a
//! terminal that cannot run fails before the service starts, naming the key to fix.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use facegate_capture::{CameraDevice, SourceSpec};
use facegate_engine::GateOutputKind;

use crate::cli::Cli;
use crate::config::Config;

pub fn run(cli: &Cli, service: bool) -> Result<ExitCode> {
    let loaded = super::load(cli, |_| {})?;
    let threshold = loaded.config.threshold(&loaded.manifest)?;
    if service {
        check_service(&loaded.config, cli)?;
    }
    println!("config {}: valid", loaded.config.source);
    println!(
        "models {}: hashes and shapes verified",
        loaded.manifest.path().display()
    );
    println!(
        "embedder {}: match threshold {threshold:.4}, flip TTA {} (flip_tta = {})",
        loaded.pipeline.model_id(),
        if loaded.config.vision.flip_tta {
            "on"
        } else {
            "off"
        },
        match loaded.config.flip_setting {
            crate::config::FlipTta::Auto => "\"auto\"",
            crate::config::FlipTta::On => "true",
            crate::config::FlipTta::Off => "false",
        }
    );
    if service {
        println!(
            "service: source {}, gate {}, master key and alternatives ({}) ready",
            loaded.config.service.source,
            loaded.config.gate.output,
            loaded.config.policy.alternatives().enabled().join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What `run` needs besides the config file itself.
fn check_service(config: &Config, cli: &Cli) -> Result<()> {
    let src = &config.service.source;
    let spec = SourceSpec::parse(src)
        .map_err(|e| anyhow::anyhow!("config {}: service.source: {e}", config.source))?;
    match &spec {
        SourceSpec::Camera(dev) => {
            let path = match dev {
                CameraDevice::Index(i) => PathBuf::from(format!("/dev/video{i}")),
                CameraDevice::Path(p) => p.clone(),
            };
            char_device(&path, "service.source", config)?;
        }
        SourceSpec::Folder(p) | SourceSpec::Y4m(p) | SourceSpec::Image(p) => {
            if !p.exists() {
                bail!(
                    "config {}: service.source {} does not exist",
                    config.source,
                    p.display()
                );
            }
        }
    }
    match config.gate.output {
        GateOutputKind::Gpio => char_device(&config.gate.gpio_chip, "gate.gpio_chip", config)?,
        GateOutputKind::Command => {
            let Some(program) = config.gate.command.first() else {
                bail!("config {}: gate.command is empty", config.source);
            };
            executable(program).map_err(|why| {
                anyhow::anyhow!("config {}: gate.command {program:?} {why}", config.source)
            })?;
        }
        GateOutputKind::Wiegand => char_device(&config.gate.gpio_chip, "gate.gpio_chip", config)?,
        GateOutputKind::Osdp => {
            let device = config
                .gate
                .osdp_device()
                .with_context(|| format!("config {}", config.source))?;
            char_device(device, "gate.osdp_device", config)?;
            // Reads the SCBK the way `run` will (file mode and owner checked).
            config
                .gate
                .osdp_settings()
                .with_context(|| format!("config {}", config.source))?;
        }
        GateOutputKind::DryRun => {}
    }
    // The key must be reachable the way `run` will look for it.
    match config.key_source(cli.key_file.as_deref())? {
        facegate_store::KeySource::File(p) => {
            if !p.is_file() {
                bail!(
                    "config {}: the master key file {} does not exist (make one with `facegate keygen PATH`)",
                    config.source,
                    p.display()
                );
            }
        }
        facegate_store::KeySource::SystemdCredential { name } => {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
            if !dir.is_some_and(|d| d.join(&name).is_file()) {
                bail!(
                    "config {}: the systemd credential {name:?} is not loaded (LoadCredential= in the unit)",
                    config.source
                );
            }
        }
    }
    Ok(())
}

fn char_device(path: &Path, key: &str, config: &Config) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_char_device() => Ok(()),
        Ok(_) => bail!(
            "config {}: {key} {} is not a device",
            config.source,
            path.display()
        ),
        Err(e) => bail!(
            "config {}: {key} {}: {e} (is the device there, and allowed by DeviceAllow= in the unit?)",
            config.source,
            path.display()
        ),
    }
}

/// An absolute path to an executable file, or a name found in `$PATH`.
fn executable(program: &str) -> std::result::Result<(), &'static str> {
    let is_exec = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return if is_exec(Path::new(program)) {
            Ok(())
        } else {
            Err("is not an executable file")
        };
    }
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| is_exec(&d.join(program))));
    if found {
        Ok(())
    } else {
        Err("is not found in $PATH")
    }
}
