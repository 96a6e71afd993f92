//! The one decision path for faces: an embedded face matched against the gallery (1:N) or
//! against a claimed subject (1:1) at the operating point, the verdict turned into an outcome by
//! the consent check, and the audit record of it with its typed [`DecisionDetail`]. The engine's
//! loop decides every face through a [`Decider`], after its agreement over frames; the CLI's
//! `verify`, `identify` and `demo` decide one image through [`Decider::decide_once`], so a
//! decision on the command line is taken, and recorded, exactly as at the gate.

use std::sync::atomic::{AtomicUsize, Ordering};

use facegate_policy::NoticePending;
use facegate_store::{
    AuditEvent, AuditKind, ConsentStatus, Gallery, Identification, MatchRule, SearchMode, Store,
    StoreError,
};
use facegate_types::{Embedding, ErrorChain, SubjectId};

use crate::EngineError;
use crate::config::{EngineConfig, FpirRule};
use crate::decision::{Attempt, Method, Mode, Outcome, Verdict};

/// What the audit record of a decision carries beside the comparison's own fields (scores,
/// searched count). [`DecisionDetail::attach`] merges it into the record's `details` under the
/// field names (`decision`, `track`, `frames`, `method`, `face`, `reason`), which are part of
/// the audit format that exports are checked against; absent options are left out, except
/// `reason`, which is `null` for a grant.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionDetail {
    /// The outcome the gate acted on.
    pub decision: Outcome,
    /// The face track (absent for a credential or a single image).
    pub track: Option<u64>,
    /// Consecutive agreeing attempts behind the decision (absent when no face was compared).
    pub frames: Option<u32>,
    pub method: Method,
    /// `false` when a credential was decided without comparing a face.
    pub face: Option<bool>,
    /// Why, for anything but a plain grant (`null` for a grant).
    pub reason: Option<String>,
}

impl DecisionDetail {
    /// Adds these fields to `audit`'s details (a key already there is replaced).
    pub fn attach(&self, audit: &mut AuditEvent) {
        use serde_json::Value;
        let mut fields = serde_json::Map::new();
        fields.insert("decision".into(), self.decision.as_str().into());
        if let Some(track) = self.track {
            fields.insert("track".into(), track.into());
        }
        if let Some(frames) = self.frames {
            fields.insert("frames".into(), frames.into());
        }
        fields.insert("method".into(), self.method.as_str().into());
        if let Some(face) = self.face {
            fields.insert("face".into(), face.into());
        }
        fields.insert(
            "reason".into(),
            self.reason.as_deref().map_or(Value::Null, Value::from),
        );
        match audit.details.as_object_mut() {
            Some(obj) => obj.extend(fields),
            None => audit.details = Value::Object(fields),
        }
    }
}

/// Whom a face is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Against<'a> {
    /// 1:N identification over the whole gallery.
    Gallery,
    /// 1:1 verification of the subject a credential (presented by `method`) claims.
    Claim {
        subject: &'a SubjectId,
        method: Method,
    },
}

impl Against<'_> {
    fn mode(self) -> Mode {
        match self {
            Self::Gallery => Mode::Identification,
            Self::Claim { .. } => Mode::Verification,
        }
    }

    fn method(self) -> Method {
        match self {
            Self::Gallery => Method::Face,
            Self::Claim { method, .. } => method,
        }
    }
}

/// One comparison of a probe: the attempt it makes towards a verdict, and the 1:N result
/// behind it (for the audit record).
#[derive(Debug, Clone)]
pub struct Matched {
    pub attempt: Attempt,
    pub identification: Option<Identification>,
    /// The cosine threshold the comparison was held to (the 1:N one follows the gallery size
    /// under an `fpir` rule).
    pub threshold: f32,
}

/// A decision about a face, ready to be recorded, emitted and acted on.
#[derive(Debug, Clone)]
pub struct Decision {
    pub outcome: Outcome,
    /// The subject decided on: the identified one, or the claimed one of a refused claim.
    pub subject: Option<SubjectId>,
    pub method: Method,
    pub mode: Mode,
    /// The score of the deciding comparison, when a face was compared.
    pub score: Option<f32>,
    pub reason: Option<String>,
    /// The record to write before anything acts on the decision.
    pub audit: AuditEvent,
}

/// Where a verdict came from, for its record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Origin {
    /// The face track (`None` for a single image).
    pub track: Option<u64>,
    /// Consecutive attempts that agreed.
    pub frames: u32,
}

/// Decides faces at one operating point for one operator (the engine, or the CLI's user).
#[derive(Debug)]
pub struct Decider {
    threshold: f32,
    fpir: Option<FpirRule>,
    margin: f32,
    top_k: usize,
    operator: String,
    /// The gallery size last warned about (an unmet `fpir` target is said once per size, not
    /// at every identification).
    warned_at: AtomicUsize,
}

