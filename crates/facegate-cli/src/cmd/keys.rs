//! `facegate keygen` and `facegate rotate-key`: the master key.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use facegate_store::MasterKey;

use super::store::open_store;
use crate::cli::{Cli, KeygenArgs};
use crate::config::Config;

pub fn keygen(args: &KeygenArgs) -> Result<ExitCode> {
    let id = facegate_store::generate_key_file(&args.path)
        .with_context(|| format!("creating key file {}", args.path.display()))?;
    println!(
        "new master key {} written to {} (mode 0600)",
        id,
        args.path.display()
    );
    println!(
        "for the service: systemd-creds encrypt --name=facegate-master-key {} /etc/credstore.encrypted/facegate-master-key",
        args.path.display()
    );
    Ok(ExitCode::SUCCESS)
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
