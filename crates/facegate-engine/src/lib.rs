//! The gate engine of facegate. It owns the loop that turns camera frames into gate decisions:
//! capture on its own thread behind a one-frame mailbox (newest frame wins, drops counted; a
//! failing camera is reopened with capped exponential back-off), detection on every frame, IoU
//! tracking, quality and liveness gates, alignment and embedding only for tracks that have no
//! decision yet (at most one attempt every few frames), 1:N identification or 1:1 verification
//! against the store's gallery, agreement over several consecutive attempts, the consent check,
//! the audit record, and the outputs: [`DecisionEvent`] JSON lines to [`EventSink`]s (stdout or
//! journal, Unix-socket subscribers) and a pulse to a [`GateOutput`] (GPIO line, command,
//! dry run). It also takes the alternative credentials of Art. 10 (PIN, card, QR, operator
//! override) through an [`EngineHandle`], decides them on the same path and audits them the
//! same way, and runs the retention sweep at start and on the policy's schedule.
//!
//! It must never guess: without agreement, liveness, quality and a live consent the outcome is
//! `unknown`, `denied`, `spoof_suspected` or `retry`, never a grant. It must never let face
//! data out: events, logs, errors and audit records carry ids, counts, scores, outcomes and
//! latencies, never pixels, landmarks or embedding values, and no credential in clear. It never
//! installs a tracing subscriber, never opens a network socket, and never blocks the loop on a
//! slow consumer (events, gate pulses and credentials go through bounded, non-blocking queues).

mod capture;
mod config;
mod credential;
mod decision;
mod engine;
mod error;
mod gate;
mod sink;

pub use capture::{
    CaptureConfig, CaptureStats, CaptureThread, FramePolicy, Mailbox, Received, SourceOpener,
    StreamEnd,
};
pub use config::{CredentialMode, DEFAULT_LIVENESS_THRESHOLD, EngineConfig};
pub use credential::{
    Credential, CredentialDirectory, CredentialKind, HashedDirectory, MAX_CREDENTIAL_LEN,
    RawDirectory, RawEntry,
};
pub use decision::{
    Agreement, Attempt, DecisionEvent, Method, Mode, Outcome, StageLatency, Verdict, rfc3339,
};
pub use engine::{EndReason, Engine, EngineHandle, RunSummary};
pub use error::EngineError;
pub use gate::{CommandGate, DryRun, GateOutput, GateWorker, GpioGate, Pulse};
pub use sink::{EventSink, JsonLinesSink, MemorySink, SocketBroadcaster};
