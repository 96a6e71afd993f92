//! `facegate relay ARGS`: hands over to `facegate-relay` (the site relay, its own crate and
//! binary) by exec, so the relay's process is the relay's program: the gate binary links no
//! network client, and its egress guard, installed for every other command, is not inherited
//! by a program that must reach a broker.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// The relay's binary: `facegate-relay` in this binary's directory.
fn relay_binary() -> Result<PathBuf> {
    let me = std::env::current_exe().context("finding this binary")?;
    let path = me
        .parent()
        .map(|d| d.join("facegate-relay"))
        .context("this binary has no directory")?;
    if !path.is_file() {
        bail!(
            "{} is not installed (the site relay is its own binary: build it with `cargo build \
             --release -p facegate-relay`, or install it as docs/packaging.md says)",
            path.display()
        );
    }
    Ok(path)
}

/// Replaces this process by the relay; returns only when that fails.
pub fn exec(args: &[OsString]) -> anyhow::Error {
    match relay_binary() {
        Ok(path) => {
            let err = std::process::Command::new(&path).args(args).exec();
            anyhow::Error::new(err).context(format!("starting {}", path.display()))
        }
        Err(e) => e,
    }
}
