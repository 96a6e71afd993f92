//! `facegate subjects`: list, show and delete enrolled people, and where they were sent.

use std::process::ExitCode;

use anyhow::{Context, Result};
use facegate_store::TransferDirection;
use facegate_types::SubjectId;
use serde_json::json;

use super::store::{open_store, residue_gone, via_service};
use crate::adminproto::Request;
use crate::cli::{Cli, SubjectsCommand};
use crate::config::Config;

pub fn subjects(cli: &Cli, cmd: &SubjectsCommand) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    // While the service runs it owns the store (and its gallery): go through its admin socket.
    let req = match cmd {
        SubjectsCommand::List(_) => Some(Request::Subjects {}),
        SubjectsCommand::Delete {
            subject, reason, ..
        } => Some(Request::Delete {
            subject: subject.clone(),
            reason: Some(reason.clone()),
        }),
        SubjectsCommand::Show { .. } | SubjectsCommand::Where { .. } => None,
    };
    if let Some(req) = req
        && let Some(reply) = via_service(&config, req)?
    {
        println!("{}", serde_json::to_string_pretty(&reply.to_answer())?);
        if let SubjectsCommand::Delete {
            subject,
            notice_out: Some(out),
            ..
        } = cmd
        {
            let store = open_store(cli, &config)?;
            let id = SubjectId::new(subject.clone())?;
            super::transfer::write_notice(&store, &id, store.now(), out)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut store = open_store(cli, &config)?;
    match cmd {
        SubjectsCommand::List(a) => {
            let list = store.list_subjects()?;
            if a.json {
                let v: Vec<_> = list.iter().map(|s| json!({
                    "subject": s.subject, "age_years": s.age_years, "created_at": s.created_at, "templates": s.templates,
                    "consent_expires_at": s.consent_expires_at, "withdrawn_at": s.withdrawn_at,
                })).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<24} {:>9} {:>22} state",
                    "subject", "templates", "consent expires"
                );
                for s in &list {
                    let state = if s.withdrawn_at.is_some() {
                        "withdrawn"
                    } else if s.templates > 0 {
                        "enrolled"
                    } else {
                        "consent only"
                    };
                    println!(
                        "{:<24} {:>9} {:>22} {state}",
                        s.subject.as_str(),
                        s.templates,
                        s.consent_expires_at.map_or("-".into(), crate::output::date)
                    );
                }
                println!("{} subject(s)", list.len());
            }
        }
        SubjectsCommand::Show {
            subject,
            json: as_json,
        } => {
            let id = SubjectId::new(subject.clone())?;
            let d = store
                .subject(&id)?
                .with_context(|| format!("no subject {id}"))?;
            let consents: Vec<_> = d.consents.iter().map(|c| json!({
                "id": c.id.0, "granted_at": c.record.granted_at, "method": c.record.method, "operator": c.record.operator,
                "notice_version": c.record.notice_version, "guardian": c.record.guardian.is_some(), "expires_at": c.expires_at, "withdrawn_at": c.withdrawn_at,
            })).collect();
            let templates: Vec<_> = d.templates.iter().map(|t| json!({
                "template": t.template, "model_id": t.model_id, "created_at": t.created_at, "expires_at": t.expires_at,
            })).collect();
            let v = json!({ "subject": id, "age_years": d.summary.age_years, "consents": consents, "templates": templates });
            if *as_json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{id}: age {}, {} consent(s), {} template(s)",
                    d.summary.age_years,
                    d.consents.len(),
                    d.templates.len()
                );
                for c in &d.consents {
                    println!(
                        "  consent {} granted {} by {} ({:?}, notice v{}), expires {}{}",
                        c.id.0,
                        crate::output::date(c.record.granted_at),
                        c.record.operator,
                        c.record.method,
                        c.record.notice_version,
                        crate::output::date(c.expires_at),
                        c.withdrawn_at.map_or(String::new(), |w| format!(
                            ", withdrawn {}",
                            crate::output::date(w)
                        ))
                    );
                }
                for t in &d.templates {
                    println!(
                        "  template {} ({}) created {}, expires {}",
                        t.template,
                        t.model_id,
                        crate::output::date(t.created_at),
                        crate::output::date(t.expires_at)
                    );
                }
            }
        }
        SubjectsCommand::Where {
            subject,
            json: as_json,
        } => {
            let id = SubjectId::new(subject.clone())?;
            let list = store.transfers_of(&id)?;
            if *as_json {
                let v: Vec<_> = list
                    .iter()
                    .map(|t| {
                        json!({
                            "transfer": t.transfer,
                            "direction": match t.direction {
                                TransferDirection::Out => "sent_to",
                                TransferDirection::In => "received_from",
                            },
                            "terminal": t.peer, "name": t.peer_name, "templates": t.templates,
                            "created_at": t.created_at, "recorded_at": t.recorded_at,
                            "operator": t.operator,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for t in &list {
                    println!(
                        "{} {} ({}) at {}, {} template(s), transfer {}, by {}",
                        match t.direction {
                            TransferDirection::Out => "sent to     ",
                            TransferDirection::In => "received from",
                        },
                        t.peer,
                        t.peer_name,
                        crate::output::date(t.recorded_at),
                        t.templates,
                        t.transfer,
                        t.operator
                    );
                }
                let sent = list
                    .iter()
                    .filter(|t| t.direction == TransferDirection::Out)
                    .map(|t| &t.peer)
                    .collect::<std::collections::BTreeSet<_>>()
                    .len();
                println!("{id}: sent to {sent} terminal(s)");
            }
        }
        SubjectsCommand::Delete {
            subject,
            operator,
            reason,
            notice_out,
        } => {
            let id = SubjectId::new(subject.clone())?;
            let r = store.delete_subject(&id, operator, reason)?;
            if let Some(out) = notice_out {
                super::transfer::write_notice(&store, &id, store.now(), out)?;
            }
            println!(
                "deleted {id}: {} template(s), data key {}",
                r.templates_deleted,
                if r.key_destroyed {
                    "destroyed"
                } else {
                    "absent"
                }
            );
            residue_gone(&store, r)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
