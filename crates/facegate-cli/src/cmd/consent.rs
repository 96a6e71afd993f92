//! `facegate consent`: grant, withdraw and the notice-version list. Every consent is checked by
//! the policy before the store records it.

use std::process::ExitCode;

use anyhow::{Context, Result};
use facegate_policy::{ConsentRecord, Guardian};
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
    if let ConsentCommand::Withdraw { subject, .. } = cmd
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
        ConsentCommand::Grant { subject, consent } => {
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
            residue_gone(&store, report)?;
        }
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
