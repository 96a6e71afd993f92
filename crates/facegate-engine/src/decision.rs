//! Decisions: the outcome vocabulary, the multi-frame agreement rule (pure, unit-tested with
//! synthetic scores) and the [`DecisionEvent`] every output receives.

use std::time::Duration;

use facegate_policy::{IdentifyOutcome, UnknownReason, VerifyOutcome};
use facegate_types::{SubjectId, UnixMillis};
use serde::Serialize;

/// What the gate decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Identity agreed over enough frames (or a credential resolved), live consent present: open.
    Granted,
    /// A known subject, but not allowed now (no live consent, face does not match the claimed
    /// subject, alternative disabled).
    Denied,
    /// No identity cleared the threshold and margin (or an unknown credential).
    Unknown,
    /// The liveness session found no live person (a frozen or planar face, a failed
    /// challenge, or with the challenge off a low passive score).
    SpoofSuspected,
    /// Not enough usable frames (quality), no agreement, or a transient failure: try again.
    Retry,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Granted => "granted",
            Self::Denied => "denied",
            Self::Unknown => "unknown",
            Self::SpoofSuspected => "spoof_suspected",
            Self::Retry => "retry",
        }
    }

    /// Granted, denied and unknown end a track's processing; the others let it re-qualify.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Granted | Self::Denied | Self::Unknown)
    }
}

/// How the person presented themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Face,
    Pin,
    Card,
    Qr,
    Override,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Face => "face",
            Self::Pin => "pin",
            Self::Card => "card",
            Self::Qr => "qr",
            Self::Override => "override",
        }
    }
}

/// Which comparison the decision rests on, named as in Art. 19.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// 1:N search of the gallery.
    Identification,
    /// 1:1 comparison with the subject a credential claims.
    Verification,
    /// A credential (or operator override) alone; no face was compared.
    Credential,
}

/// Wall time per stage of the frame that produced the decision, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageLatency {
    pub detect: f64,
    pub track: f64,
    pub landmarks: f64,
    pub align: f64,
    pub quality: f64,
    pub liveness: f64,
    pub embed: f64,
    #[serde(rename = "match")]
    pub matching: f64,
    pub decide: f64,
    /// From the frame (or credential) reaching the engine to the decision.
    pub total: f64,
}

pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// One decision, as delivered to every [`EventSink`](crate::EventSink) and written as a JSON
/// line. It never holds a vector, an image or landmarks: ids, outcome, scores, latencies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionEvent {
    /// RFC 3339 UTC time of the decision.
    pub time: String,
    /// The same instant in milliseconds since the Unix epoch.
    pub unix_ms: i64,
    /// The face track the decision is about (`null` for a credential alone).
    pub track: Option<u64>,
    pub outcome: Outcome,
    /// The subject decided on (`null` when unknown).
    pub subject: Option<SubjectId>,
    pub method: Method,
    pub mode: Mode,
    /// The score of the deciding comparison (best cosine), when a face was compared.
    pub score: Option<f32>,
    /// Consecutive agreeing attempts behind the decision.
    pub frames: u32,
    /// Why, for anything but a plain grant: `below_threshold`, `ambiguous_margin`,
    /// `no_live_consent`, `quality:blurred`, `liveness`, ...
    pub reason: Option<String>,
    pub latency_ms: StageLatency,
}

impl DecisionEvent {
    /// The event as one JSON line (no trailing newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// An alert the service raises without being asked (a broken audit chain at start, a clock set
/// back, the Art. 15 filing threshold near or reached), on the same streams as decisions so a
/// terminal's screen or a site's monitoring sees it. Ids and counts only.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEvent {
    pub time: String,
    pub unix_ms: i64,
    /// `audit_chain_broken`, `clock_set_back`, `filing_threshold_near`, `filing_threshold_reached`.
    pub alert: &'static str,
    /// One line for a person (counts, sequence numbers; never face data).
    pub detail: String,
}

