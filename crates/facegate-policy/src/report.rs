//! Art. 9 impact-assessment draft and Art. 15 filing material, as pure functions from the config
//! and a [`StateSummary`] to Markdown. No face data is ever an input.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use facegate_types::UnixMillis;
use serde::{Deserialize, Serialize};

use crate::config::{Fnv1a, PolicyConfig, Purpose, SiteKind};
use crate::consent::GUARDIAN_CONSENT_AGE_YEARS;
use crate::filing::{ART15_FILING_THRESHOLD, FilingStatus};
use crate::retention::MINOR_AGE_YEARS;

/// What the store and engine know about the data held, gathered by the binary for a report.
/// Counts, times and ids only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSummary {
    /// When the summary was taken; also the date of a PIA drafted from it.
    pub generated_at: UnixMillis,
    /// People whose face information is stored (the Art. 15 count).
    pub subjects: u64,
    pub templates: u64,
    pub live_consents: u64,
    /// Stored subjects under 14 (consent by a guardian).
    pub minors_under_14: u64,
    /// Grant time of the oldest stored consent.
    pub oldest_record: Option<UnixMillis>,
    /// The next retention expiry the sweeper will act on.
    pub next_expiry: Option<UnixMillis>,
    /// Withdrawals recorded in the audit log.
    pub withdrawals: u64,
    pub audit_records: u64,
    /// Result of the last audit-chain verification, if one was run for this report.
    pub audit_chain_verified: Option<bool>,
    pub last_key_rotation: Option<UnixMillis>,
    /// Ids of the models in use (name and sha256 prefix, say).
    pub model_ids: Vec<String>,
    /// Whether the egress guard was active in the process that gathered this summary.
    pub egress_guard_active: bool,
    /// The fingerprint of the latest recorded impact assessment.
    pub latest_pia: Option<PiaFingerprint>,
}

/// What an impact assessment assessed; stored by the binary and passed back next time so the
/// draft can say what changed (Art. 9: re-assess when purpose or method changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PiaFingerprint {
    pub assessed_at: UnixMillis,
    pub purpose: Purpose,
    pub site_kind: SiteKind,
    /// [`PolicyConfig::purpose_method_fingerprint`] at the time.
    pub purpose_method: String,
    /// Sorted model ids.
    pub model_ids: Vec<String>,
    pub notice_version: u32,
}

impl PiaFingerprint {
    /// A short, stable reference to what was assessed (`fnv1a64:<hex>`), independent of when.
    pub fn id(&self) -> String {
        let mut h = Fnv1a::new();
        h.field("purpose_method", &self.purpose_method);
        for m in &self.model_ids {
            h.field("model", m);
        }
        h.field("notice_version", &self.notice_version.to_string());
        h.finish()
    }
}

/// One difference between the last assessment and now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PiaChange {
    Purpose {
        from: Purpose,
        to: Purpose,
    },
    SiteKind {
        from: SiteKind,
        to: SiteKind,
    },
    /// A processing-method key of the purpose/method fingerprint changed.
    Method {
        key: String,
        from: String,
        to: String,
    },
    Models {
        from: Vec<String>,
        to: Vec<String>,
    },
}

impl PiaChange {
    fn describe(&self) -> String {
        match self {
            PiaChange::Purpose { from, to } => format!("purpose changed from `{from}` to `{to}`"),
            PiaChange::SiteKind { from, to } => {
                format!("site kind changed from `{from}` to `{to}`")
            }
            PiaChange::Method { key, from, to } => {
                format!("processing method: `{key}` changed from `{from}` to `{to}`")
            }
            PiaChange::Models { from, to } => format!(
                "recognition models changed from [{}] to [{}]",
                from.join(", "),
                to.join(", ")
            ),
        }
    }
}

/// An impact-assessment draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PiaReport {
    pub markdown: String,
    /// Record this once the assessment is signed off; pass it as `previous` next time.
    pub fingerprint: PiaFingerprint,
    /// Empty when nothing changed or when there is no previous assessment.
    pub changes: Vec<PiaChange>,
    /// No previous assessment is recorded.
    pub first_assessment: bool,
}

impl PiaReport {
    /// Art. 9 asks for an assessment now: first one, or purpose or method changed.
    pub fn reassessment_required(&self) -> bool {
        self.first_assessment || !self.changes.is_empty()
    }
}