impl Clone for Decider {
    fn clone(&self) -> Self {
        Self {
            threshold: self.threshold,
            fpir: self.fpir.clone(),
            margin: self.margin,
            top_k: self.top_k,
            operator: self.operator.clone(),
            warned_at: AtomicUsize::new(self.warned_at.load(Ordering::Relaxed)),
        }
    }
}

impl Decider {
    /// The operating point of `config` (threshold, `fpir` rule, margin, top-k), recording
    /// under `config.operator`.
    pub fn new(config: &EngineConfig) -> Self {
        Self {
            threshold: config.threshold,
            fpir: config.fpir.clone(),
            margin: config.margin,
            top_k: config.top_k,
            operator: config.operator.clone(),
            warned_at: AtomicUsize::new(0),
        }
    }

    /// The same operating point, recorded under another operator's name.
    #[must_use]
    pub fn with_operator(mut self, operator: impl Into<String>) -> Self {
        self.operator = operator.into();
        self
    }

    /// The 1:1 cosine threshold.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    pub fn margin(&self) -> f32 {
        self.margin
    }

    pub fn operator(&self) -> &str {
        &self.operator
    }

    /// The 1:N threshold at `gallery_size` templates: the 1:1 threshold, or the [`FpirRule`]'s
    /// when set. A gallery beyond the calibration gets its strictest point (and a warning: the
    /// target cannot be promised any more).
    pub fn identification_threshold(&self, gallery_size: usize) -> f32 {
        let Some(rule) = &self.fpir else {
            return self.threshold;
        };
        match facegate_policy::fpir_threshold(&rule.calibration, rule.fpir, gallery_size) {
            Ok(t) => {
                if !t.met && self.warned_at.swap(gallery_size, Ordering::Relaxed) != gallery_size {
                    tracing::warn!(
                        gallery_size,
                        fpir = rule.fpir,
                        needed_fmr = t.needed_fmr,
                        strictest_fmr = t.fmr,
                        "the gallery outgrew the calibration: the fpir target is not met"
                    );
                }
                t.cosine
            }
            // `validate` refused a bad table or rate at start; should it ever fail here, fail
            // closed (a cosine of 1 identifies nobody).
            Err(_) => 1.0,
        }
    }

    /// Compares `probe` with the gallery (or the claimed subject's templates): one attempt.
    pub fn matches(
        &self,
        gallery: &Gallery,
        probe: &Embedding,
        against: Against<'_>,
    ) -> Result<Matched, StoreError> {
        match against {
            Against::Claim { subject, .. } => {
                let score = gallery.verify(subject, probe)?;
                Ok(Matched {
                    attempt: Attempt::from_verification(subject, score, self.threshold),
                    identification: None,
                    threshold: self.threshold,
                })
            }
            Against::Gallery => {
                let threshold = self.identification_threshold(gallery.len());
                let rule = MatchRule {
                    threshold: Some(threshold),
                    margin: self.margin,
                };
                let ident = gallery.identify_with(probe, self.top_k, SearchMode::Auto, rule)?;
                let attempt = Attempt::from_identification(
                    ident.best().map(|h| (&h.subject, h.score)),
                    ident.second_identity_score,
                    threshold,
                    self.margin,
                );
                Ok(Matched {
                    attempt,
                    identification: Some(ident),
                    threshold,
                })
            }
        }
    }

    /// Turns an agreed verdict into a decision: a match is granted only with a live consent
    /// for this purpose (and the current notice where the policy suspends on a pending one);
    /// a refused claim is denied naming the claimed subject. The audit record carries the
    /// comparison and the [`DecisionDetail`].
    pub fn judge(
        &self,
        store: &Store,
        verdict: Verdict,
        against: Against<'_>,
        identification: Option<&Identification>,
        origin: Origin,
    ) -> Decision {
        let op = self.operator.as_str();
        let (method, mode) = (against.method(), against.mode());
        let kind = match mode {
            Mode::Verification => AuditKind::Verify,
            _ => AuditKind::Identify,
        };
        let (outcome, subject, score, reason, mut audit) = match verdict {
            Verdict::Identified { subject, score } => {
                let (outcome, reason) = consent_outcome(store, &subject);
                let audit = match (against, identification) {
                    (Against::Claim { .. }, _) => AuditEvent::verification(
                        &subject,
                        Some(score),
                        outcome == Outcome::Granted,
                        op,
                    ),
                    (Against::Gallery, Some(ident)) => {
                        AuditEvent::identification(ident, Some(&subject), op)
                    }
                    (Against::Gallery, None) => {
                        AuditEvent::new(kind, op, "match").subject(&subject)
                    }
                };
                (outcome, Some(subject), Some(score), reason, audit)
            }
            Verdict::Unknown { reason, best } => match (against, identification) {
                (Against::Claim { subject, .. }, _) => (
                    Outcome::Denied,
                    Some(subject.clone()),
                    best,
                    Some(format!("face_does_not_match_claim:{reason}")),
                    AuditEvent::verification(subject, best, false, op),
                ),
                (Against::Gallery, ident) => (
                    Outcome::Unknown,
                    None,
                    best,
                    Some(reason.to_owned()),
                    match ident {
                        Some(ident) => AuditEvent::identification(ident, None, op),
                        None => AuditEvent::new(kind, op, "unknown"),
                    },
                ),
            },
            Verdict::Spoof { reason, .. } => (
                Outcome::SpoofSuspected,
                None,
                None,
                Some(reason.to_owned()),
                AuditEvent::new(kind, op, Outcome::SpoofSuspected.as_str()),
            ),
            Verdict::PoorQuality { issues } => (
                Outcome::Retry,
                None,
                None,
                Some(format!("quality:{}", issues.join(","))),
                AuditEvent::new(kind, op, Outcome::Retry.as_str()),
            ),
        };
        DecisionDetail {
            decision: outcome,
            track: origin.track,
            frames: Some(origin.frames),
            method,
            face: None,
            reason: reason.clone(),
        }
        .attach(&mut audit);
        Decision {
            outcome,
            subject,
            method,
            mode,
            score,
            reason,
            audit,
        }
    }

    /// Decides one probe on its own (an image given to the CLI): one comparison, a verdict
    /// from that single attempt, the consent check, and the audit record written before the
    /// decision is returned. An empty (or unloaded) gallery decides `unknown`
    /// (`empty_gallery`). Fails only when the comparison or the record fails: nothing is
    /// decided unrecorded.
    pub fn decide_once(
        &self,
        store: &mut Store,
        probe: &Embedding,
        against: Against<'_>,
    ) -> Result<(Decision, Option<Matched>), EngineError> {
        let matched = match store.gallery() {
            Some(g) => Some(self.matches(g, probe, against)?),
            None => None,
        };
        let attempt = matched.as_ref().map_or(
            Attempt::NoMatch {
                reason: "empty_gallery",
                best: None,
            },
            |m| m.attempt.clone(),
        );
        let verdict = Verdict::from(attempt);
        let ident = matched.as_ref().and_then(|m| m.identification.as_ref());
        let origin = Origin {
            track: None,
            frames: 1,
        };
        let decision = self.judge(store, verdict, against, ident, origin);
        store.record(decision.audit.clone())?;
        Ok((decision, matched))
    }
}

