//! The face path of the loop: detection and tracking on every frame, the liveness session of
//! every undecided face, rationed attempts (quality, embedding, matching through the
//! [`Decider`]), agreement over frames, and the verdict handed to the record-then-act step.

use std::borrow::BorrowMut;
use std::collections::hash_map::Entry;
use std::time::Instant;

use facegate_store::Identification;
use facegate_types::{ErrorChain, Frame, SubjectId};
use facegate_vision::{ChallengeStatus, LiveStatus, Pipeline, PreparedFace, QualityIssue, TrackId};

use super::record::{AttemptTimes, Draft};
use super::{Engine, TrackState};
use crate::decide::{Against, Origin};
use crate::decision::{Attempt, Method, Outcome, Verdict};
use crate::gate::GateWorker;
use facegate_policy::FailureEffect;

impl<P: BorrowMut<Pipeline>> Engine<P> {
    pub(super) fn process_frame(
        &mut self,
        frame: &Frame,
        arrived: Instant,
        gate: Option<&GateWorker>,
    ) {
        let _span = tracing::debug_span!("frame", seq = frame.sequence).entered();
        self.frame_index += 1;
        self.summary.frames_processed += 1;
        let t0 = Instant::now();
        // The detection buffer is reused from frame to frame.
        let mut detections = std::mem::take(&mut self.detections);
        detections.clear();
        match self.pipeline.borrow_mut().detect(frame) {
            Ok(d) => detections.extend(d.iter().take(self.config.max_faces).copied()),
            Err(e) => {
                self.summary.vision_errors += 1;
                tracing::warn!(error = %ErrorChain(&e), seq = frame.sequence, "detection failed; frame skipped");
                self.detections = detections;
                return;
            }
        }
        let detect = t0.elapsed();
        let t1 = Instant::now();
        let ids = self.tracker.update(&detections);
        let tracker = &self.tracker;
        self.tracks
            .retain(|id, _| tracker.tracks().iter().any(|t| t.id == *id));
        let track = t1.elapsed();
        // A credential claim is verified against the face nearest the terminal (the largest
        // box) only: a bystander's face must not decide someone else's claim.
        let claimant = if self.claim.is_some() {
            detections
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.bbox.area().total_cmp(&b.1.bbox.area()))
                .map(|(i, _)| i)
        } else {
            None
        };
        let gallery = self.store.gallery_generation();
        for (i, (&det, id)) in detections.iter().zip(ids).enumerate() {
            if claimant.is_some_and(|c| c != i) {
                continue;
            }
            let needed = self.config.frames_to_agree;
            let state = match self.tracks.entry(id) {
                Entry::Occupied(o) => o.into_mut(),
                Entry::Vacant(v) => {
                    tracing::debug!(track = id.0, "new track");
                    self.summary.tracks += 1;
                    v.insert(TrackState::new(needed, &self.config.liveness))
                }
            };
            if let Some(outcome) = state.decided {
                // An `unknown` is looked at again after the retry interval, and at once on
                // another gallery (the person may have been enrolled while in view).
                let retry = outcome == Outcome::Unknown
                    && state.decided_at.is_none_or(|(at, generation)| {
                        at.elapsed() >= self.config.unknown_retry || generation != gallery
                    });
                if !retry {
                    continue;
                }
                tracing::debug!(track = id.0, "unknown track tried again");
                state.requalify();
            }
            let due = state.last_attempt.is_none_or(|l| {
                self.frame_index - l >= u64::from(self.config.attempt_interval_frames)
            });
            // Liveness watches every frame of an undecided face: one landmark inference.
            let mut times = AttemptTimes {
                detect,
                track,
                ..AttemptTimes::default()
            };
            let pipeline = self.pipeline.borrow_mut();
            let face = match pipeline.prepare(frame, det, &mut times.stages) {
                Ok(f) => f,
                Err(e) => {
                    self.summary.vision_errors += 1;
                    tracing::warn!(error = %ErrorChain(&e), "face analysis failed; frame skipped for this face");
                    continue;
                }
            };
            let mut passive = None;
            if due {
                state.last_attempt = Some(self.frame_index);
                match pipeline.passive_liveness(frame, &face, &mut times.stages) {
                    Ok(Some(p)) => {
                        state.live.passive_score(frame.timestamp, p);
                        passive = Some(p);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.summary.vision_errors += 1;
                        tracing::warn!(error = %ErrorChain(&e), "passive liveness failed");
                    }
                }
            }
            let live = state.live.push(face.sample.clone(), &mut self.rng);
            let prompt = match live {
                LiveStatus::Prompt(ChallengeStatus::Prompt { step, action, .. })
                    if state.prompt_step != Some(step) =>
                {
                    state.prompt_step = Some(step);
                    Some((step, action))
                }
                _ => None,
            };
            if let Some((step, action)) = prompt {
                self.emit_prompt(id, step, action);
            }
            if !due {
                continue;
            }
            let Some((attempt, identification)) =
                self.attempt(frame, &face, live, passive, &mut times)
            else {
                continue;
            };
            let Some(state) = self.tracks.get_mut(&id) else {
                continue;
            };
            if identification.is_some() {
                state.last_identification = identification;
            }
            let Some(verdict) = state.agreement.push(attempt) else {
                continue;
            };
            let frames = self.config.frames_to_agree;
            let last_ident = state.last_identification.take();
            let draft = self.verdict_draft(id, verdict, frames, last_ident, times, arrived);
            let outcome = draft.outcome;
            let Some(state) = self.tracks.get_mut(&id) else {
                continue;
            };
            if outcome.is_final() {
                state.decided = Some(outcome);
                state.decided_at = Some((Instant::now(), self.store.gallery_generation()));
            } else if state.prompted.contains(&outcome) {
                // Each prompt once per track: a spoof held up to the camera, or a face turned
                // away, keeps being tried but does not flood the events and the audit log.
                continue;
            } else {
                state.prompted.push(outcome);
            }
            self.finish(draft, gate);
        }
        self.detections = detections;
    }

    /// One attempt on one prepared face: the liveness verdict and the quality gate, then
    /// embed and match. `None` while liveness is still being watched (no attempt yet).
    fn attempt(
        &mut self,
        frame: &Frame,
        face: &PreparedFace,
        live: LiveStatus,
        passive: Option<f32>,
        times: &mut AttemptTimes,
    ) -> Option<(Attempt, Option<Identification>)> {
        match live {
            LiveStatus::Live => {}
            LiveStatus::Spoof(reason) => {
                self.summary.attempts += 1;
                return Some((
                    Attempt::Spoof {
                        live: passive.unwrap_or(f32::NAN),
                        reason: reason.as_str(),
                    },
                    None,
                ));
            }
            LiveStatus::Observing | LiveStatus::Prompt(_) => return None,
        }
        self.summary.attempts += 1;
        if !face.quality.passes() {
            let issues = face
                .quality
                .issues
                .iter()
                .map(|&i| quality_name(i))
                .collect();
            return Some((Attempt::Quality(issues), None));
        }
        let pipeline = self.pipeline.borrow_mut();
        let probe = match pipeline.embed_prepared(frame, face, &mut times.stages) {
            Ok(e) => e,
            Err(e) => {
                self.summary.vision_errors += 1;
                tracing::warn!(error = %ErrorChain(&e), "embedding failed; attempt skipped");
                return None;
            }
        };
        self.summary.embeddings += 1;
        let t = Instant::now();
        let Some(gallery) = self.store.gallery() else {
            times.matching = t.elapsed();
            return Some((
                Attempt::NoMatch {
                    reason: "empty_gallery",
                    best: None,
                },
                None,
            ));
        };
        let against = match &self.claim {
            Some(c) => Against::Claim {
                subject: &c.subject,
                method: c.method,
            },
            None => Against::Gallery,
        };
        let result = match self.decider.matches(gallery, &probe, against) {
            Ok(m) => Some((m.attempt, m.identification)),
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "matching failed");
                None
            }
        };
        times.matching = t.elapsed();
        if result.is_none() {
            self.summary.vision_errors += 1;
        }
        result
    }

    /// Turns a verdict of a track into a decision draft through the [`Decider`] (consent
    /// check, audit record); a claim is settled by it, and a refused one counts against the
    /// claimed identity and the terminal.
    fn verdict_draft(
        &mut self,
        id: TrackId,
        verdict: Verdict,
        frames: u32,
        ident: Option<Identification>,
        times: AttemptTimes,
        started: Instant,
    ) -> Draft {
        let claim = self.claim.take();
        let against = match &claim {
            Some(c) => Against::Claim {
                subject: &c.subject,
                method: c.method,
            },
            None => Against::Gallery,
        };
        let settles_claim = matches!(
            verdict,
            Verdict::Identified { .. } | Verdict::Unknown { .. }
        );
        let refused = matches!(verdict, Verdict::Unknown { .. });
        let origin = Origin {
            track: Some(id.0),
            frames,
        };
        let d = self
            .decider
            .judge(&self.store, verdict, against, ident.as_ref(), origin);
        match claim {
            // Quality and liveness verdicts leave the claim waiting for a usable face.
            Some(c) if !settles_claim => self.claim = Some(c),
            Some(c) if refused => self.claim_failure(&c.subject, c.method),
            _ => {}
        }
        Draft {
            track: Some(id.0),
            outcome: d.outcome,
            subject: d.subject,
            method: d.method,
            mode: d.mode,
            score: d.score,
            frames,
            reason: d.reason,
            audit: d.audit,
            times,
            started,
        }
    }

    /// A face that did not verify against a claimed identity counts against that identity
    /// and against the terminal.
    fn claim_failure(&mut self, subject: &SubjectId, method: Method) {
        let now = self.clock.now();
        let policy = *self.store.policy().lockout();
        // Forget identities whose back-off has lapsed, so the map stays small.
        if self.claim_locks.len() > 1024 {
            self.claim_locks.retain(|_, l| !l.is_clear(&policy, now));
        }
        let lock = self.claim_locks.entry(subject.clone()).or_default();
        if let FailureEffect::LockedOut { until, n } = lock.failure(&policy, now) {
            self.record_lockout("claimed_identity", Some(subject), method, until, n, now);
        }
        self.terminal_failure(method, now);
    }
}

fn quality_name(issue: QualityIssue) -> &'static str {
    match issue {
        QualityIssue::TooSmall => "too_small",
        QualityIssue::Blurred => "blurred",
        QualityIssue::TooDark => "too_dark",
        QualityIssue::TooBright => "too_bright",
        QualityIssue::Clipped => "clipped",
        QualityIssue::Turned => "turned",
        QualityIssue::Tilted => "tilted",
        QualityIssue::Rolled => "rolled",
    }
}