/// Drafts the Art. 9 personal information protection impact assessment from the config and
/// state, and says when purpose or method changed since `previous`.
pub fn pia_report(
    config: &PolicyConfig,
    state: &StateSummary,
    previous: Option<&PiaFingerprint>,
) -> PiaReport {
    let dep = config.deployment();
    let mut model_ids = state.model_ids.clone();
    model_ids.sort();
    model_ids.dedup();
    let fingerprint = PiaFingerprint {
        assessed_at: state.generated_at,
        purpose: dep.purpose(),
        site_kind: dep.site_kind(),
        purpose_method: config.purpose_method_fingerprint(),
        model_ids,
        notice_version: config.notice().version(),
    };
    let changes = previous.map_or_else(Vec::new, |p| diff(p, &fingerprint));

    let mut md = String::new();
    let w = &mut md;
    line(
        w,
        "# Personal information protection impact assessment (draft)",
    );
    line(w, "");
    line(
        w,
        &format!(
            "Drafted by facegate on {} from its configuration and state, for Art. 9 of the \
             Measures for the Security Management of the Application of Facial Recognition \
             Technology. An assessor must review, complete and sign it; keep the signed report \
             for at least 3 years.",
            fmt_time(state.generated_at)
        ),
    );
    line(w, "");

    line(w, "## 0. Changes since the last assessment");
    line(w, "");
    match previous {
        None => line(
            w,
            "**No previous assessment is recorded. An assessment is required before processing \
             starts (Art. 9).**",
        ),
        Some(p) if changes.is_empty() => line(
            w,
            &format!(
                "Purpose and processing method are unchanged since the assessment of {} \
                 (`{}`).",
                fmt_time(p.assessed_at),
                p.id()
            ),
        ),
        Some(p) => {
            line(
                w,
                &format!(
                    "**Purpose or processing method changed since the assessment of {} (`{}`); \
                     Art. 9 requires a new assessment:**",
                    fmt_time(p.assessed_at),
                    p.id()
                ),
            );
            line(w, "");
            for c in &changes {
                line(w, &format!("- {}", c.describe()));
            }
        }
    }
    if let Some(p) = previous
        && p.notice_version != fingerprint.notice_version
    {
        line(w, "");
        line(
            w,
            &format!(
                "The notice changed from version {} to {}; people must be informed of the change \
                 (Art. 5).",
                p.notice_version, fingerprint.notice_version
            ),
        );
    }
    line(w, "");

    line(w, "## 1. Lawfulness, legitimacy and necessity");
    line(w, "");
    table(
        w,
        &[
            ("Processor", md_cell(dep.processor_name())),
            (
                "Contact for rights requests",
                md_cell(dep.processor_contact()),
            ),
            (
                "Purpose (Art. 4)",
                format!("`{}`: {}", dep.purpose(), dep.purpose().description()),
            ),
            (
                "Site (Art. 13)",
                format!("{} (`{}`)", md_cell(dep.site_name()), dep.site_kind()),
            ),
            ("Mode", format!("`{}`", dep.mode())),
            (
                "Alternatives to face (Art. 10)",
                config.alternatives().enabled().join(", "),
            ),
        ],
    );
    line(w, "");
    line(
        w,
        "Face recognition is never the only way in: the alternatives above go through the same \
         gate decision. Nobody is required to enroll (Art. 10, 12). The site kind is not one of \
         the private spaces where Art. 13 forbids face recognition; the runtime refuses to start \
         at those.",
    );
    if dep.site_kind() == SiteKind::PublicVenue {
        line(w, "");
        line(
            w,
            "**Public venue:** Art. 13 allows face recognition in public places only where \
             public safety needs it, in a lawfully determined collection area with prominent \
             signs. The assessor must state that need here.",
        );
    }
    line(w, "");

    line(w, "## 2. Processing method");
    line(w, "");
    let m = config.matching();
    let models = if fingerprint.model_ids.is_empty() {
        "none recorded".to_owned()
    } else {
        fingerprint.model_ids.join(", ")
    };
    table(
        w,
        &[
            (
                "Modes (Art. 19)",
                "verification (1:1) and identification (1:N) within the enrolled gallery"
                    .to_owned(),
            ),
            ("Models", md_cell(&models)),
            ("Operating point", format!("`{}`", m.operating_point())),
            ("Identification margin", format!("{}", m.margin())),
            ("Frames that must agree", m.frames_to_agree().to_string()),
            (
                "What is stored",
                "face templates only, AES-256-GCM sealed, on this device; no face images"
                    .to_owned(),
            ),
            (
                "Debug image capture",
                if dep.debug_image_capture() {
                    "**on** (development mode only)".to_owned()
                } else {
                    "off".to_owned()
                },
            ),
            (
                "Purpose/method fingerprint",
                format!("`{}`", fingerprint.purpose_method),
            ),
        ],
    );
    line(w, "");

    line(w, "## 3. Data held");
    line(w, "");
    table(
        w,
        &[
            ("People stored", state.subjects.to_string()),
            ("Templates", state.templates.to_string()),
            ("Live consents", state.live_consents.to_string()),
            (
                "Children under 14 (guardian consent)",
                state.minors_under_14.to_string(),
            ),
            ("Oldest consent", fmt_opt_time(state.oldest_record)),
            ("Next retention expiry", fmt_opt_time(state.next_expiry)),
            ("Withdrawals recorded", state.withdrawals.to_string()),
            (
                "Processing records (audit log)",
                state.audit_records.to_string(),
            ),
        ],
    );
    line(w, "");

    line(w, "## 4. Impact on individuals and mitigations");
    line(w, "");
    let ret = config.retention();
    let minor = ret.minor_days().map_or_else(String::new, |d| {
        format!(" ({d} days for people under {MINOR_AGE_YEARS})")
    });
    let n = config.notice();
    for item in [
        format!(
            "Notice (Art. 5): version {}, languages {}, default `{}`; every consent records the \
             version shown. Signage: \"{}\"",
            n.version(),
            n.texts().keys().cloned().collect::<Vec<_>>().join(", "),
            n.default_language(),
            md_cell(n.signage())
        ),
        format!(
            "Consent (Art. 6): separate and explicit, for purpose `{}` only, recording who, when, \
             method, operator and notice version. Enrollment is impossible without it.",
            dep.purpose()
        ),
        format!(
            "Children (Art. 7): under {GUARDIAN_CONSENT_AGE_YEARS} only with the consent of a \
             parent or legal guardian; age comes from the enrollment record, never from the face."
        ),
        "Withdrawal (Art. 6): one command or API call; the person's templates are deleted at \
         once and their data key destroyed, so no readable residue remains."
            .to_owned(),
        format!(
            "Retention (Art. 8): {} days after consent{minor}; a sweeper deletes expired data at \
             start-up and every {} minutes. Shortening retention applies to existing data.",
            ret.days(),
            ret.sweep_interval().as_secs() / 60
        ),
    ] {
        line(w, &format!("- {item}"));
    }
    line(w, "");

    line(
        w,
        "## 5. Risks of leak, tampering, loss and misuse, and measures",
    );
    line(w, "");
    let audit = match state.audit_chain_verified {
        Some(true) => "verified for this report",
        Some(false) => "**verification FAILED: investigate before signing**",
        None => "not verified for this report (run `facegate audit verify`)",
    };
    let filing = FilingStatus::evaluate(state.subjects, config.filing().warn_fraction());
    for item in [
        format!(
            "Leak over a network (Art. 8): kernel-enforced egress guard (seccomp: no IPv4, IPv6 \
             or packet sockets in the process); active in the reporting process: {}. The service \
             unit has no network.",
            yes_no(state.egress_guard_active)
        ),
        "Leak at rest (Art. 14): templates sealed with AES-256-GCM, the key outside the database \
         (systemd credential or a 0600 key file), per-subject data keys."
            .to_owned(),
        format!(
            "Tampering (Art. 9, 14): hash-chained, keyed audit log of every processing event; \
             chain {audit}. Last key rotation: {}.",
            fmt_opt_time(state.last_key_rotation)
        ),
        "Misuse (Art. 14): admin API only on a local Unix socket with peer-credential and role \
         checks; no API exports templates."
            .to_owned(),
        format!("Scale (Art. 15): {}.", filing.describe(state.subjects)),
    ] {
        line(w, &format!("- {item}"));
    }
    line(w, "");

    line(w, "## 6. Conclusion (to be completed by the assessor)");
    line(w, "");
    for item in [
        "Processing is lawful, legitimate and necessary for the stated purpose.",
        "The impact on individuals and the mitigations above are adequate.",
        "Protection measures fit the risks of leak, tampering, loss and misuse.",
    ] {
        line(w, &format!("- [ ] {item}"));
    }
    line(w, "");
    line(
        w,
        &format!(
            "Assessment fingerprint: `{}` (notice version {}).",
            fingerprint.id(),
            fingerprint.notice_version
        ),
    );

    PiaReport {
        markdown: md,
        fingerprint,
        changes,
        first_assessment: previous.is_none(),
    }
}

