//! `facegate enrollment export|import` and the terminal keys and notices they use: an
//! enrollment moves to another terminal only sealed to its public key, with a separate transfer
//! consent naming it (Art. 6, 8); withdrawals follow as signed notices
//! (`facegate consent apply-withdrawal`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use facegate_policy::TerminalId;
use facegate_store::{NoticeOutcome, Store, TerminalPublic, transfer::MAX_TRANSFER_FILE};
use facegate_types::{SubjectId, UnixMillis};
use serde_json::json;

use super::store::{open_store, via_service};
use crate::adminproto::Request;
use crate::cli::{Cli, EnrollmentCommand};
use crate::config::Config;

/// A terminal's public key from a file holding its line, or the line itself.
pub fn read_terminal(arg: &str) -> Result<TerminalPublic> {
    let path = Path::new(arg);
    if path.is_file() {
        let text = read_limited(path)?;
        let text = String::from_utf8(text)
            .with_context(|| format!("{}: not a terminal public key (not text)", path.display()))?;
        return TerminalPublic::parse(&text)
            .with_context(|| format!("terminal public key {}", path.display()));
    }
    TerminalPublic::parse(arg)
        .with_context(|| format!("`{arg}` is neither a file nor a terminal public key line"))
}

/// A terminal named by its 32-digit id, its public key file or its line.
pub fn terminal_id(arg: &str) -> Result<TerminalId> {
    match TerminalId::new(arg) {
        Ok(id) => Ok(id),
        Err(_) => Ok(read_terminal(arg)?.id()),
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    anyhow::ensure!(
        len <= MAX_TRANSFER_FILE,
        "{}: {len} bytes is larger than any transfer file ({MAX_TRANSFER_FILE} bytes at most)",
        path.display()
    );
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Writes `bytes` to a new file (never over an existing one), mode 0600, synced.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "creating {} (an existing file is never overwritten)",
                path.display()
            )
        })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// The running service reloads its gallery (after an import or an applied notice changed the
/// store under it); nothing when no service runs.
/// The change is committed either way: a service that cannot be told is a warning, not an
/// error (its gallery catches up at its next reload; its decisions re-check consent).
fn tell_service(config: &Config) {
    let reload = Request::ReloadGallery {
        model_id: None,
        dim: None,
    };
    match via_service(config, reload) {
        Ok(Some(_)) => eprintln!("facegate: the running service reloaded its gallery"),
        Ok(None) => {}
        Err(e) => eprintln!(
            "facegate: warning: the change is stored, but the running service did not reload its gallery ({e:#}); run `facegate` as an admin-socket user or restart the service"
        ),
    }
}

pub fn enrollment(cli: &Cli, cmd: &EnrollmentCommand) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    match cmd {
        EnrollmentCommand::Export {
            subject,
            to,
            out,
            operator,
        } => {
            let subject = SubjectId::new(subject.clone())?;
            let to = read_terminal(to)?;
            let manifest = config.manifest()?;
            let model_id = manifest
                .model(facegate_vision::Role::Embedder)
                .map(facegate_vision::ModelSpec::model_id)
                .context("the model manifest names no embedder")?;
            let mut store = open_store(cli, &config)?;
            anyhow::ensure!(
                !out.exists(),
                "{} exists; an export never overwrites a file",
                out.display()
            );
            let r = store
                .export_enrollment(&subject, &to, &model_id, operator)
                .with_context(|| format!("exporting {subject} to terminal {}", to.id()))?;
            write_new(out, &r.bundle)?;
            println!(
                "transfer {} of {subject}: {} template(s) with consent and retention sealed to terminal {} ({}), written to {}",
                r.transfer,
                r.templates,
                r.receiver,
                to.name(),
                out.display()
            );
        }
        EnrollmentCommand::Import {
            file,
            from,
            operator,
            json: as_json,
        } => {
            let from = read_terminal(from)?;
            let bytes = read_limited(file)?;
            let manifest = config.manifest()?;
            let threshold = config.threshold(&manifest)?;
            let mut store = open_store(cli, &config)?;
            let r = store
                .import_enrollment(&bytes, &from, threshold, operator)
                .with_context(|| format!("importing {}", file.display()))?;
            tell_service(&config);
            if *as_json {
                println!(
                    "{}",
                    json!({
                        "transfer": r.transfer, "subject": r.subject, "sender": r.sender,
                        "sender_name": r.sender_name,
                        "templates": r.templates.iter().map(|t| t.0).collect::<Vec<_>>(),
                        "expires_at": r.expires_at,
                    })
                );
            } else {
                println!(
                    "transfer {} from terminal {} ({}): {} enrolled with {} template(s), consent kept, expires at {}",
                    r.transfer,
                    r.sender,
                    r.sender_name,
                    r.subject,
                    r.templates.len(),
                    crate::output::date(r.expires_at)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a withdrawal notice for `subject` signed by this terminal, naming who must get it.
pub fn write_notice(store: &Store, subject: &SubjectId, at: UnixMillis, out: &Path) -> Result<()> {
    let (bytes, notice) = store
        .withdrawal_notice(subject, at)
        .context("signing the withdrawal notice")?;
    write_new(out, &bytes)?;
    let peers = store.transfers_of(subject)?;
    let mut names: Vec<String> = peers
        .iter()
        .map(|t| format!("{} ({})", t.peer, t.peer_name))
        .collect();
    names.sort();
    names.dedup();
    println!(
        "withdrawal notice {} for {subject} written to {}; apply it with `facegate consent apply-withdrawal` on: {}",
        notice.notice_id(),
        out.display(),
        if names.is_empty() {
            "(no terminal this one exchanged the person with)".to_owned()
        } else {
            names.join(", ")
        }
    );
    Ok(())
}

/// `facegate consent apply-withdrawal FILE`.
pub fn apply_withdrawal(cli: &Cli, config: &Config, file: &Path, operator: &str) -> Result<()> {
    let bytes = read_limited(file)?;
    let mut store = open_store(cli, config)?;
    let (notice, outcome) = store
        .apply_withdrawal_notice(&bytes, operator)
        .with_context(|| format!("applying {}", file.display()))?;
    let from = format!("terminal {} ({})", notice.issuer.id(), notice.issuer.name());
    match outcome {
        NoticeOutcome::Applied(report) => {
            tell_service(config);
            println!(
                "withdrawal of {} from {from} applied: {} template(s) deleted, data key {}",
                notice.subject,
                report.templates_deleted,
                if report.key_destroyed {
                    "destroyed"
                } else {
                    "absent"
                }
            );
            super::store::residue_gone(&store, report)?;
        }
        NoticeOutcome::NothingStored => println!(
            "withdrawal of {} from {from} recorded: nothing of the person is stored here; older transfers of them will be refused",
            notice.subject
        ),
        NoticeOutcome::AlreadyApplied => println!(
            "withdrawal notice {} of {} was applied before; nothing changed",
            notice.notice_id(),
            notice.subject
        ),
    }
    Ok(())
}
