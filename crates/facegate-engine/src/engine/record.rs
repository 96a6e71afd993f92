//! Record, then act: a decision's audit record is written first, then the event goes to every
//! sink and a grant pulses the gate. A grant whose record cannot be written becomes `retry`
//! (`audit_failed`): no processing goes unrecorded, and nothing opens unrecorded.

use std::borrow::BorrowMut;
use std::time::{Duration, Instant};

use facegate_store::AuditEvent;
use facegate_types::{ErrorChain, SubjectId};
use facegate_vision::{Action, Pipeline, StageTimings, TrackId};

use super::Engine;
use crate::decision::{
    DecisionEvent, Method, Mode, Outcome, PromptEvent, StageLatency, ms, rfc3339,
};
use crate::gate::{GateWorker, Pulse};

/// Timings of the attempt that produced a verdict.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct AttemptTimes {
    pub(super) stages: StageTimings,
    pub(super) detect: Duration,
    pub(super) track: Duration,
    pub(super) matching: Duration,
}

/// What a decision is about, before it becomes an event.
#[derive(Debug)]
pub(super) struct Draft {
    pub(super) track: Option<u64>,
    pub(super) outcome: Outcome,
    pub(super) subject: Option<SubjectId>,
    pub(super) method: Method,
    pub(super) mode: Mode,
    pub(super) score: Option<f32>,
    pub(super) frames: u32,
    pub(super) reason: Option<String>,
    pub(super) audit: AuditEvent,
    pub(super) times: AttemptTimes,
    pub(super) started: Instant,
}

impl<P: BorrowMut<Pipeline>> Engine<P> {
    /// Records, emits and acts on a decision. A grant whose audit record cannot be written
    /// becomes a retry: no processing goes unrecorded.
    pub(super) fn finish(&mut self, mut d: Draft, gate: Option<&GateWorker>) {
        let t = Instant::now();
        if let Err(e) = self.store.record(d.audit.clone()) {
            self.summary.audit_errors += 1;
            tracing::error!(error = %ErrorChain(&e), "audit record failed");
            if d.outcome == Outcome::Granted {
                d.outcome = Outcome::Retry;
                d.reason = Some("audit_failed".into());
            }
        }
        let now = self.clock.now();
        let st = d.times.stages;
        let event = DecisionEvent {
            time: rfc3339(now),
            unix_ms: now.0,
            track: d.track,
            outcome: d.outcome,
            subject: d.subject,
            method: d.method,
            mode: d.mode,
            score: d.score.map(|s| (s * 1e4).round() / 1e4),
            frames: d.frames,
            reason: d.reason,
            latency_ms: StageLatency {
                detect: ms(d.times.detect),
                track: ms(d.times.track),
                landmarks: ms(st.landmarks),
                align: ms(st.align),
                quality: ms(st.quality),
                liveness: ms(st.liveness),
                embed: ms(st.embed),
                matching: ms(d.times.matching),
                decide: ms(t.elapsed()),
                total: ms(d.started.elapsed()),
            },
        };
        if event.outcome == Outcome::Granted
            && let Some(g) = gate
        {
            let pulse = Pulse {
                subject: event.subject.clone(),
                method: event.method,
                track: event.track,
                card: g
                    .wants_card()
                    .then(|| self.card_number(event.subject.as_ref()))
                    .flatten(),
            };
            if g.open(pulse) {
                self.summary.gate_pulses += 1;
            }
        }
        *self
            .summary
            .decisions
            .entry(event.outcome.as_str())
            .or_default() += 1;
        self.emit(&event);
    }

    /// The grantee's card number for the gate output (Wiegand, OSDP); a register that cannot
    /// be read is logged and the output reports the missing number.
    fn card_number(&self, subject: Option<&SubjectId>) -> Option<crate::gate::CardNumber> {
        let subject = subject?;
        self.store
            .card_number(subject)
            .map(|n| n.map(crate::gate::CardNumber::new))
            .inspect_err(|e| tracing::error!(subject = %subject, error = %ErrorChain(e), "card number unreadable"))
            .ok()
            .flatten()
    }

    /// Sends a challenge prompt to every sink (the terminal's screen reads it from stdout or
    /// the events socket).
    pub(super) fn emit_prompt(&mut self, id: TrackId, step: usize, action: Action) {
        let now = self.clock.now();
        let event = PromptEvent {
            time: rfc3339(now),
            unix_ms: now.0,
            track: id.0,
            prompt: action.as_str(),
            text: action.prompt(),
            step: step + 1,
            steps: self.config.liveness.challenge.steps,
            respond_within_ms: self.config.liveness.challenge.window.as_millis() as u64,
        };
        self.summary.prompts += 1;
        tracing::info!(
            track = id.0,
            prompt = action.as_str(),
            step = step + 1,
            "challenge prompt"
        );
        self.each_sink(|sink| sink.prompt(&event));
    }

    /// Logs a decision (ids and outcomes only) and hands it to every sink.
    pub(super) fn emit(&mut self, event: &DecisionEvent) {
        tracing::info!(
            track = event.track,
            outcome = event.outcome.as_str(),
            subject = event.subject.as_ref().map(SubjectId::as_str),
            method = event.method.as_str(),
            mode = ?event.mode,
            frames = event.frames,
            total_ms = event.latency_ms.total,
            "decision"
        );
        self.each_sink(|sink| sink.emit(event));
    }
}
