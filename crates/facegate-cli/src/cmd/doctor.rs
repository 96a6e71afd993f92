//! `facegate doctor`: everything an integrator checks on a terminal, each with a verdict.
//! Exit status 1 when anything needs attention (a failed check or a filing alert).

use std::process::ExitCode;

use anyhow::Result;
use facegate_policy::FilingStatus;
use facegate_types::ErrorChain;
use serde_json::json;

use crate::cli::{Cli, JsonArg};
use crate::config::Config;

struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

pub fn run(cli: &Cli, args: &JsonArg) -> Result<ExitCode> {
    let mut checks = Vec::new();
    let mut add = |name, ok, detail: String| checks.push(Check { name, ok, detail });
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => {
            add("config", true, format!("{} is valid", c.source));
            Some(c)
        }
        Err(e) => {
            add("config", false, format!("{e:#}"));
            None
        }
    };
    if let Some(config) = &config {
        match super::load(cli, |_| {}) {
            Ok(l) => {
                add(
                    "models",
                    true,
                    format!(
                        "{}: hashes and shapes verified",
                        l.manifest.path().display()
                    ),
                );
                match l.config.threshold(&l.manifest) {
                    Ok(t) => add(
                        "threshold",
                        true,
                        format!("{t:.4} for the configured operating point"),
                    ),
                    Err(e) => add("threshold", false, format!("{e:#}")),
                }
            }
            Err(e) => add("models", false, format!("{e:#}")),
        }
        let egress = facegate_policy::egress::status();
        add(
            "egress guard",
            egress.is_active(),
            if egress.is_active() {
                "active: this process cannot open network sockets".into()
            } else {
                format!("NOT active: {egress:?}")
            },
        );
        match facegate_capture::list_cameras() {
            Ok(c) if !c.is_empty() => add(
                "camera",
                true,
                c.iter()
                    .map(|c| format!("{} ({})", c.path.display(), c.name))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Ok(_) => add("camera", false, "no V4L2 camera found".into()),
            Err(e) => add("camera", false, ErrorChain(&e).to_string()),
        }
        match super::store::open_store(cli, config) {
            Ok(store) => {
                add(
                    "key",
                    true,
                    format!(
                        "master key {} opens {}",
                        store.master_key_id(),
                        store.file().display()
                    ),
                );
                match store.integrity_check() {
                    Ok(()) => add("database", true, "integrity check passed".into()),
                    Err(e) => add("database", false, ErrorChain(&e).to_string()),
                }
                match store.verify_audit() {
                    Ok(v) => match &v.first_break {
                        None => add("audit chain", true, format!("{} records intact", v.records)),
                        Some(b) => add("audit chain", false, format!("BROKEN: {b}")),
                    },
                    Err(e) => add("audit chain", false, ErrorChain(&e).to_string()),
                }
                match store.other_purpose_templates() {
                    Ok(list) if list.is_empty() => add(
                        "purpose",
                        true,
                        format!("every template consented for {}", config.policy.purpose()),
                    ),
                    Ok(list) => {
                        let who: Vec<String> = list
                            .iter()
                            .map(|(s, p, n)| format!("{s} ({n} template(s), consented for {p})"))
                            .collect();
                        add(
                            "purpose",
                            false,
                            format!(
                                "{} person(s) consented for another purpose than {} and are never \
                                 matched: ask them for a new consent and re-enroll, or withdraw \
                                 (`facegate consent withdraw ID`): {}",
                                list.len(),
                                config.policy.purpose(),
                                who.join(", ")
                            ),
                        );
                    }
                    Err(e) => add("purpose", false, ErrorChain(&e).to_string()),
                }
                match store.clock_behind() {
                    None => add(
                        "clock",
                        true,
                        "not earlier than the newest audit record".into(),
                    ),
                    Some(ms) => add(
                        "clock",
                        false,
                        format!(
                            "{:.1} s earlier than the newest audit record: it was set back \
                             (check NTP/RTC); the store keeps the record's time meanwhile",
                            ms as f64 / 1000.0
                        ),
                    ),
                }
                match store.counts() {
                    Ok(c) => {
                        let status = FilingStatus::evaluate(
                            c.subjects_with_templates,
                            config.policy.filing().warn_fraction(),
                        );
                        status.emit(c.subjects_with_templates);
                        add(
                            "filing (Art. 15)",
                            !status.is_alert(),
                            status.describe(c.subjects_with_templates),
                        );
                    }
                    Err(e) => add("filing (Art. 15)", false, ErrorChain(&e).to_string()),
                }
            }
            Err(e) => add("store", false, format!("{e:#}")),
        }
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    if args.json {
        let v: Vec<_> = checks
            .iter()
            .map(|c| json!({ "check": c.name, "ok": c.ok, "detail": c.detail }))
            .collect();
        println!("{}", json!({ "checks": v, "attention": failed }));
    } else {
        for c in &checks {
            println!(
                "{:<4} {:<17} {}",
                if c.ok { "ok" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        println!("{} check(s), {failed} need attention", checks.len());
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
