//! The processing record and the regulator-facing reports: `audit verify|export`,
//! `report pia|filing` (Art. 9, 15).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use facegate_policy::{PiaFingerprint, StateSummary, filing_report, pia_report};
use facegate_store::{AuditEvent, AuditKind, Store};
use facegate_types::{Clock, SystemClock};
use serde_json::json;

use super::store::open_store;
use crate::cli::{AuditCommand, Cli, ReportCommand};
use crate::config::Config;

pub fn audit(cli: &Cli, cmd: &AuditCommand) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    let mut store = open_store(cli, &config)?;
    match cmd {
        AuditCommand::Prune {
            older_than_days,
            operator,
        } => {
            let before = SystemClock.now().minus_days(*older_than_days);
            let r = store.prune_audit(before, operator)?;
            println!(
                "pruned {} audit record(s); the chain is re-anchored at record {}",
                r.removed, r.anchor_seq
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify {
            export: Some(path),
            json,
        } => verify_export(&store, path, *json),
        AuditCommand::Verify { json, export: None } => {
            let v = store.verify_audit()?;
            if *json {
                println!(
                    "{}",
                    json!({
                        "records": v.records, "anchor_seq": v.anchor_seq, "last_seq": v.last_seq, "head_mac": v.head_mac,
                        "intact": v.first_break.is_none(), "first_break": v.first_break.as_ref().map(|b| json!({ "seq": b.seq, "what": b.to_string() })),
                    })
                );
            } else if let Some(b) = &v.first_break {
                println!("audit chain of {} BROKEN: {b}", store.file().display());
            } else {
                println!(
                    "audit chain intact: {} records (seq {} to {}), head {}",
                    v.records,
                    v.anchor_seq,
                    v.last_seq.map_or("-".into(), |s| s.to_string()),
                    v.head_mac
                );
            }
            Ok(if v.first_break.is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        AuditCommand::Export { from, limit } => {
            for c in store.audit_export(*from, *limit)? {
                let r = &c.record;
                let details: serde_json::Value =
                    serde_json::from_str(&r.details).unwrap_or(serde_json::Value::Null);
                println!(
                    "{}",
                    json!({ "seq": r.seq, "at": r.at, "kind": r.kind, "subject": r.subject,
                            "operator": r.operator, "outcome": r.outcome, "details": details,
                            "details_text": r.details, "prev_mac": hex::encode(&c.prev_mac),
                            "mac": hex::encode(&c.mac) })
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `audit verify --export FILE`: every line of an export, checked with the store's audit key.
fn verify_export(store: &Store, path: &std::path::Path, json_out: bool) -> Result<ExitCode> {
    use facegate_store::{AuditRecord, ChainedRecord};
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut records = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bad = |what: &str| anyhow::anyhow!("{} line {}: {what}", path.display(), i + 1);
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(&e.to_string()))?;
        let text = |k: &str| v[k].as_str().map(str::to_owned);
        let mac = text("mac")
            .and_then(|m| hex::decode(m).ok())
            .ok_or_else(|| bad("no mac (written by an older facegate? export again)"))?;
        let prev_mac = text("prev_mac")
            .and_then(|m| hex::decode(m).ok())
            .ok_or_else(|| bad("no prev_mac"))?;
        records.push(ChainedRecord {
            record: AuditRecord {
                seq: v["seq"].as_u64().ok_or_else(|| bad("no seq"))?,
                at: facegate_types::UnixMillis(v["at"].as_i64().ok_or_else(|| bad("no at"))?),
                kind: text("kind").ok_or_else(|| bad("no kind"))?,
                subject: text("subject"),
                operator: text("operator").ok_or_else(|| bad("no operator"))?,
                outcome: text("outcome").ok_or_else(|| bad("no outcome"))?,
                details: text("details_text").ok_or_else(|| bad("no details_text"))?,
            },
            prev_mac,
            mac,
        });
    }
    let first = records.first().map(|r| r.record.seq);
    let last = records.last().map(|r| r.record.seq);
    let broken = store.verify_export(&records);
    if json_out {
        println!(
            "{}",
            json!({ "records": records.len(), "first_seq": first, "last_seq": last,
                    "intact": broken.is_none(),
                    "first_break": broken.as_ref().map(|b| json!({ "seq": b.seq, "what": b.to_string() })) })
        );
    } else if let Some(b) = &broken {
        println!("export {} BROKEN: {b}", path.display());
    } else {
        println!(
            "export {} intact: {} records (seq {} to {}), every mac checked with the audit key",
            path.display(),
            records.len(),
            first.map_or("-".into(), |s| s.to_string()),
            last.map_or("-".into(), |s| s.to_string())
        );
    }
    Ok(if broken.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `facegate notice`: what the terminal's screen and the sign show (no store needed).
pub fn notice(cli: &Cli, lang: Option<&str>, json_out: bool) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    let n = config.policy.notice();
    let lang = lang.unwrap_or(n.default_language());
    if !n.texts().contains_key(lang) {
        anyhow::bail!(
            "the notice has no text in {lang:?}; it has: {}",
            n.texts().keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let d = config.policy.deployment();
    if json_out {
        println!(
            "{}",
            json!({ "version": n.version(), "fingerprint": config.policy.notice_fingerprint(),
                    "language": lang, "languages": n.texts().keys().collect::<Vec<_>>(),
                    "text": n.text(lang), "signage": n.signage(),
                    "retention": n.retention_statement(), "processor": d.processor_name(),
                    "contact": d.processor_contact() })
        );
    } else {
        println!("{}", n.text(lang));
        println!();
        println!("{}", n.signage());
        println!("{}", n.retention_statement());
        println!(
            "(notice version {}, {}, {})",
            n.version(),
            lang,
            config.policy.notice_fingerprint()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn pia_file(config: &Config, cli: &Cli) -> PathBuf {
    config
        .state_dir(cli.state_dir.as_deref())
        .join("pia-latest.json")
}

/// What the reports need to know about the state.
pub fn summary(
    store: &Store,
    config: &Config,
    cli: &Cli,
    egress_active: bool,
) -> Result<StateSummary> {
    let counts = store.counts()?;
    let list = store.list_subjects()?;
    let verification = store.verify_audit()?;
    let kinds = store.audit_counts()?;
    let now = SystemClock.now();
    let latest_pia = std::fs::read_to_string(pia_file(config, cli))
        .ok()
        .and_then(|t| serde_json::from_str::<PiaFingerprint>(&t).ok());
    Ok(StateSummary {
        generated_at: now,
        subjects: counts.subjects_with_templates,
        templates: counts.templates,
        live_consents: counts.live_consents,
        minors_under_14: list
            .iter()
            .filter(|s| s.templates > 0 && s.age_years < 14)
            .count() as u64,
        oldest_record: list.iter().map(|s| s.created_at).min(),
        next_expiry: list
            .iter()
            .filter(|s| s.templates > 0)
            .filter_map(|s| s.consent_expires_at)
            .min(),
        withdrawals: kinds
            .get(AuditKind::Withdrawal.as_str())
            .copied()
            .unwrap_or(0),
        audit_records: verification.records,
        audit_chain_verified: Some(verification.first_break.is_none()),
        last_key_rotation: None,
        model_ids: Vec::new(),
        egress_guard_active: egress_active,
        latest_pia,
    })
}

/// The host name, for a terminal's export.
fn host_name() -> Result<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the host name (name the terminal with --terminal)")?;
    Ok(text.trim().to_owned())
}

/// `report filing --merge`: distinct people over several terminals' exports.
fn filing_merge(config: &Config, files: &[PathBuf]) -> Result<ExitCode> {
    let mut texts = Vec::with_capacity(files.len());
    for f in files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading filing export {}", f.display()))?;
        texts.push((f.display().to_string(), text));
    }
    let m = facegate_policy::merge_filing_exports(&texts)?;
    let status = m.status(config.policy.filing().warn_fraction());
    println!(
        "# Filing count over {} terminals (Art. 15)",
        m.terminals.len()
    );
    println!();
    println!("Processor: {}", m.processor);
    println!();
    println!("| terminal | site | exported | people stored |");
    println!("|---|---|---|---|");
    for (name, (site, at, n)) in &m.terminals {
        println!(
            "| {name} | {site} | {} | {n} |",
            facegate_engine::rfc3339(facegate_types::UnixMillis(*at))
        );
    }
    println!();
    println!(
        "Distinct people (by subject id): **{}** ({} stored at more than one terminal; the \
         terminals' counts add up to {}).",
        m.distinct, m.at_several, m.sum
    );
    println!();
    println!("**Status:** {}", status.describe(m.distinct));
    Ok(ExitCode::SUCCESS)
}

pub fn report(cli: &Cli, cmd: &ReportCommand) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    if let ReportCommand::Filing(a) = cmd
        && !a.merge.is_empty()
    {
        return filing_merge(&config, &a.merge);
    }
    let mut store = open_store(cli, &config)?;
    let egress = facegate_policy::egress::status().is_active();
    let mut state = summary(&store, &config, cli, egress)?;
    if let Ok(manifest) = config.manifest()
        && let Some(m) = manifest.model(facegate_vision::Role::Embedder)
    {
        state.model_ids = vec![m.model_id()];
    }
    match cmd {
        ReportCommand::Pia { record } => {
            let report = pia_report(&config.policy, &state, state.latest_pia.as_ref());
            println!("{}", report.markdown);
            if report.reassessment_required() {
                eprintln!(
                    "facegate: purpose or method changed since the last assessment: a new assessment is required (Art. 9)"
                );
            }
            if *record {
                let path = pia_file(&config, cli);
                let text = serde_json::to_string_pretty(&report.fingerprint)?;
                let tmp = path.with_extension("json.tmp");
                std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
                std::fs::rename(&tmp, &path)
                    .with_context(|| format!("writing {}", path.display()))?;
                store.record(
                    AuditEvent::new(AuditKind::ConfigChange, "cli", "pia_recorded")
                        .details(json!({ "pia": report.fingerprint.id() })),
                )?;
                eprintln!(
                    "facegate: assessment {} recorded as signed off",
                    report.fingerprint.id()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ReportCommand::Filing(a) => {
            if let Some(path) = &a.export {
                let terminal = match &a.terminal {
                    Some(t) => t.clone(),
                    None => host_name()?,
                };
                let dep = config.policy.deployment();
                let subjects = store
                    .list_subjects()?
                    .into_iter()
                    .filter(|s| s.templates > 0)
                    .map(|s| s.subject);
                let export = facegate_policy::FilingExport::new(
                    dep.processor_name(),
                    dep.site_name(),
                    &terminal,
                    state.generated_at.0,
                    subjects,
                );
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, export.to_json())
                    .with_context(|| format!("writing {}", tmp.display()))?;
                std::fs::rename(&tmp, path)
                    .with_context(|| format!("writing {}", path.display()))?;
                store.record(
                    AuditEvent::new(AuditKind::Export, "cli", "filing_export").details(json!({
                        "terminal": terminal,
                        "subjects": export.subjects.len(),
                    })),
                )?;
                eprintln!(
                    "facegate: filing export of terminal {terminal} ({} people) written to {}",
                    export.subjects.len(),
                    path.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            println!("{}", filing_report(&config.policy, &state));
            Ok(ExitCode::SUCCESS)
        }
    }
}