/// Granted with a live consent for this purpose, denied otherwise (with why); retry when the
/// store cannot tell.
fn consent_outcome(store: &Store, subject: &SubjectId) -> (Outcome, Option<String>) {
    let denied = |why: &str| (Outcome::Denied, Some(why.to_owned()));
    match store.consent_status(subject) {
        Ok(ConsentStatus::Live(c)) => {
            let notice = store.policy().notice();
            if notice.pending() == NoticePending::Suspend
                && c.record().notice_version < notice.version()
            {
                denied("notice_pending")
            } else {
                (Outcome::Granted, None)
            }
        }
        Ok(ConsentStatus::OtherPurpose { .. }) => denied("consent_for_other_purpose"),
        Ok(ConsentStatus::Tampered { .. }) => denied("consent_record_invalid"),
        Ok(ConsentStatus::WithdrawnInRecord) => denied("consent_withdrawn"),
        Ok(_) => denied("no_live_consent"),
        Err(e) => {
            tracing::error!(subject = %subject, error = %ErrorChain(&e), "consent lookup failed");
            (Outcome::Retry, Some("store_error".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detail_adds_its_fields_beside_the_comparison_and_keeps_its_key_names() {
        let subject = SubjectId::new("emp-1").unwrap();
        let mut audit = AuditEvent::verification(&subject, Some(0.81234), true, "op");
        DecisionDetail {
            decision: Outcome::Granted,
            track: Some(7),
            frames: Some(3),
            method: Method::Card,
            face: None,
            reason: None,
        }
        .attach(&mut audit);
        assert_eq!(
            audit.details,
            serde_json::json!({ "score": 0.8123, "decision": "granted", "track": 7,
                                "frames": 3, "method": "card", "reason": null })
        );
        let mut audit = AuditEvent::new(AuditKind::CredentialCheck, "op", "denied");
        DecisionDetail {
            decision: Outcome::SpoofSuspected,
            track: None,
            frames: None,
            method: Method::Pin,
            face: Some(false),
            reason: Some("alternative_disabled".into()),
        }
        .attach(&mut audit);
        assert_eq!(
            audit.details,
            serde_json::json!({ "decision": "spoof_suspected", "method": "pin", "face": false,
                                "reason": "alternative_disabled" })
        );
    }
}
