//! The rules that make facegate lawful under China's facial-recognition Measures, and the guard
//! that keeps face data on the device. This crate owns the policy sections of the config
//! (deployment purpose and site kind, notice, retention, alternative credentials, filing alert,
//! matching operating point) and validates them once into types other crates use as they are;
//! it owns the [`Consent`] proof that a template write requires (only [`PolicyConfig::grant`] and
//! [`PolicyConfig::restore`] construct it), retention expiry, the false-match-rate operating
//! points, the Art. 15 filing alert and the Art. 9 report drafts, all as pure functions of their
//! inputs. Its one side effect is [`egress::install`], which makes the kernel refuse network
//! sockets for the whole process. It must never do I/O beyond that guard, never read a clock
//! (callers pass `now`), and never see, hold or log face data: its events and errors carry ids,
//! counts and config keys only.

mod config;
mod consent;
mod credential;
pub mod egress;
mod error;
mod filing;
mod matching;
mod report;
mod retention;
mod transfer;

pub use config::{
    Alternatives, Deployment, EXAMPLE_TOML, FilingPolicy, MAX_FMR, MAX_FRAMES_TO_AGREE,
    MAX_NOTICE_TEXT, MAX_SHORT_TEXT, MatchingPolicy, Mode, Notice, NoticeChange, NoticePending,
    OperatingPoint, PolicyConfig, Purpose, RawAlternatives, RawDeployment, RawFiling, RawMatching,
    RawNotice, RawPolicyConfig, SiteKind,
};
pub use consent::{
    Consent, ConsentMethod, ConsentRecord, GUARDIAN_CONSENT_AGE_YEARS, Guardian, GuardianRelation,
    MAX_CLOCK_SKEW_MS, MAX_GUARDIAN_IDENTITY_LEN, MAX_OPERATOR_LEN, MAX_PLAUSIBLE_AGE_YEARS,
    Withdrawal,
};
pub use credential::{
    CredentialKind, FailureEffect, LockoutPolicy, LockoutState, MAX_CREDENTIAL_LEN, PIN_DIGITS,
    RawLockout,
};
pub use error::PolicyError;
pub use filing::{
    ART15_FILING_THRESHOLD, FILING_EXPORT_FORMAT, FILING_EXPORT_VERSION, FilingExport,
    FilingMergeError, FilingStatus, MergedFiling, merge_filing_exports,
};
pub use matching::{
    FpirThreshold, IdentifyOutcome, UnknownReason, VerifyOutcome, check_calibration, fmr_for_fpir,
    fpir_threshold, identification_outcome, resolve_threshold, verification_outcome,
};
pub use report::{PiaChange, PiaFingerprint, PiaReport, StateSummary, filing_report, pia_report};
pub use retention::{MAX_RETENTION_DAYS, MINOR_AGE_YEARS, RawRetention, RetentionPolicy};
pub use transfer::{MAX_TRANSFER_TERMINALS, TerminalId, TransferConsent, TransferConsentRecord};
