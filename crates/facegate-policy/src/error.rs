use facegate_types::{SubjectId, UnixMillis};

use crate::config::{Purpose, SiteKind};

/// Everything the policy crate can refuse, worded for the operator who has to fix it.
///
/// Variants carry ids, article numbers, config keys and counts only; never face data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    // ----- configuration -------------------------------------------------------------------
    /// `[deployment].site_kind` names a private space where face recognition is forbidden.
    #[error(
        "site kind `{kind}` is forbidden by Art. 13 of the Measures (no face recognition inside \
         hotel rooms, public bathrooms, changing rooms, toilets and the like); set \
         [deployment].site_kind to where the terminal really is, or remove the terminal"
    )]
    ForbiddenSiteKind { kind: SiteKind },

    /// `[alternatives]` offers no non-face way in.
    #[error(
        "[alternatives]: at least one of pin, card, qr, operator_override must be true; face \
         recognition must never be the only way in (Art. 10 of the Measures)"
    )]
    NoAlternativeCredential,

    /// Production mode with `debug_image_capture = true`.
    #[error(
        "[deployment].debug_image_capture = true is refused in production mode: raw face images \
         must not be kept (Art. 4 of the Measures, data minimisation); set it to false, or set \
         mode = \"development\" on a test bench that never sees real people"
    )]
    DebugCaptureInProduction,

    /// The notice people are shown is missing something Art. 5 requires.
    #[error("{field}: {reason} (the notice of Art. 5 of the Measures must be complete)")]
    NoticeIncomplete { field: &'static str, reason: String },

    /// A config value is out of range or malformed.
    #[error("{field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },

    /// A credential value or kind that the register does not accept.
    #[error("{kind} credential {reason}")]
    InvalidCredential { kind: &'static str, reason: String },

    /// The matching operating point is unusable.
    #[error("[matching]: {reason}")]
    InvalidOperatingPoint { reason: String },

    /// The configured false-match rate has no calibrated threshold for the loaded model.
    #[error(
        "[matching].fmr = {requested:e} is not calibrated for this model; calibrated false-match \
         rates: {available}; choose one of them (models/manifest.toml lists the calibration)"
    )]
    UncalibratedFmr { requested: f64, available: String },

    /// The calibration table itself is malformed.
    #[error("model calibration table: {reason}; fix the thresholds in models/manifest.toml")]
    InvalidCalibration { reason: String },

    /// The notice content changed but `[notice].version` was not bumped.
    #[error(
        "the notice content (texts, signage, retention, purpose or processor) changed but \
         [notice].version is still {version}; bump the version so that new consents record the \
         notice actually shown (Art. 5 of the Measures: changes must be notified)"
    )]
    NoticeChangedWithoutVersionBump { version: u32 },

    /// `[notice].version` went down.
    #[error(
        "[notice].version went down from {previous} to {current}; notice versions only increase \
         (Art. 5 of the Measures), set it to {previous} or higher"
    )]
    NoticeVersionDecreased { previous: u32, current: u32 },

    // ----- consent -------------------------------------------------------------------------
    /// The consent was given for another purpose than the one configured.
    #[error(
        "consent of subject {subject} was given for purpose `{consented}` but this deployment's \
         purpose is `{configured}`; a separate consent for `{configured}` is needed (Art. 6 of \
         the Measures)"
    )]
    PurposeMismatch {
        subject: SubjectId,
        consented: Purpose,
        configured: Purpose,
    },

    /// The consent records an older notice than the one currently in force.
    #[error(
        "consent of subject {subject} records notice version {shown} but the current notice is \
         version {current}; show the current notice and record consent again (Art. 5, 6 of the \
         Measures)"
    )]
    StaleNotice {
        subject: SubjectId,
        shown: u32,
        current: u32,
    },

    /// A stored consent refers to a notice version that does not exist (yet).
    #[error(
        "consent of subject {subject} records notice version {shown}, but notice versions run \
         from 1 to {current}; the record or the config is wrong"
    )]
    UnknownNoticeVersion {
        subject: SubjectId,
        shown: u32,
        current: u32,
    },

    /// No operator recorded.
    #[error(
        "consent of subject {subject} has no operator; record who took the consent (1 to \
         {max} characters, Art. 6 of the Measures)"
    )]
    MissingOperator { subject: SubjectId, max: usize },

    /// Under 14 without a guardian.
    #[error(
        "subject {subject} is {age} years old; under 14 the consent of a parent or legal \
         guardian is required (Art. 7 of the Measures): record the guardian's identity and \
         relation"
    )]
    GuardianRequired { subject: SubjectId, age: u8 },

    /// The guardian record is unusable.
    #[error("guardian of subject {subject}: {reason} (Art. 7 of the Measures)")]
    InvalidGuardian {
        subject: SubjectId,
        reason: &'static str,
    },

    /// An age nobody has.
    #[error(
        "subject {subject}: age {age} is not plausible (at most {max}); take the age from the \
         enrollment record"
    )]
    ImplausibleAge {
        subject: SubjectId,
        age: u8,
        max: u8,
    },

    /// The consent is dated in the future.
    #[error(
        "consent of subject {subject} is dated {granted_at}, later than now ({now}) plus the \
         allowed clock skew; check the terminal's clock"
    )]
    ConsentInFuture {
        subject: SubjectId,
        granted_at: UnixMillis,
        now: UnixMillis,
    },

    /// The consent would already be past its retention period.
    #[error(
        "consent of subject {subject} expired at {expires_at} under the configured retention \
         (Art. 8 of the Measures); record a new consent"
    )]
    ConsentExpired {
        subject: SubjectId,
        expires_at: UnixMillis,
    },

    // ----- egress guard --------------------------------------------------------------------
    /// The egress guard cannot be built for this CPU.
    #[error(
        "the egress guard supports x86_64 and aarch64, not `{arch}`; face data must not be able \
         to leave the device (Art. 8 of the Measures), so facegate refuses to run here"
    )]
    EgressUnsupportedArch { arch: &'static str },

    /// Building or installing the seccomp filter failed.
    #[error(
        "installing the egress guard failed while {stage}: {reason}; the kernel must support \
         seccomp filters with TSYNC (Linux 3.17+) and no other thread may hold a conflicting \
         filter (Art. 8 of the Measures)"
    )]
    EgressInstall { stage: &'static str, reason: String },

    /// An inherited descriptor the process refuses to run with (or cannot inspect).
    #[error(
        "inherited file descriptor {fd}: {reason}; facegate refuses to run with a network \
         connection it did not make (Art. 8 of the Measures): start it without passing sockets"
    )]
    EgressInherited { fd: i32, reason: String },

    // ----- transfer between terminals ------------------------------------------------------
    /// A terminal fingerprint that is not 32 lowercase hex digits.
    #[error(
        "`{id}` is not a terminal id (32 lowercase hex digits, as `facegate keygen --terminal` \
         prints them)"
    )]
    InvalidTerminalId { id: String },

    /// A transfer consent naming no terminal, the same terminal twice, or too many.
    #[error(
        "transfer consent of subject {subject} must name 1 to {max} distinct receiving \
         terminals (Art. 6 of the Measures: a separate consent for these terminals)"
    )]
    TransferTerminals { subject: SubjectId, max: usize },

    /// The receiving terminal is not among those the person consented to.
    #[error(
        "subject {subject} has not consented to a transfer to terminal {terminal} (Art. 6, 8 of \
         the Measures: face information leaves a device only with a separate consent); record \
         one with `facegate consent grant {subject} --transfer-to <that terminal's public key>`"
    )]
    TransferNotConsented {
        subject: SubjectId,
        terminal: crate::TerminalId,
    },

    /// A transfer's face consent and transfer consent are for different people.
    #[error("transfer of subject {subject} carries a transfer consent of subject {transfer}")]
    TransferSubjectMismatch {
        subject: SubjectId,
        transfer: SubjectId,
    },
}
