//! `facegate validate`: the config, the manifest and every model (hash, shapes), then exit.

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::Cli;

pub fn run(cli: &Cli) -> Result<ExitCode> {
    let loaded = super::load(cli, |_| {})?;
    let threshold = loaded.config.threshold(&loaded.manifest)?;
    println!("config {}: valid", loaded.config.source);
    println!(
        "models {}: hashes and shapes verified",
        loaded.manifest.path().display()
    );
    println!(
        "embedder {}: match threshold {threshold:.4}",
        loaded.pipeline.model_id()
    );
    Ok(ExitCode::SUCCESS)
}
