//! The Art. 10 alternatives at the gate: PIN, card and QR credentials looked up in the store's
//! register and decided alone or as a claim the next face must verify, operator overrides,
//! and the lockouts that stop sweeping guesses (Art. 14). Decided on the same record-then-act
//! step as faces, with the same [`DecisionDetail`] in their audit records.

use std::borrow::BorrowMut;
use std::sync::mpsc::TryRecvError;
use std::time::Instant;

use facegate_policy::FailureEffect;
use facegate_store::{AuditEvent, AuditKind, CredentialCheck};
use facegate_types::{ErrorChain, SubjectId, UnixMillis};
use facegate_vision::Pipeline;
use serde_json::json;

use super::record::{AttemptTimes, Draft};
use super::{Claim, Engine};
use crate::config::CredentialMode;
use crate::decide::DecisionDetail;
use crate::decision::{DecisionEvent, Method, Mode, Outcome, StageLatency, ms, rfc3339};
use crate::gate::GateWorker;
use crate::presented::Credential;

impl<P: BorrowMut<Pipeline>> Engine<P> {
    // ----- credentials ---------------------------------------------------------------------

    pub(super) fn drain_credentials(&mut self, gate: Option<&GateWorker>) {
        loop {
            match self.cred_rx.try_recv() {
                Ok(c) => self.credential(c, gate),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }

    fn credential(&mut self, credential: Credential, gate: Option<&GateWorker>) {
        self.summary.credentials += 1;
        let started = Instant::now();
        let method = credential.method();
        // Read at each use: a policy reloaded into the store applies at once.
        let alternatives = *self.store.policy().alternatives();
        let op = self.config.operator.clone();
        let base =
            |outcome: Outcome, subject: Option<SubjectId>, reason: Option<String>, audit| Draft {
                track: None,
                outcome,
                subject,
                method,
                mode: Mode::Credential,
                score: None,
                frames: 0,
                reason,
                audit,
                times: AttemptTimes::default(),
                started,
            };
        let record = |outcome: Outcome, subject: Option<&SubjectId>, reason: Option<&str>| {
            let mut ev = AuditEvent::new(AuditKind::CredentialCheck, &op, outcome.as_str());
            if let Some(s) = subject {
                ev = ev.subject(s);
            }
            DecisionDetail {
                decision: outcome,
                track: None,
                frames: None,
                method,
                face: Some(false),
                reason: reason.map(str::to_owned),
            }
            .attach(&mut ev);
            ev
        };
        let secret = match &credential {
            Credential::OperatorOverride { operator } => {
                if !alternatives.operator_override() {
                    let reason = "alternative_disabled";
                    let audit = record(Outcome::Denied, None, Some(reason));
                    return self.finish(
                        base(Outcome::Denied, None, Some(reason.into()), audit),
                        gate,
                    );
                }
                let mut audit = record(Outcome::Granted, None, None);
                audit.operator.clone_from(operator);
                return self.finish(
                    base(
                        Outcome::Granted,
                        None,
                        Some(format!("override:{operator}")),
                        audit,
                    ),
                    gate,
                );
            }
            other => other.secret(),
        };
        let Some((kind, value)) = secret else {
            return;
        };
        if !alternatives.accepts(kind) {
            let reason = "alternative_disabled";
            let audit = record(Outcome::Denied, None, Some(reason));
            return self.finish(
                base(Outcome::Denied, None, Some(reason.into()), audit),
                gate,
            );
        }
        let now = self.clock.now();
        if let Some(until) = self.terminal_lock.locked_until(now) {
            return self.locked_out(method, None, until, started);
        }
        let check = match self.store.check_credential(kind, value) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %ErrorChain(&e), "credential register lookup failed");
                let audit = record(Outcome::Retry, None, Some("store_error"));
                return self.finish(
                    base(Outcome::Retry, None, Some("store_error".into()), audit),
                    gate,
                );
            }
        };
        let info = match check {
            CredentialCheck::Valid(info) => info,
            CredentialCheck::NotLive(info) => {
                let reason = if info.revoked_at.is_some() {
                    "credential_revoked"
                } else {
                    "credential_expired"
                };
                let audit = record(Outcome::Denied, Some(&info.holder), Some(reason));
                self.finish(
                    base(
                        Outcome::Denied,
                        Some(info.holder.clone()),
                        Some(reason.into()),
                        audit,
                    ),
                    gate,
                );
                return self.terminal_failure(method, now);
            }
            CredentialCheck::Unknown => {
                let reason = "unknown_credential";
                let audit = record(Outcome::Unknown, None, Some(reason));
                self.finish(
                    base(Outcome::Unknown, None, Some(reason.into()), audit),
                    gate,
                );
                return self.terminal_failure(method, now);
            }
        };
        let holder = info.holder;
        // Two factors only for people who chose face recognition: a holder without a live face
        // consent (who refused it, or withdrew) passes on the credential alone (Art. 10).
        let face_factor = match self.config.credential_mode {
            CredentialMode::Alone => None,
            CredentialMode::WithFace { window } => match self.store.live_consent(&holder) {
                Ok(Some(_))
                    if self
                        .store
                        .gallery()
                        .is_some_and(|g| !g.templates_of(&holder).is_empty()) =>
                {
                    Some(window)
                }
                Ok(_) => None,
                Err(e) => {
                    tracing::error!(subject = %holder, error = %ErrorChain(&e), "consent lookup failed");
                    let audit = record(Outcome::Retry, Some(&holder), Some("store_error"));
                    return self.finish(
                        base(
                            Outcome::Retry,
                            Some(holder),
                            Some("store_error".into()),
                            audit,
                        ),
                        gate,
                    );
                }
            },
        };
        let Some(window) = face_factor else {
            let audit = record(Outcome::Granted, Some(&holder), None);
            return self.finish(base(Outcome::Granted, Some(holder), None, audit), gate);
        };
        if let Some(until) = self
            .claim_locks
            .get(&holder)
            .and_then(|l| l.locked_until(now))
        {
            return self.locked_out(method, Some(holder), until, started);
        }
        let t = Instant::now();
        if let Some(old) = self.claim.take() {
            self.claim_timed_out(old, gate);
        }
        tracing::info!(subject = %holder, method = method.as_str(), "credential claim: verifying the face");
        self.claim = Some(Claim {
            subject: holder,
            method,
            deadline: t + window,
            submitted: t,
        });
        // Every face in view is judged afresh against the claim.
        for s in self.tracks.values_mut() {
            s.requalify();
        }
    }

    /// A refusal while locked out: told to the terminal, counted, not recorded (the lockout
    /// itself was), and no lookup is made.
    fn locked_out(
        &mut self,
        method: Method,
        subject: Option<SubjectId>,
        until: UnixMillis,
        started: Instant,
    ) {
        self.summary.locked_out += 1;
        let now = self.clock.now();
        let event = DecisionEvent {
            time: rfc3339(now),
            unix_ms: now.0,
            track: None,
            outcome: Outcome::Denied,
            subject,
            method,
            mode: Mode::Credential,
            score: None,
            frames: 0,
            reason: Some(format!(
                "locked_out:{}s",
                ((until.0 - now.0).max(0) + 999) / 1000
            )),
            latency_ms: StageLatency {
                total: ms(started.elapsed()),
                ..StageLatency::default()
            },
        };
        *self.summary.decisions.entry("denied").or_default() += 1;
        self.emit(&event);
    }

    /// Counts a failed credential (or a failed claim) against the terminal, and records a
    /// lockout once when it starts.
    pub(super) fn terminal_failure(&mut self, method: Method, now: UnixMillis) {
        let policy = *self.store.policy().lockout();
        if let FailureEffect::LockedOut { until, n } = self.terminal_lock.failure(&policy, now) {
            self.record_lockout("terminal", None, method, until, n, now);
        }
    }

    pub(super) fn record_lockout(
        &mut self,
        scope: &str,
        subject: Option<&SubjectId>,
        method: Method,
        until: UnixMillis,
        n: u32,
        now: UnixMillis,
    ) {
        let seconds = (until.0 - now.0).max(0) / 1000;
        tracing::warn!(
            scope,
            lockout = n,
            seconds,
            method = method.as_str(),
            "lockout after failed attempts"
        );
        let mut ev = AuditEvent::new(AuditKind::Lockout, &self.config.operator, "locked").details(
            json!({ "scope": scope, "lockout": n, "seconds": seconds, "until": until.0,
                    "method": method.as_str(),
                    "failures": self.store.policy().lockout().max_failures() }),
        );
        if let Some(s) = subject {
            ev = ev.subject(s);
        }
        if let Err(e) = self.store.record(ev) {
            self.summary.audit_errors += 1;
            tracing::error!(error = %ErrorChain(&e), "audit record failed");
        }
    }

    pub(super) fn expire_claim(&mut self, gate: Option<&GateWorker>) {
        if self
            .claim
            .as_ref()
            .is_some_and(|c| Instant::now() >= c.deadline)
            && let Some(claim) = self.claim.take()
        {
            self.claim_timed_out(claim, gate);
        }
    }

    pub(super) fn claim_timed_out(&mut self, claim: Claim, gate: Option<&GateWorker>) {
        let reason = "no_face_for_claim";
        let mut audit =
            AuditEvent::verification(&claim.subject, None, false, &self.config.operator);
        DecisionDetail {
            decision: Outcome::Retry,
            track: None,
            frames: None,
            method: claim.method,
            face: None,
            reason: Some(reason.into()),
        }
        .attach(&mut audit);
        let draft = Draft {
            track: None,
            outcome: Outcome::Retry,
            subject: Some(claim.subject),
            method: claim.method,
            mode: Mode::Verification,
            score: None,
            frames: 0,
            reason: Some(reason.into()),
            audit,
            times: AttemptTimes::default(),
            started: claim.submitted,
        };
        self.finish(draft, gate);
    }
}
