//! `facegate keygen` and `facegate rotate-key`: the master key, and this terminal's transfer
//! keys (`keygen --terminal`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use facegate_store::MasterKey;

use super::store::{open_store, open_store_keyed};
use crate::cli::{Cli, KeygenArgs};
use crate::config::Config;

pub fn keygen(cli: &Cli, args: &KeygenArgs) -> Result<ExitCode> {
    if let Some(path) = &args.path {
        let id = facegate_store::generate_key_file(path)
            .with_context(|| format!("creating key file {}", path.display()))?;
        println!(
            "new master key {} written to {} (mode 0600)",
            id,
            path.display()
        );
        println!(
            "for the service: systemd-creds encrypt --name=facegate-master-key {} /etc/credstore.encrypted/facegate-master-key",
            path.display()
        );
    }
    if args.terminal {
        terminal_keys(cli, args)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `keygen --terminal`: this terminal's transfer keys, made once inside the store (sealed under
/// the master key like the audit key) and kept; their public line is printed (and written).
fn terminal_keys(cli: &Cli, args: &KeygenArgs) -> Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    let key_file = args.path.as_deref().or(cli.key_file.as_deref());
    let mut store = open_store_keyed(cli, &config, key_file)?;
    let public = match store.terminal_public()? {
        Some(p) => {
            eprintln!(
                "facegate: this terminal's transfer keys exist already (terminal {}); kept",
                p.id()
            );
            p
        }
        None => {
            let name = match &args.name {
                Some(n) => n.clone(),
                None => host_name(),
            };
            let p = store
                .create_terminal_keys(&name, "keygen")
                .context("creating this terminal's transfer keys")?;
            eprintln!(
                "facegate: new transfer keys of terminal {} sealed in {}",
                p.id(),
                store.file().display()
            );
            p
        }
    };
    let line = public.to_line();
    if let Some(out) = &args.public_out {
        std::fs::write(out, format!("{line}\n"))
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("facegate: public key written to {}", out.display());
    }
    println!("{line}");
    Ok(())
}

/// The host name, as the default terminal name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.len() <= facegate_store::transfer::MAX_TERMINAL_NAME)
        .unwrap_or_else(|| "facegate".to_owned())
}

pub fn rotate_key(cli: &Cli, new_key_file: &Path, operator: &str) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    let mut store = open_store(cli, &config)?;
    let new_key = MasterKey::load(&facegate_store::KeySource::File(new_key_file.to_path_buf()))
        .context("loading the new master key")?;
    let r = store.rotate_master_key(&new_key, operator)?;
    println!(
        "master key rotated from {} to {}: {} data key(s) re-wrapped, nobody re-enrolled; point the service at the new key and destroy the old one",
        r.old_key_id, r.new_key_id, r.keys_rewrapped
    );
    Ok(ExitCode::SUCCESS)
}