/// The Art. 15 filing material: processor facts, purpose and method, storage measures, rules
/// and procedures, the stored count and a reference to the latest impact assessment.
pub fn filing_report(config: &PolicyConfig, state: &StateSummary) -> String {
    let dep = config.deployment();
    let status = FilingStatus::evaluate(state.subjects, config.filing().warn_fraction());
    let mut md = String::new();
    let w = &mut md;
    line(w, "# Filing material (Art. 15)");
    line(w, "");
    line(
        w,
        &format!(
            "Generated by facegate on {} for filing with the provincial cyberspace office. \
             Filing is due within 30 working days of reaching {ART15_FILING_THRESHOLD} people; \
             changes and the end of use are filed too.",
            fmt_time(state.generated_at)
        ),
    );
    line(w, "");
    line(
        w,
        &format!("**Status:** {}", status.describe(state.subjects)),
    );
    line(w, "");

    line(w, "## 1. Processor");
    line(w, "");
    table(
        w,
        &[
            ("Name", md_cell(dep.processor_name())),
            ("Contact", md_cell(dep.processor_contact())),
            (
                "Installation",
                format!("{} (`{}`)", md_cell(dep.site_name()), dep.site_kind()),
            ),
        ],
    );
    line(w, "");

    line(w, "## 2. Purpose and method");
    line(w, "");
    let models = if state.model_ids.is_empty() {
        "none recorded".to_owned()
    } else {
        state.model_ids.join(", ")
    };
    table(
        w,
        &[
            (
                "Purpose",
                format!("`{}`: {}", dep.purpose(), dep.purpose().description()),
            ),
            (
                "Method",
                "on-device verification (1:1) and identification (1:N) against enrolled \
                 templates"
                    .to_owned(),
            ),
            ("Models", md_cell(&models)),
            (
                "Operating point",
                format!("`{}`", config.matching().operating_point()),
            ),
            (
                "Alternatives to face",
                config.alternatives().enabled().join(", "),
            ),
        ],
    );
    line(w, "");

    line(w, "## 3. Storage and security measures");
    line(w, "");
    for item in [
        "Face information is stored only in the device (Art. 8); templates only, no images.",
        "Templates are sealed with AES-256-GCM; the master key is held outside the database \
         (systemd credential, TPM-sealable, or a 0600 key file); per-subject data keys are \
         destroyed on deletion.",
        "The process cannot open network sockets (seccomp egress guard) and the service unit \
         has no network.",
        "Every processing event is recorded in a keyed hash-chained audit log kept for at least \
         3 years.",
        "Administration only over a local Unix socket with peer-credential and role checks.",
    ] {
        line(w, &format!("- {item}"));
    }
    line(w, "");

    line(w, "## 4. Rules and procedures");
    line(w, "");
    let ret = config.retention();
    let minor = ret.minor_days().map_or_else(String::new, |d| {
        format!(", {d} days for people under {MINOR_AGE_YEARS}")
    });
    for item in [
        format!(
            "Notice version {} shown before consent, in {}.",
            config.notice().version(),
            config
                .notice()
                .texts()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
        "Separate, explicit consent recorded with method, operator and notice version; guardian \
         consent under 14."
            .to_owned(),
        "Withdrawal at any time; templates deleted at once.".to_owned(),
        format!(
            "Retention: {} days{minor}; expired data deleted automatically.",
            ret.days()
        ),
        "Face recognition is never mandatory; alternative credentials are always offered."
            .to_owned(),
    ] {
        line(w, &format!("- {item}"));
    }
    line(w, "");

    line(w, "## 5. Number of people whose face information is stored");
    line(w, "");
    table(
        w,
        &[
            ("People", state.subjects.to_string()),
            ("Templates", state.templates.to_string()),
            ("Children under 14", state.minors_under_14.to_string()),
            ("Threshold (Art. 15)", ART15_FILING_THRESHOLD.to_string()),
        ],
    );
    line(w, "");

    line(w, "## 6. Impact assessment");
    line(w, "");
    match &state.latest_pia {
        Some(p) => {
            line(
                w,
                &format!(
                    "Latest assessment: {} (`{}`), purpose `{}`, site kind `{}`.",
                    fmt_time(p.assessed_at),
                    p.id(),
                    p.purpose,
                    p.site_kind
                ),
            );
            if p.purpose_method != config.purpose_method_fingerprint() {
                line(w, "");
                line(
                    w,
                    "**The purpose or method changed since that assessment; re-assess before \
                     filing (`facegate report pia`).**",
                );
            }
        }
        None => line(
            w,
            "**No impact assessment is recorded; draft one with `facegate report pia` and attach \
             the signed report.**",
        ),
    }
    md
}

// ----- helpers -------------------------------------------------------------------------------

fn diff(prev: &PiaFingerprint, now: &PiaFingerprint) -> Vec<PiaChange> {
    let mut out = Vec::new();
    if prev.purpose != now.purpose {
        out.push(PiaChange::Purpose {
            from: prev.purpose,
            to: now.purpose,
        });
    }
    if prev.site_kind != now.site_kind {
        out.push(PiaChange::SiteKind {
            from: prev.site_kind,
            to: now.site_kind,
        });
    }
    let a = parse_pairs(&prev.purpose_method);
    let b = parse_pairs(&now.purpose_method);
    let keys: std::collections::BTreeSet<&str> = a.keys().chain(b.keys()).copied().collect();
    for key in keys {
        if matches!(key, "purpose" | "site_kind") {
            continue;
        }
        let (from, to) = (a.get(key), b.get(key));
        if from != to {
            out.push(PiaChange::Method {
                key: key.to_owned(),
                from: from.map_or("(absent)", |s| s).to_owned(),
                to: to.map_or("(absent)", |s| s).to_owned(),
            });
        }
    }
    let mut prev_models = prev.model_ids.clone();
    prev_models.sort();
    prev_models.dedup();
    if prev_models != now.model_ids {
        out.push(PiaChange::Models {
            from: prev_models,
            to: now.model_ids.clone(),
        });
    }
    out
}

fn parse_pairs(s: &str) -> BTreeMap<&str, &str> {
    s.split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect()
}

fn line(w: &mut String, s: &str) {
    w.push_str(s);
    w.push('\n');
}

fn table(w: &mut String, rows: &[(&str, String)]) {
    line(w, "| | |");
    line(w, "|---|---|");
    for (k, v) in rows {
        // Writing to a String cannot fail.
        let _ = writeln!(w, "| {k} | {v} |");
    }
}

/// Keeps operator-provided text on one Markdown line and out of the table syntax.
fn md_cell(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "**no**" }
}

