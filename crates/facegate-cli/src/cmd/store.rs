//! The store as the commands open it: directly (expired data swept first) or through the running
//! service's admin socket; the check that a removal left no residue; `facegate sweep`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use facegate_store::{MasterKey, Store};
use facegate_types::SystemClock;

use crate::adminproto::Request;
use crate::cli::Cli;
use crate::config::Config;

/// Opens the store named by the config and the command line, and deletes whatever has expired
/// (retention, Art. 8) before anything else reads it.
pub fn open_store(cli: &Cli, config: &Config) -> Result<Store> {
    open_store_keyed(cli, config, cli.key_file.as_deref())
}

/// [`open_store`] with the master key file `key_file` instead of the command line's.
pub fn open_store_keyed(
    cli: &Cli,
    config: &Config,
    key_file: Option<&std::path::Path>,
) -> Result<Store> {
    let source = config.key_source(key_file)?;
    let key = MasterKey::load(&source).context("loading the master key")?;
    let dir = config.state_dir(cli.state_dir.as_deref());
    let mut store = Store::open(&dir, &key, Arc::new(SystemClock), &config.policy)
        .with_context(|| format!("opening the store in {}", dir.display()))?;
    if !store.is_read_only() {
        let swept = store.sweep_expired().context("retention sweep")?;
        if swept.templates_deleted > 0 {
            tracing::info!(
                templates = swept.templates_deleted,
                subjects = swept.subjects_affected,
                "expired templates deleted"
            );
        }
    }
    Ok(store)
}

pub fn sweep(cli: &Cli) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    let source = config.key_source(cli.key_file.as_deref())?;
    let key = MasterKey::load(&source).context("loading the master key")?;
    let dir = config.state_dir(cli.state_dir.as_deref());
    let mut store = Store::open(&dir, &key, Arc::new(SystemClock), &config.policy)?;
    let r = store.sweep_expired()?;
    println!(
        "retention sweep: {} template(s) of {} subject(s) deleted, {} key(s) destroyed, {} expiry date(s) shortened",
        r.templates_deleted, r.subjects_affected, r.keys_destroyed, r.expiries_shortened
    );
    Ok(ExitCode::SUCCESS)
}

/// A withdrawal or deletion is reported done only when the freed pages are gone from the
/// database file and its WAL; a reader holding an old snapshot gets 30 s, then this fails
/// naming what remains (the store retries on its own once the reader ends).
pub(super) fn residue_gone(store: &Store, report: facegate_store::RemovalReport) -> Result<()> {
    if !report.copies_sealed {
        eprintln!(
            "facegate: warning: the data keys could not be moved to a new epoch; copies of the \
             database made before keep this person's key until the next withdrawal"
        );
    }
    if report.residue_cleared || store.clear_residue(std::time::Duration::from_secs(30)) {
        return Ok(());
    }
    anyhow::bail!(
        "the rows are deleted and unreadable, but their old pages are still in {} because another \
         process keeps an old read transaction open; they are overwritten as soon as it ends \
         (stop that process, or run `facegate sweep` later)",
        store.file().display()
    )
}

/// The running service's answer to `req` over its admin socket, or `None` when none runs.
pub fn via_service(config: &Config, req: Request) -> Result<Option<crate::adminproto::Reply>> {
    match &config.service.admin_socket {
        Some(path) if path.exists() => crate::adminsock::request(path, &req),
        _ => Ok(None),
    }
}
