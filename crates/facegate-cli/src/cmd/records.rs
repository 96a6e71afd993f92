//! The processing record and the regulator-facing reports: `audit verify|export`,
//! `report pia|filing` (Art. 9, 15).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use facegate_policy::{PiaFingerprint, StateSummary, filing_report, pia_report};
use facegate_store::{AuditEvent, AuditKind, Store};
use facegate_types::{Clock, SystemClock};
use serde_json::json;

use super::admin::open_store;
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
        AuditCommand::Verify(a) => {
            let v = store.verify_audit()?;
            if a.json {
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
            for r in store.audit_records(*from, *limit)? {
                let details: serde_json::Value =
                    serde_json::from_str(&r.details).unwrap_or(serde_json::Value::Null);
                println!(
                    "{}",
                    json!({ "seq": r.seq, "at": r.at, "kind": r.kind, "subject": r.subject, "operator": r.operator, "outcome": r.outcome, "details": details })
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
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

pub fn report(cli: &Cli, cmd: &ReportCommand) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
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
        ReportCommand::Filing => {
            println!("{}", filing_report(&config.policy, &state));
            Ok(ExitCode::SUCCESS)
        }
    }
}
