//! The gate engine of facegate. It owns the loop that turns camera frames into gate decisions:
//! capture on its own thread behind a one-frame mailbox (newest frame wins, drops counted; a
//! failing camera is reopened with capped exponential back-off), detection on every frame, IoU
//! tracking, quality and liveness gates, alignment and embedding only for tracks that have no
//! decision yet (at most one attempt every few frames), 1:N identification or 1:1 verification
//! against the store's gallery, agreement over several consecutive attempts, the consent check,
//! the audit record, and the outputs: [`DecisionEvent`] JSON lines to [`EventSink`]s (stdout or
//! journal, Unix-socket subscribers) and a pulse to a [`GateOutput`] (GPIO line, command,
//! dry run, or for a site's panel the grantee's card read: an OSDP reader on a serial line,
//! [`OsdpReader`], which also reports refusals and tamper, or Wiegand on two GPIO lines,
//! [`WiegandGate`]). It also takes the alternative credentials of Art. 10 (PIN, card, QR, operator
//! override) through an [`EngineHandle`], decides them on the same path and audits them the
//! same way, and runs the retention sweep at start and on the policy's schedule.
//!
//! It must never guess: without agreement, liveness, quality and a live consent the outcome is
//! `unknown`, `denied`, `spoof_suspected` or `retry`, never a grant. It must never let face
//! data out: events, logs, errors and audit records carry ids, counts, scores, outcomes and
//! latencies, never pixels, landmarks or embedding values, and no credential in clear. It never
//! installs a tracing subscriber, never opens a network socket, and never blocks the loop on a
//! slow consumer (events, gate pulses and credentials go through bounded, non-blocking queues).
//!
//! Decisions:
//! - **Agreement** ([`Agreement`]): a verdict needs `frames_to_agree` *consecutive* attempts of
//!   one track with the same result (same subject for a match); any other result restarts the
//!   count. Each attempt passed quality and liveness before it was embedded (quality is checked
//!   first, then liveness, and only then the face is embedded). `granted`, `denied` and
//!   `unknown` end a track's processing; `retry` (quality) and `spoof_suspected` (liveness) let
//!   it re-qualify; each of those prompts is emitted (and audited) once per track.
//! - **Attempts are rationed**: at most one per track every `attempt_interval_frames`
//!   processed frames, none for a track that has a final decision; detection and tracking run
//!   on every frame.
//! - **`unknown` is not for ever**: a track decided `unknown` is tried again after
//!   `unknown_retry` (3 s by default) and at once when the gallery changes
//!   ([`facegate_store::Store::gallery_generation`]): an enrollment, a reload, a withdrawal.
//! - **Credentials**: [`CredentialMode::Alone`] (default) decides a PIN, card or QR on its own
//!   (granted with a live consent in the store, denied without, unknown when the directory does
//!   not know it, denied when the policy disables that alternative); an operator override is
//!   granted and audited under the operator's name. [`CredentialMode::WithFace`] makes the
//!   credential a claim that the next face verifies 1:1 (Art. 19 verification). Both are
//!   recorded as `verify` audit records with `"face": false` or the score.
//! - **One decision path** ([`Decider`]): matching at the operating point, the consent check
//!   and the audit record's [`DecisionDetail`] are written once; the loop decides each verdict
//!   through it, and the CLI's `verify`, `identify` and `demo` decide an image through
//!   [`Decider::decide_once`], so the command line decides and records as the gate does.
//! - **Audit before act**: the audit record is written before the event and the gate pulse; a
//!   grant whose record cannot be written becomes `retry` (`audit_failed`).
//! - **The store belongs to the loop**: admin work reaches it through
//!   [`EngineHandle::with_store`], run between frames, so enrollments and withdrawals change
//!   the gallery from the next frame on without locks on the hot path.
//! - **Liveness before identity**: every undecided face has a [`LivenessSession`] fed on every
//!   frame (68 landmarks: frozen and planar motion cues), with the passive model's score at each
//!   attempt, and, as `[liveness] challenge` says, a random challenge whose prompts go to every
//!   sink as [`PromptEvent`]s. Nothing is embedded or compared before the session finds the
//!   face live; a frozen, planar or failed face is `spoof_suspected` with the reason. Measured
//!   per attack species by `facegate eval liveness` (README, "Liveness").
//!
//! - **Watching without a socket**: [`Observer`]s see the loop's counters and the store between
//!   frames; [`Metrics`] uses one (with an [`EventSink`]) to write the health metrics file for
//!   node_exporter's textfile collector (`[service] metrics_file`).
//!
//! [`LivenessSession`]: facegate_vision::LivenessSession

mod config;
mod decide;
mod decision;
mod engine;
mod error;
mod feed;
mod gate;
mod metrics;
mod observe;
mod osdp;
mod presented;
mod sections;
mod sink;
mod wiegand;

pub use config::{
    CredentialMode, DEFAULT_UNKNOWN_RETRY, EngineConfig, FpirRule, UNKNOWN_RETRY_RANGE,
};
pub use decide::{Against, Decider, Decision, DecisionDetail, Matched, Origin};
pub use decision::{
    Agreement, AlertEvent, Attempt, DecisionEvent, Method, Mode, Outcome, PromptEvent,
    StageLatency, StatusEvent, Verdict, rfc3339,
};
pub use engine::{EndReason, Engine, EngineHandle, FrameJob, FrameTurn, RunSummary};
pub use error::EngineError;
pub use facegate_policy::{CredentialKind, MAX_CREDENTIAL_LEN};
pub use feed::{
    CaptureConfig, CaptureStats, CaptureThread, FramePolicy, Mailbox, Received, SourceOpener,
    StreamEnd,
};
pub use gate::{CardNumber, CommandGate, DryRun, GateOutput, GateWorker, GpioGate, Pulse};
pub use metrics::{LATENCY_BUCKETS, METRICS_INTERVAL_MS_RANGE, Metrics, MetricsFile, MetricsSink};
pub use observe::{Observation, Observer};
pub use osdp::{
    MAX_OSDP_ADDRESS, OSDP_BAUD_RATES, OsdpGate, OsdpReader, OsdpSecurity, OsdpSettings, OsdpSink,
    Scbk, SerialChannel,
};
pub use presented::Credential;
pub use sections::{
    CredentialModeKind, GateConfig, GateOutputKind, GateOutputs, MAX_GPIO_LINE, PULSE_MS_RANGE,
    ScbkSource, ServiceConfig, WITH_FACE_WINDOW,
};
pub use sink::{
    ACCEPTS_PER_EVENT, EventSink, JsonLinesSink, MAX_SUBSCRIBERS, MAX_SUBSCRIBERS_PER_UID,
    MemorySink, PeerCheck, SocketBroadcaster, peer_credentials,
};
pub use wiegand::{
    GpioWiegandLines, WIEGAND_INTERVAL_US, WIEGAND_PULSE_US, WIEGAND_TIMING, WiegandBits,
    WiegandCard, WiegandFormat, WiegandGate, WiegandLines, WiegandTiming, transmit,
};