fn fmt_opt_time(t: Option<UnixMillis>) -> String {
    t.map_or_else(|| "none".to_owned(), fmt_time)
}

/// `YYYY-MM-DD HH:MM UTC`.
pub(crate) fn fmt_time(t: UnixMillis) -> String {
    t.utc_minutes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::RawPolicyConfig;

    fn config(raw: RawPolicyConfig) -> PolicyConfig {
        PolicyConfig::from_raw(raw).unwrap()
    }

    fn state() -> StateSummary {
        StateSummary {
            generated_at: UnixMillis(1_748_736_000_000), // 2025-06-01 00:00 UTC
            subjects: 812,
            templates: 1_620,
            live_consents: 812,
            minors_under_14: 3,
            oldest_record: Some(UnixMillis(1_748_736_000_000 - 10 * 86_400_000)),
            audit_records: 40_123,
            audit_chain_verified: Some(true),
            model_ids: vec!["arcface-r100@3f2a".into(), "scrfd-10g@9c01".into()],
            egress_guard_active: true,
            ..StateSummary::default()
        }
    }

    #[test]
    fn dates_are_formatted_in_utc() {
        assert_eq!(fmt_time(UnixMillis(0)), "1970-01-01 00:00 UTC");
        assert_eq!(
            fmt_time(UnixMillis(1_748_736_000_000)),
            "2025-06-01 00:00 UTC"
        );
        assert_eq!(
            fmt_time(UnixMillis(951_782_400_000)),
            "2000-02-29 00:00 UTC"
        );
        assert_eq!(fmt_time(UnixMillis(-1)), "1969-12-31 23:59 UTC");
        assert!(fmt_time(UnixMillis(i64::MAX)).ends_with("UTC"));
        assert!(fmt_time(UnixMillis(i64::MIN)).ends_with("UTC"));
    }

    #[test]
    fn first_pia_says_an_assessment_is_required() {
        let r = pia_report(&config(RawPolicyConfig::example()), &state(), None);
        assert!(r.first_assessment && r.reassessment_required());
        assert!(
            r.markdown.contains("No previous assessment"),
            "{}",
            r.markdown
        );
        assert!(r.markdown.contains("Example Property Management"));
        assert!(r.markdown.contains("`access_control`"));
        assert!(r.markdown.contains("| People stored | 812 |"));
        assert!(r.markdown.contains("2025-06-01 00:00 UTC"));
        assert_eq!(
            r.fingerprint.model_ids,
            ["arcface-r100@3f2a", "scrfd-10g@9c01"]
        );
    }

    #[test]
    fn unchanged_config_needs_no_reassessment() {
        let c = config(RawPolicyConfig::example());
        let first = pia_report(&c, &state(), None);
        let again = pia_report(&c, &state(), Some(&first.fingerprint));
        assert!(!again.reassessment_required(), "{:?}", again.changes);
        assert!(
            again
                .markdown
                .contains("unchanged since the assessment of 2025-06-01")
        );
        assert_eq!(again.fingerprint.id(), first.fingerprint.id());
    }

    #[test]
    fn purpose_and_method_changes_are_flagged() {
        let first = pia_report(&config(RawPolicyConfig::example()), &state(), None);
        let mut raw = RawPolicyConfig::example();
        raw.deployment.purpose = Purpose::Attendance;
        raw.retention.days = 90;
        raw.retention.minor_days = None;
        let mut s = state();
        s.model_ids = vec!["arcface-r50@77aa".into(), "scrfd-10g@9c01".into()];
        let r = pia_report(&config(raw), &s, Some(&first.fingerprint));
        assert!(r.reassessment_required());
        assert!(r.changes.contains(&PiaChange::Purpose {
            from: Purpose::AccessControl,
            to: Purpose::Attendance
        }));
        assert!(r.changes.contains(&PiaChange::Method {
            key: "retention_days".into(),
            from: "365".into(),
            to: "90".into()
        }));
        assert!(
            r.changes
                .iter()
                .any(|c| matches!(c, PiaChange::Models { .. }))
        );
        assert!(r.markdown.contains("Art. 9 requires a new assessment"));
        assert!(
            r.markdown
                .contains("purpose changed from `access_control` to `attendance`")
        );
    }

    #[test]
    fn filing_report_has_the_art15_material() {
        let c = config(RawPolicyConfig::example());
        let mut s = state();
        let md = filing_report(&c, &s);
        for needle in [
            "# Filing material (Art. 15)",
            "## 1. Processor",
            "## 2. Purpose and method",
            "## 3. Storage and security measures",
            "## 4. Rules and procedures",
            "| People | 812 |",
            "No impact assessment is recorded",
        ] {
            assert!(md.contains(needle), "missing {needle}:\n{md}");
        }
        s.latest_pia = Some(pia_report(&c, &s, None).fingerprint);
        s.subjects = 100_000;
        let md = filing_report(&c, &s);
        assert!(md.contains("Latest assessment: 2025-06-01"), "{md}");
        assert!(
            md.contains("within 30 working days (`facegate report filing`)"),
            "{md}"
        );
    }

    #[test]
    fn operator_text_cannot_break_markdown_tables() {
        let mut raw = RawPolicyConfig::example();
        raw.deployment.site_name = "Gate | 3\nsecond line".into();
        let md = filing_report(&config(raw), &state());
        assert!(md.contains("Gate \\| 3 second line"), "{md}");
    }
}
