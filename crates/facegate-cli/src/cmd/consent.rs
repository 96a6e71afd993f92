//! `facegate consent`: grant (a face consent, or with --transfer-to the separate transfer
//! consent), withdraw (with a signed notice for other terminals), apply another terminal's
//! withdrawal notice, and the notice-version list. Every consent is checked by
//! the policy before the store records it.

use std::process::ExitCode;

use anyhow::{Context, Result};
use facegate_policy::{ConsentRecord, Guardian, TransferConsentRecord};
use facegate_types::{Clock, SubjectId, SystemClock, UnixMillis};
use serde_json::json;

use super::store::{open_store, residue_gone, via_service};
use crate::adminproto::{Reply, Request};
use crate::cli::{Cli, ConsentArgs, ConsentCommand};
use crate::config::Config;

pub(super) fn consent_record(
    policy: &facegate_policy::PolicyConfig,
    subject: &SubjectId,
    a: &ConsentArgs,
    now: UnixMillis,
) -> ConsentRecord {
    ConsentRecord {
        subject: subject.clone(),
        age_years: a.age,
        purpose: policy.purpose(),
        notice_version: policy.notice().version(),
        method: a.method.into(),
        operator: a.operator.clone(),
        guardian: a.guardian_id.as_ref().map(|id| Guardian {
            identity: id.clone(),
            relation: a.guardian_relation.into(),
        }),
        granted_at: now,
    }
}

pub fn consent(cli: &Cli, cmd: &ConsentCommand) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    if let ConsentCommand::ApplyWithdrawal { file, operator } = cmd {
        super::transfer::apply_withdrawal(cli, &config, file, operator)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let ConsentCommand::Withdraw {
        subject,
        notice_out,
        ..
    } = cmd
        && let Some(reply) = via_service(
            &config,
            Request::Withdraw {
                subject: subject.clone(),
            },
        )?
    {
        let Reply::Removed {
            templates_deleted,
            residue_cleared,
            ..
        } = reply
        else {
            anyhow::bail!("the service answered a withdrawal with {reply:?}");
        };
        println!(
            "consent of {subject} withdrawn through the running service: {templates_deleted} template(s) deleted"
        );
        if let Some(out) = notice_out {
            let store = open_store(cli, &config)?;
            let id = SubjectId::new(subject.clone())?;
            super::transfer::write_notice(&store, &id, SystemClock.now(), out)?;
        }
        if !residue_cleared {
            anyhow::bail!(
                "the rows are deleted and unreadable, but their old pages are still in the \
                 database file because another process keeps an old read transaction open; the \
                 service overwrites them as soon as it ends (it retries in the background)"
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut store = open_store(cli, &config)?;
    let now = SystemClock.now();
    match cmd {
        ConsentCommand::Grant {
            subject,
            consent,
            transfer_to,
        } if !transfer_to.is_empty() => {
            let subject = SubjectId::new(subject.clone())?;
            let terminals = transfer_to
                .iter()
                .map(|t| super::transfer::terminal_id(t))
                .collect::<Result<Vec<_>>>()?;
            let face = consent_record(&config.policy, &subject, consent, now);
            let record = TransferConsentRecord {
                subject: subject.clone(),
                age_years: face.age_years,
                terminals,
                notice_version: face.notice_version,
                method: face.method,
                operator: face.operator,
                guardian: face.guardian,
                granted_at: now,
            };
            let c = config
                .policy
                .grant_transfer(record, now)
                .with_context(|| format!("transfer consent for {subject}"))?;
            let id = store.record_transfer_consent(&c)?;
            let names: Vec<String> = c
                .record()
                .terminals
                .iter()
                .map(ToString::to_string)
                .collect();
            println!(
                "transfer consent {id} recorded for {subject} (separate from the face consent, notice version {}): may be sent to terminal(s) {}",
                c.record().notice_version,
                names.join(", ")
            );
        }
        ConsentCommand::Grant {
            subject, consent, ..
        } => {
            let subject = SubjectId::new(subject.clone())?;
            let c = config
                .policy
                .grant(consent_record(&config.policy, &subject, consent, now), now)
                .with_context(|| format!("consent for {subject}"))?;
            let id = store.record_consent(&c)?;
            println!(
                "consent {} recorded for {subject} (notice version {}), expires at {}",
                id.0,
                c.record().notice_version,
                crate::output::date(c.expires_at())
            );
        }
        ConsentCommand::Withdraw {
            subject,
            operator,
            method: m,
            notice_out,
        } => {
            let subject = SubjectId::new(subject.clone())?;
            let live = store
                .live_consent(&subject)?
                .with_context(|| format!("{subject} has no live consent to withdraw"))?;
            let report = store.withdraw(&live.withdraw(now, operator.clone(), (*m).into()))?;
            println!(
                "consent of {subject} withdrawn: {} template(s) deleted, data key {}",
                report.templates_deleted,
                if report.key_destroyed {
                    "destroyed"
                } else {
                    "absent"
                }
            );
            let sent = store.transfers_of(&subject)?;
            match notice_out {
                Some(out) => super::transfer::write_notice(&store, &subject, now, out)?,
                None if !sent.is_empty() => eprintln!(
                    "facegate: warning: {subject} was exchanged with {} other terminal(s) (`facegate subjects where {subject}`); make a withdrawal notice for them with --notice-out",
                    sent.len()
                ),
                None => {}
            }
            residue_gone(&store, report)?;
        }
        ConsentCommand::ApplyWithdrawal { .. } => {}
        ConsentCommand::Pending(a) => {
            let pending = store.pending_notice()?;
            let current = config.policy.notice().version();
            let meanwhile = config.policy.notice().pending().describe();
            if a.json {
                let rows: Vec<_> = pending
                    .iter()
                    .map(|(s, v)| json!({ "subject": s, "notice_version": v }))
                    .collect();
                println!(
                    "{}",
                    json!({ "current_notice_version": current, "pending": rows, "meanwhile": meanwhile })
                );
            } else {
                for (s, v) in &pending {
                    println!("{s}  consented under notice version {v}");
                }
                println!(
                    "{} person(s) to inform of notice version {current}; meanwhile: {meanwhile}",
                    pending.len()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