impl AlertEvent {
    /// The alert as one JSON line (no trailing newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// RFC 3339 (UTC, millisecond precision) of a Unix time in milliseconds.
pub fn rfc3339(t: UnixMillis) -> String {
    t.rfc3339()
}

/// A liveness challenge prompt: what the terminal's screen should ask the person in front of
/// it to do now. Ids and the action only.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptEvent {
    pub time: String,
    pub unix_ms: i64,
    pub track: u64,
    /// `turn_left`, `turn_right`, `blink`.
    pub prompt: &'static str,
    /// The words to show (English).
    pub text: &'static str,
    /// 1-based step of the challenge, and how many it has.
    pub step: usize,
    pub steps: usize,
    /// Time the person has to respond, in milliseconds.
    pub respond_within_ms: u64,
}

impl PromptEvent {
    /// The prompt as one JSON line (no trailing newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// What the terminal is doing apart from deciding (an enrollment at the terminal's own camera):
/// the words for its screen, as a count-down and progress. No subject id, no face data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusEvent {
    pub time: String,
    pub unix_ms: i64,
    /// `enrollment`.
    pub activity: &'static str,
    /// `countdown`, `prompt`, `waiting`, `sample`, `done`, `failed`.
    pub status: &'static str,
    /// The words to show (English).
    pub text: String,
    /// Progress: samples taken so far (the count-down's number while counting down), of how
    /// many.
    pub step: usize,
    pub steps: usize,
}

impl StatusEvent {
    /// The status as one JSON line (no trailing newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// The result of one attempt on a track (one frame that passed detection and was analysed).
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// The face failed quality; the names of the issues.
    Quality(Vec<&'static str>),
    /// The liveness session found the face not live (`reason`: `liveness:frozen`, ...).
    Spoof { live: f32, reason: &'static str },
    /// Identification found this subject (threshold and margin cleared), or verification
    /// accepted the claimed subject.
    Match { subject: SubjectId, score: f32 },
    /// Identification found nobody (or verification rejected the claimed subject).
    NoMatch {
        reason: &'static str,
        best: Option<f32>,
    },
}

impl Attempt {
    /// An identification attempt from its scores (the margin rule of the policy crate).
    pub fn from_identification(
        best: Option<(&SubjectId, f32)>,
        second_identity: Option<f32>,
        threshold: f32,
        margin: f32,
    ) -> Self {
        let Some((subject, score)) = best else {
            return Self::NoMatch {
                reason: UnknownReason::BelowThreshold.as_str(),
                best: None,
            };
        };
        match facegate_policy::identification_outcome(score, second_identity, threshold, margin) {
            IdentifyOutcome::Match => Self::Match {
                subject: subject.clone(),
                score,
            },
            IdentifyOutcome::Unknown(r) => Self::NoMatch {
                reason: r.as_str(),
                best: Some(score),
            },
        }
    }

    /// A verification attempt against `claimed` (`score` is `None` when the subject has no
    /// template in the gallery).
    pub fn from_verification(claimed: &SubjectId, score: Option<f32>, threshold: f32) -> Self {
        match score {
            Some(s)
                if facegate_policy::verification_outcome(s, threshold) == VerifyOutcome::Accept =>
            {
                Self::Match {
                    subject: claimed.clone(),
                    score: s,
                }
            }
            Some(s) => Self::NoMatch {
                reason: "below_threshold",
                best: Some(s),
            },
            None => Self::NoMatch {
                reason: "no_template",
                best: None,
            },
        }
    }

    fn key(&self) -> Key<'_> {
        match self {
            Self::Quality(_) => Key::Quality,
            Self::Spoof { .. } => Key::Spoof,
            Self::Match { subject, .. } => Key::Match(subject),
            Self::NoMatch { .. } => Key::NoMatch,
        }
    }
}

#[derive(PartialEq, Eq)]
enum Key<'a> {
    Quality,
    Spoof,
    Match(&'a SubjectId),
    NoMatch,
}

/// What `frames_to_agree` consecutive attempts of one track agreed on.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The same subject every time (before the consent check).
    Identified { subject: SubjectId, score: f32 },
    /// Nobody, every time.
    Unknown {
        reason: &'static str,
        best: Option<f32>,
    },
    /// Liveness failed every time.
    Spoof { live: f32, reason: &'static str },
    /// Quality failed every time.
    PoorQuality { issues: Vec<&'static str> },
}

impl From<Attempt> for Verdict {
    /// The verdict of one attempt taken alone (a single image; the loop needs agreement).
    fn from(attempt: Attempt) -> Self {
        match attempt {
            Attempt::Match { subject, score } => Self::Identified { subject, score },
            Attempt::NoMatch { reason, best } => Self::Unknown { reason, best },
            Attempt::Spoof { live, reason } => Self::Spoof { live, reason },
            Attempt::Quality(issues) => Self::PoorQuality { issues },
        }
    }
}

/// The multi-frame agreement rule: a verdict needs `needed` *consecutive* attempts of the same
/// kind (and, for a match, the same subject). Any different attempt restarts the count from it,
/// so two different identities in a row never produce a decision: never a guess.
#[derive(Debug, Clone)]
pub struct Agreement {
    needed: u32,
    last: Option<Attempt>,
    count: u32,
    /// Lowest score of the agreeing matches (the conservative one to report).
    min_score: f32,
}

impl Agreement {
    pub fn new(needed: u32) -> Self {
        Self {
            needed: needed.max(1),
            last: None,
            count: 0,
            min_score: f32::INFINITY,
        }
    }

    /// Consecutive agreeing attempts so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Forgets the streak.
    pub fn reset(&mut self) {
        self.last = None;
        self.count = 0;
        self.min_score = f32::INFINITY;
    }

    /// Adds one attempt; returns the verdict when the streak reaches `needed` (and restarts).
    pub fn push(&mut self, attempt: Attempt) -> Option<Verdict> {
        let same = self.last.as_ref().is_some_and(|l| l.key() == attempt.key());
        if !same {
            self.count = 0;
            self.min_score = f32::INFINITY;
        }
        self.count += 1;
        if let Attempt::Match { score, .. } = &attempt {
            self.min_score = self.min_score.min(*score);
        }
        self.last = Some(attempt);
        if self.count < self.needed {
            return None;
        }
        let verdict = match self.last.take()? {
            Attempt::Match { subject, .. } => Verdict::Identified {
                subject,
                score: self.min_score,
            },
            other => Verdict::from(other),
        };
        self.count_after_verdict();
        Some(verdict)
    }

    fn count_after_verdict(&mut self) {
        self.count = 0;
        self.min_score = f32::INFINITY;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn s(id: &str) -> SubjectId {
        SubjectId::new(id).unwrap()
    }

    fn ident(best: (&str, f32), second: Option<f32>) -> Attempt {
        let id = s(best.0);
        Attempt::from_identification(Some((&id, best.1)), second, 0.41, 0.05)
    }

    #[test]
    fn two_consecutive_matches_of_one_subject_agree() {
        let mut a = Agreement::new(2);
        assert_eq!(a.push(ident(("alice", 0.62), Some(0.20))), None);
        assert_eq!(
            a.push(ident(("alice", 0.55), Some(0.21))),
            Some(Verdict::Identified {
                subject: s("alice"),
                score: 0.55
            })
        );
    }

    #[test]
    fn alternating_identities_never_decide() {
        let mut a = Agreement::new(2);
        for i in 0..20 {
            let who = if i % 2 == 0 { "alice" } else { "bob" };
            assert_eq!(a.push(ident((who, 0.7), Some(0.1))), None, "attempt {i}");
        }
    }

    #[test]
    fn a_non_match_in_between_restarts_the_count() {
        let mut a = Agreement::new(3);
        assert!(a.push(ident(("alice", 0.7), None)).is_none());
        assert!(a.push(ident(("alice", 0.7), None)).is_none());
        // Under the threshold: a different kind of attempt.
        assert!(a.push(ident(("alice", 0.30), None)).is_none());
        assert!(a.push(ident(("alice", 0.7), None)).is_none());
        assert!(a.push(ident(("alice", 0.7), None)).is_none());
        assert!(matches!(
            a.push(ident(("alice", 0.7), None)),
            Some(Verdict::Identified { .. })
        ));
    }

    #[test]
    fn ambiguous_margin_is_unknown_not_the_best_guess() {
        let mut a = Agreement::new(2);
        assert!(a.push(ident(("alice", 0.60), Some(0.58))).is_none());
        assert_eq!(
            a.push(ident(("alice", 0.61), Some(0.59))),
            Some(Verdict::Unknown {
                reason: "ambiguous_margin",
                best: Some(0.61)
            })
        );
    }

    #[test]
    fn below_threshold_and_empty_gallery_are_unknown() {
        let mut a = Agreement::new(2);
        assert!(a.push(ident(("alice", 0.40), None)).is_none());
        let v = a.push(Attempt::from_identification(None, None, 0.41, 0.05));
        assert_eq!(
            v,
            Some(Verdict::Unknown {
                reason: "below_threshold",
                best: None
            })
        );
    }

    #[test]
    fn spoof_and_quality_streaks() {
        let mut a = Agreement::new(2);
        assert!(
            a.push(Attempt::Spoof {
                live: 0.1,
                reason: "liveness:passive"
            })
            .is_none()
        );
        assert!(a.push(Attempt::Quality(vec!["blurred"])).is_none());
        assert_eq!(
            a.push(Attempt::Quality(vec!["blurred"])),
            Some(Verdict::PoorQuality {
                issues: vec!["blurred"]
            })
        );
        assert!(
            a.push(Attempt::Spoof {
                live: 0.2,
                reason: "liveness:passive"
            })
            .is_none()
        );
        assert_eq!(
            a.push(Attempt::Spoof {
                live: 0.3,
                reason: "liveness:passive"
            }),
            Some(Verdict::Spoof {
                live: 0.3,
                reason: "liveness:passive"
            })
        );
    }

    #[test]
    fn one_frame_suffices_when_configured_and_streak_restarts_after_a_verdict() {
        let mut a = Agreement::new(1);
        assert!(a.push(ident(("alice", 0.7), None)).is_some());
        assert_eq!(a.count(), 0);
        let mut b = Agreement::new(0); // clamped to 1
        assert!(b.push(ident(("bob", 0.7), None)).is_some());
    }

    #[test]
    fn verification_accepts_only_over_the_threshold() {
        let alice = s("alice");
        assert!(matches!(
            Attempt::from_verification(&alice, Some(0.5), 0.41),
            Attempt::Match { .. }
        ));
        assert!(matches!(
            Attempt::from_verification(&alice, Some(0.2), 0.41),
            Attempt::NoMatch {
                reason: "below_threshold",
                ..
            }
        ));
        assert!(matches!(
            Attempt::from_verification(&alice, None, 0.41),
            Attempt::NoMatch {
                reason: "no_template",
                ..
            }
        ));
        assert!(matches!(
            Attempt::from_verification(&alice, Some(f32::NAN), 0.41),
            Attempt::NoMatch { .. }
        ));
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UnixMillis(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UnixMillis(1_700_000_000_123)),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            rfc3339(UnixMillis(951_782_400_000)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn event_json_has_no_vector_and_names_fields() {
        let ev = DecisionEvent {
            time: rfc3339(UnixMillis(0)),
            unix_ms: 0,
            track: Some(3),
            outcome: Outcome::SpoofSuspected,
            subject: None,
            method: Method::Face,
            mode: Mode::Identification,
            score: None,
            frames: 2,
            reason: Some("liveness".into()),
            latency_ms: StageLatency::default(),
        };
        let line = ev.to_json_line();
        assert!(line.contains("\"outcome\":\"spoof_suspected\""), "{line}");
        assert!(line.contains("\"subject\":null"), "{line}");
        assert!(line.contains("\"match\":0.0"), "{line}");
        assert!(!line.contains('\n'));
    }
}
