//! The gate loop.

use std::borrow::BorrowMut;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use facegate_capture::{CaptureOptions, SourceSpec};
use facegate_policy::{FailureEffect, LockoutState, NoticePending};
use facegate_store::{
    AuditEvent, AuditKind, ConsentStatus, CredentialCheck, Identification, SearchMode, Store,
};
use facegate_types::{Clock, ErrorChain, Frame, SubjectId, SystemClock, UnixMillis};
use facegate_vision::{
    Action, ChallengeStatus, Detection, LiveStatus, LivenessConfig, LivenessSession, Pipeline,
    PreparedFace, QualityIssue, StageTimings, TrackId, Tracker,
};
use rand::rngs::StdRng;
use serde::Serialize;
use serde_json::json;

use crate::EngineError;
use crate::capture::{CaptureThread, Received, SourceOpener, StreamEnd};
use crate::config::{CredentialMode, EngineConfig};
use crate::credential::Credential;
use crate::decision::{
    Agreement, AlertEvent, Attempt, DecisionEvent, Method, Mode, Outcome, PromptEvent,
    StageLatency, Verdict, ms, rfc3339,
};
use crate::gate::{GateOutput, GateWorker, Pulse};
use crate::observe::{Observation, Observer};
use crate::sink::EventSink;

/// How long the loop waits for a frame before it looks at credentials and timers again.
const POLL: Duration = Duration::from_millis(20);

/// Stops a running engine and submits credentials to it, from any thread.
#[derive(Clone)]
pub struct EngineHandle {
    stop: Arc<AtomicBool>,
    credentials: SyncSender<Credential>,
    jobs: SyncSender<StoreJob>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("stopped", &self.is_stopped())
            .finish_non_exhaustive()
    }
}

/// Work on the store that the loop runs between frames (admin commands while the service runs).
type StoreJob = Box<dyn FnOnce(&mut Store) + Send>;

/// Store jobs waiting for the loop at most.
const STORE_JOBS: usize = 8;

impl EngineHandle {
    /// Queues a credential for the decision path. Refused when the queue is full or the engine
    /// is gone (the caller tells the person to try again).
    pub fn submit(&self, credential: Credential) -> Result<(), EngineError> {
        self.credentials
            .try_send(credential)
            .map_err(|e| EngineError::Rejected {
                what: "credential",
                reason: match e {
                    TrySendError::Full(_) => "queue full",
                    TrySendError::Disconnected(_) => "engine stopped",
                },
            })
    }

    /// Asks the loop to finish the frame in hand, decide pending credentials and return.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Runs `job` on the engine's store between two frames and returns its result: how an admin
    /// command (enroll, withdraw, delete, list, audit) reaches the store while the engine owns
    /// it. The gallery the loop matches against is the store's own, so an enrollment or a
    /// withdrawal applies from the next frame. Fails when the queue is full, the engine is not
    /// running, or the loop does not get to the job within `timeout`.
    pub fn with_store<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Store) -> R + Send + 'static,
        timeout: Duration,
    ) -> Result<R, EngineError> {
        let (tx, rx) = sync_channel(1);
        let boxed: StoreJob = Box::new(move |store| {
            let _ = tx.send(job(store));
        });
        self.jobs
            .try_send(boxed)
            .map_err(|e| EngineError::Rejected {
                what: "store job",
                reason: match e {
                    TrySendError::Full(_) => "queue full",
                    TrySendError::Disconnected(_) => "engine stopped",
                },
            })?;
        rx.recv_timeout(timeout).map_err(|_| EngineError::Rejected {
            what: "store job",
            reason: "the engine did not run it in time",
        })
    }
}

/// Why [`Engine::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// A replayed stream ended.
    EndOfStream,
    /// [`EngineHandle::stop`] was called.
    Stopped,
}

/// Counters of one run (ids and counts only).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunSummary {
    pub frames_processed: u64,
    pub frames_captured: u64,
    /// Frames replaced before the loop took them (back-pressure).
    pub frames_dropped: u64,
    /// Frames the source could not produce (corrupt, truncated).
    pub bad_frames: u64,
    pub source_opens: u64,
    pub source_open_failures: u64,
    /// Frames or faces a vision stage failed on (skipped).
    pub vision_errors: u64,
    /// Quality/liveness attempts on tracks.
    pub attempts: u64,
    /// Embeddings computed (attempts that passed quality and liveness).
    pub embeddings: u64,
    pub tracks: u64,
    /// Decisions per outcome name.
    pub decisions: BTreeMap<&'static str, u64>,
    pub credentials: u64,
    pub sweeps: u64,
    pub sink_errors: u64,
    pub audit_errors: u64,
    pub gate_pulses: u64,
    /// Credentials and claims refused without a lookup because of a lockout.
    pub locked_out: u64,
    /// Alerts raised (broken audit chain, clock set back, filing threshold).
    pub alerts: u64,
    /// Liveness challenge prompts sent.
    pub prompts: u64,
    pub ended: Option<EndReason>,
}

/// A pending two-factor claim ([`CredentialMode::WithFace`]).
#[derive(Debug, Clone)]
struct Claim {
    subject: SubjectId,
    method: Method,
    deadline: Instant,
    submitted: Instant,
}

#[derive(Debug)]
struct TrackState {
    agreement: Agreement,
    last_attempt: Option<u64>,
    decided: Option<Outcome>,
    /// When the track was decided, and on which gallery (for retrying an `unknown`).
    decided_at: Option<(Instant, u64)>,
    /// The prompts (`retry`, `spoof_suspected`) already emitted for this track.
    prompted: Vec<Outcome>,
    /// The 1:N result of the latest identification attempt (for the audit record).
    last_identification: Option<Identification>,
    /// This face's liveness, watched on every frame while it is undecided.
    live: LivenessSession,
    /// The challenge step whose prompt went out last.
    prompt_step: Option<usize>,
}

impl TrackState {
    fn new(frames_to_agree: u32, liveness: &LivenessConfig) -> Self {
        Self {
            agreement: Agreement::new(frames_to_agree),
            last_attempt: None,
            decided: None,
            decided_at: None,
            prompted: Vec::new(),
            last_identification: None,
            live: LivenessSession::new(liveness.clone()),
            prompt_step: None,
        }
    }

    fn requalify(&mut self) {
        self.agreement.reset();
        self.last_attempt = None;
        self.decided = None;
        self.decided_at = None;
        self.prompted.clear();
        self.last_identification = None;
    }
}

/// Timings of the attempt that produced a verdict.
#[derive(Debug, Clone, Copy, Default)]
struct AttemptTimes {
    stages: StageTimings,
    detect: Duration,
    track: Duration,
    matching: Duration,
}

/// What a decision is about, before it becomes an event.
#[derive(Debug)]
struct Draft {
    track: Option<u64>,
    outcome: Outcome,
    subject: Option<SubjectId>,
    method: Method,
    mode: Mode,
    score: Option<f32>,
    frames: u32,
    reason: Option<String>,
    audit: AuditEvent,
    times: AttemptTimes,
    started: Instant,
}

/// The gate engine. See the crate docs for the loop.
///
/// `P` is how the engine holds the vision pipeline: owned (`Pipeline`, the service) or
/// borrowed (`&mut Pipeline`, tests sharing one loaded pipeline).
pub struct Engine<P: BorrowMut<Pipeline> = Pipeline> {
    config: EngineConfig,
    pipeline: P,
    store: Store,
    opener: Option<SourceOpener>,
    gate: Option<Box<dyn GateOutput>>,
    sinks: Vec<Box<dyn EventSink>>,
    observers: Vec<Box<dyn Observer>>,
    clock: Arc<dyn Clock>,
    stop: Arc<AtomicBool>,
    cred_tx: SyncSender<Credential>,
    cred_rx: Receiver<Credential>,
    job_tx: SyncSender<StoreJob>,
    job_rx: Receiver<StoreJob>,
    tracker: Tracker,
    tracks: HashMap<TrackId, TrackState>,
    claim: Option<Claim>,
    /// Failed credentials and failed claims at this terminal (Art. 14: no sweeping guesses).
    terminal_lock: LockoutState,
    /// Failed face verifications per claimed identity.
    claim_locks: HashMap<SubjectId, LockoutState>,
    frame_index: u64,
    detections: Vec<Detection>,
    summary: RunSummary,
    /// Draws the liveness challenges (seeded from the operating system).
    rng: StdRng,
}

impl<P: BorrowMut<Pipeline>> std::fmt::Debug for Engine<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .field("store", &self.store)
            .field("sinks", &self.sinks.len())
            .field("gate", &self.gate)
            .field("tracks", &self.tracks.len())
            .finish_non_exhaustive()
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

fn add_details(ev: &mut AuditEvent, extra: serde_json::Value) {
    if let (Some(obj), serde_json::Value::Object(extra)) = (ev.details.as_object_mut(), extra) {
        obj.extend(extra);
    }
}

impl<P: BorrowMut<Pipeline>> Engine<P> {
    /// Builds an engine on a loaded pipeline (with its liveness model) and an open store, whose
    /// policy the engine follows. Loads the store's gallery for the pipeline's model if it is
    /// not loaded. Add a source before [`Engine::run`]; by default there is no gate output and
    /// no sink. PIN, card and QR credentials are looked up in the store's register.
    pub fn new(
        config: EngineConfig,
        mut pipeline: P,
        mut store: Store,
    ) -> Result<Self, EngineError> {
        config.validate()?;
        let p: &mut Pipeline = pipeline.borrow_mut();
        if !p.has_liveness() {
            return Err(EngineError::Config {
                field: "vision.liveness",
                reason: "the pipeline was loaded without the liveness model; a decision needs \
                         a liveness pass"
                    .into(),
            });
        }
        let model_id = p.model_id().to_owned();
        if store.gallery().is_none_or(|g| g.model_id() != model_id) {
            let load = store.load_gallery(&model_id, config.embedding_dim)?;
            tracing::info!(
                loaded = load.loaded,
                failed = load.failures.len(),
                "engine gallery ready"
            );
        }
        let (cred_tx, cred_rx) = sync_channel(config.credential_queue);
        let (job_tx, job_rx) = sync_channel(STORE_JOBS);
        let tracker = Tracker::new(config.tracker_min_iou, config.tracker_max_missed);
        Ok(Self {
            config,
            pipeline,
            store,
            opener: None,
            gate: None,
            sinks: Vec::new(),
            clock: Arc::new(SystemClock),
            stop: Arc::new(AtomicBool::new(false)),
            cred_tx,
            cred_rx,
            job_tx,
            job_rx,
            tracker,
            tracks: HashMap::new(),
            claim: None,
            terminal_lock: LockoutState::default(),
            claim_locks: HashMap::new(),
            frame_index: 0,
            detections: Vec::new(),
            observers: Vec::new(),
            summary: RunSummary::default(),
            rng: rand::make_rng(),
        })
    }

    /// Reads frames from `spec` (a camera is reopened with back-off when it fails; a file ends
    /// the run at its end).
    #[must_use]
    pub fn with_source(mut self, spec: &SourceSpec, opts: &CaptureOptions) -> Self {
        let (spec, opts) = (spec.clone(), opts.clone());
        self.config.capture.reopen = matches!(spec, SourceSpec::Camera(_));
        self.opener = Some(Box::new(move || facegate_capture::open(&spec, &opts)));
        self
    }

    /// Reads frames from whatever `opener` opens (`config.capture.reopen` says whether it is
    /// called again after a failure).
    #[must_use]
    pub fn with_source_opener(mut self, opener: SourceOpener) -> Self {
        self.opener = Some(opener);
        self
    }

    /// Opens this gate on `granted`.
    #[must_use]
    pub fn with_gate(mut self, gate: Box<dyn GateOutput>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Adds an event sink.
    #[must_use]
    pub fn with_sink(mut self, sink: Box<dyn EventSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// The clock of event times (the store keeps its own for consent and audit).
    #[must_use]
    /// Adds an observer of the loop (health metrics, say), called between frames.
    pub fn with_observer(mut self, observer: Box<dyn Observer>) -> Self {
        self.observers.push(observer);
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// A handle to stop the engine and submit credentials.
    pub fn handle(&self) -> EngineHandle {
        EngineHandle {
            stop: self.stop.clone(),
            credentials: self.cred_tx.clone(),
            jobs: self.job_tx.clone(),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Gives back the pipeline and the store.
    pub fn into_parts(self) -> (P, Store) {
        (self.pipeline, self.store)
    }

    /// Runs the loop until the replayed stream ends or [`EngineHandle::stop`]. Sweeps expired
    /// data first. Returns an error only for start-up failures (no source, a file that cannot
    /// be opened, the first sweep failing); per-frame failures are counted in the summary.
    #[tracing::instrument(skip_all, name = "engine")]
    pub fn run(&mut self) -> Result<RunSummary, EngineError> {
        let opener = self.opener.take().ok_or(EngineError::Config {
            field: "source",
            reason: "no frame source (call with_source) or the source was used by a previous run"
                .into(),
        })?;
        self.summary = RunSummary::default();
        self.sweep()?;
        let mut last_sweep = Instant::now();
        let mut gate = match self.gate.take() {
            Some(g) => Some(GateWorker::spawn(g)?),
            None => None,
        };
        // The capture thread has its own flag: ending a replay must not mark the engine
        // stopped for the caller's handle.
        let capture_stop = Arc::new(AtomicBool::new(false));
        let mut capture =
            CaptureThread::spawn(opener, self.config.capture, capture_stop).map_err(|e| {
                EngineError::CaptureThread {
                    reason: e.to_string(),
                }
            })?;
        tracing::info!(
            threshold = f64::from(self.config.threshold),
            frames_to_agree = self.config.frames_to_agree,
            liveness = self.config.liveness.mode.as_str(),
            "engine running"
        );
        let result = loop {
            self.run_store_jobs();
            self.drain_credentials(gate.as_ref());
            self.expire_claim(gate.as_ref());
            if last_sweep.elapsed() >= self.config.sweep_interval {
                last_sweep = Instant::now();
                if let Err(e) = self.sweep() {
                    tracing::error!(error = %ErrorChain(&e), "retention sweep failed; retrying next period");
                }
            }
            if self.stop.load(Ordering::SeqCst) {
                break Ok(EndReason::Stopped);
            }
            match capture.mailbox.recv_timeout(POLL) {
                Received::Frame(frame, arrived) => {
                    self.process_frame(&frame, arrived, gate.as_ref());
                    capture.mailbox.give_back(frame);
                }
                Received::Timeout => {}
                Received::End(StreamEnd::Finished) => break Ok(EndReason::EndOfStream),
                Received::End(StreamEnd::Stopped) => break Ok(EndReason::Stopped),
                Received::End(StreamEnd::Failed(e)) => break Err(EngineError::Capture(e)),
            }
            self.observe(&capture.stats, false);
        };
        capture.stop();
        // Credentials and store jobs already queued are still handled.
        self.run_store_jobs();
        self.drain_credentials(gate.as_ref());
        if let Some(claim) = self.claim.take() {
            self.claim_timed_out(claim, gate.as_ref());
        }
        if let Some(g) = gate.as_mut() {
            g.finish();
        }
        let s = &capture.stats;
        self.summary.frames_captured = s.captured.load(Ordering::Relaxed);
        self.summary.frames_dropped = s.dropped.load(Ordering::Relaxed);
        self.summary.bad_frames = s.bad_frames.load(Ordering::Relaxed);
        self.summary.source_opens = s.opens.load(Ordering::Relaxed);
        self.summary.source_open_failures = s.open_failures.load(Ordering::Relaxed);
        self.observe(s, true);
        let ended = result?;
        self.summary.ended = Some(ended);
        tracing::info!(
            frames = self.summary.frames_processed,
            dropped = self.summary.frames_dropped,
            bad_frames = self.summary.bad_frames,
            decisions = self.summary.decisions.values().sum::<u64>(),
            ended = ?ended,
            "engine stopped"
        );
        Ok(self.summary.clone())
    }

    /// Hands the observers the counters so far (capture counters copied in: a few atomic
    /// loads, no allocation).
    fn observe(&mut self, stats: &crate::capture::CaptureStats, finished: bool) {
        if self.observers.is_empty() {
            return;
        }
        self.summary.frames_captured = stats.captured.load(Ordering::Relaxed);
        self.summary.frames_dropped = stats.dropped.load(Ordering::Relaxed);
        self.summary.bad_frames = stats.bad_frames.load(Ordering::Relaxed);
        self.summary.source_opens = stats.opens.load(Ordering::Relaxed);
        self.summary.source_open_failures = stats.open_failures.load(Ordering::Relaxed);
        let view = Observation {
            summary: &self.summary,
            store: &self.store,
            finished,
        };
        for o in &mut self.observers {
            o.observe(&view);
        }
    }

    fn run_store_jobs(&mut self) {
        while let Ok(job) = self.job_rx.try_recv() {
            job(&mut self.store);
        }
    }

    /// What the service must say at start and on each sweep without being asked: a broken
    /// audit chain (at start), a clock set back, the Art. 15 filing threshold. Each goes to
    /// the journal, to the event streams, and (at most once per start, or once a day for the
    /// filing threshold) into the audit chain.
    fn alerts(&mut self, at_start: bool) {
        let mut raised: Vec<(&'static str, String, Option<serde_json::Value>)> = Vec::new();
        if at_start {
            match self.store.verify_audit() {
                Ok(v) => {
                    if let Some(b) = v.first_break {
                        tracing::error!(seq = b.seq, what = %b, "ALERT: the audit chain is broken");
                        let d = json!({ "seq": b.seq, "what": b.to_string() });
                        raised.push(("audit_chain_broken", b.to_string(), Some(d)));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %ErrorChain(&e), "audit chain could not be verified")
                }
            }
        }
        if let Some(behind) = self.store.clock_behind() {
            tracing::error!(
                behind_ms = behind,
                "ALERT: the clock is earlier than the newest audit record"
            );
            let detail = format!(
                "the clock is {:.1} s earlier than the newest audit record",
                behind as f64 / 1000.0
            );
            raised.push((
                "clock_set_back",
                detail,
                at_start.then(|| json!({ "behind_ms": behind })),
            ));
        }
        match self.store.check_filing() {
            Ok((stored, status)) if status.is_alert() => {
                let name = if matches!(status, facegate_policy::FilingStatus::Reached) {
                    "filing_threshold_reached"
                } else {
                    "filing_threshold_near"
                };
                // The store records it in the chain once a day itself.
                raised.push((name, status.describe(stored), None));
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %ErrorChain(&e), "filing status could not be read"),
        }
        for (alert, detail, record) in raised {
            self.summary.alerts += 1;
            if let Some(d) = record {
                let mut details = json!({ "alert": alert });
                if let (Some(o), serde_json::Value::Object(extra)) = (details.as_object_mut(), d) {
                    o.extend(extra);
                }
                let ev = AuditEvent::new(AuditKind::Alert, "facegate", "raised").details(details);
                if let Err(e) = self.store.record(ev) {
                    tracing::error!(error = %ErrorChain(&e), "could not record an alert");
                }
            }
            let now = self.clock.now();
            let event = AlertEvent {
                time: rfc3339(now),
                unix_ms: now.0,
                alert,
                detail,
            };
            for sink in &mut self.sinks {
                if let Err(e) = sink.alert(&event) {
                    self.summary.sink_errors += 1;
                    tracing::warn!(error = %ErrorChain(&e), "event sink failed");
                }
            }
        }
    }

    fn sweep(&mut self) -> Result<(), EngineError> {
        let at_start = self.summary.sweeps == 0;
        self.alerts(at_start);
        let r = self.store.sweep_expired()?;
        self.summary.sweeps += 1;
        tracing::info!(
            templates_deleted = r.templates_deleted,
            subjects_affected = r.subjects_affected,
            "retention sweep"
        );
        Ok(())
    }

    // ----- faces ---------------------------------------------------------------------------

    fn process_frame(&mut self, frame: &Frame, arrived: Instant, gate: Option<&GateWorker>) {
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
        let result = if let Some(claim) = &self.claim {
            match gallery.verify(&claim.subject, &probe) {
                Ok(score) => Some((
                    Attempt::from_verification(&claim.subject, score, self.config.threshold),
                    None,
                )),
                Err(e) => {
                    tracing::warn!(error = %ErrorChain(&e), "verification failed");
                    None
                }
            }
        } else {
            match gallery.identify(&probe, self.config.top_k, SearchMode::Auto) {
                Ok(ident) => {
                    let attempt = Attempt::from_identification(
                        ident.best().map(|h| (&h.subject, h.score)),
                        ident.second_identity_score,
                        self.config.identification_threshold(gallery.len()),
                        self.config.margin,
                    );
                    Some((attempt, Some(ident)))
                }
                Err(e) => {
                    tracing::warn!(error = %ErrorChain(&e), "identification failed");
                    None
                }
            }
        };
        times.matching = t.elapsed();
        if result.is_none() {
            self.summary.vision_errors += 1;
        }
        result
    }

    /// Turns a verdict of a track into a decision draft (consent check, audit record).
    fn verdict_draft(
        &mut self,
        id: TrackId,
        verdict: Verdict,
        frames: u32,
        ident: Option<Identification>,
        times: AttemptTimes,
        started: Instant,
    ) -> Draft {
        let track = Some(id.0);
        let op = self.config.operator.clone();
        let claim = self.claim.clone();
        let (method, mode) = match &claim {
            Some(c) => (c.method, Mode::Verification),
            None => (Method::Face, Mode::Identification),
        };
        let kind = match mode {
            Mode::Verification => AuditKind::Verify,
            _ => AuditKind::Identify,
        };
        let draft = |outcome, subject, score, reason: Option<String>, audit| Draft {
            track,
            outcome,
            subject,
            method,
            mode,
            score,
            frames,
            reason,
            audit,
            times,
            started,
        };
        match verdict {
            Verdict::Identified { subject, score } => {
                let (outcome, reason) = self.consent_outcome(&subject);
                if claim.is_some() {
                    self.claim = None;
                }
                let mut audit = match (&claim, &ident) {
                    (Some(_), _) => AuditEvent::verification(
                        &subject,
                        Some(score),
                        outcome == Outcome::Granted,
                        &op,
                    ),
                    (None, Some(ident)) => AuditEvent::identification(ident, Some(&subject), &op),
                    (None, None) => AuditEvent::new(kind, &op, "match").subject(&subject),
                };
                add_details(
                    &mut audit,
                    json!({ "decision": outcome.as_str(), "track": id.0, "frames": frames,
                            "method": method.as_str(), "reason": reason }),
                );
                draft(outcome, Some(subject), Some(score), reason, audit)
            }
            Verdict::Unknown { reason, best } => {
                let (outcome, subject, reason) = match &claim {
                    Some(c) => {
                        self.claim = None;
                        self.claim_failure(&c.subject, c.method);
                        (
                            Outcome::Denied,
                            Some(c.subject.clone()),
                            format!("face_does_not_match_claim:{reason}"),
                        )
                    }
                    None => (Outcome::Unknown, None, reason.to_owned()),
                };
                let mut audit = match (&subject, &ident) {
                    (Some(s), _) => AuditEvent::verification(s, best, false, &op),
                    (None, Some(ident)) => AuditEvent::identification(ident, None, &op),
                    (None, None) => AuditEvent::new(kind, &op, "unknown"),
                };
                add_details(
                    &mut audit,
                    json!({ "decision": outcome.as_str(), "track": id.0, "frames": frames,
                            "method": method.as_str(), "reason": reason }),
                );
                draft(outcome, subject, best, Some(reason), audit)
            }
            Verdict::Spoof { reason, .. } => {
                let audit = AuditEvent::new(kind, &op, Outcome::SpoofSuspected.as_str()).details(
                    json!({ "decision": "spoof_suspected", "track": id.0, "frames": frames,
                            "method": method.as_str(), "reason": reason }),
                );
                draft(
                    Outcome::SpoofSuspected,
                    None,
                    None,
                    Some(reason.into()),
                    audit,
                )
            }
            Verdict::PoorQuality { issues } => {
                let reason = format!("quality:{}", issues.join(","));
                let audit = AuditEvent::new(kind, &op, Outcome::Retry.as_str()).details(
                    json!({ "decision": "retry", "track": id.0, "frames": frames,
                            "method": method.as_str(), "reason": reason }),
                );
                draft(Outcome::Retry, None, None, Some(reason), audit)
            }
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

    /// Granted with a live consent for this purpose, denied otherwise (with why); retry when
    /// the store cannot tell.
    fn consent_outcome(&self, subject: &SubjectId) -> (Outcome, Option<String>) {
        let denied = |why: &str| (Outcome::Denied, Some(why.to_owned()));
        match self.store.consent_status(subject) {
            Ok(ConsentStatus::Live(c)) => {
                let notice = self.store.policy().notice();
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

    /// Records, emits and acts on a decision. A grant whose audit record cannot be written
    /// becomes a retry: no processing goes unrecorded.
    fn finish(&mut self, mut d: Draft, gate: Option<&GateWorker>) {
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

    /// Logs a decision (ids and outcomes only) and hands it to every sink.
    /// Sends a challenge prompt to every sink (the terminal's screen reads it from stdout or
    /// the events socket).
    fn emit_prompt(&mut self, id: TrackId, step: usize, action: Action) {
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
        for sink in &mut self.sinks {
            if let Err(e) = sink.prompt(&event) {
                self.summary.sink_errors += 1;
                tracing::warn!(error = %ErrorChain(&e), "event sink failed");
            }
        }
    }

    fn emit(&mut self, event: &DecisionEvent) {
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
        for sink in &mut self.sinks {
            if let Err(e) = sink.emit(event) {
                self.summary.sink_errors += 1;
                tracing::warn!(error = %ErrorChain(&e), "event sink failed");
            }
        }
    }

    // ----- credentials ---------------------------------------------------------------------

    fn drain_credentials(&mut self, gate: Option<&GateWorker>) {
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
            let ev = AuditEvent::new(AuditKind::CredentialCheck, &op, outcome.as_str()).details(
                json!({ "decision": outcome.as_str(), "method": method.as_str(), "face": false,
                        "reason": reason }),
            );
            match subject {
                Some(s) => ev.subject(s),
                None => ev,
            }
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
    fn terminal_failure(&mut self, method: Method, now: UnixMillis) {
        let policy = *self.store.policy().lockout();
        if let FailureEffect::LockedOut { until, n } = self.terminal_lock.failure(&policy, now) {
            self.record_lockout("terminal", None, method, until, n, now);
        }
    }

    fn record_lockout(
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

    fn expire_claim(&mut self, gate: Option<&GateWorker>) {
        if self
            .claim
            .as_ref()
            .is_some_and(|c| Instant::now() >= c.deadline)
            && let Some(claim) = self.claim.take()
        {
            self.claim_timed_out(claim, gate);
        }
    }

    fn claim_timed_out(&mut self, claim: Claim, gate: Option<&GateWorker>) {
        let reason = "no_face_for_claim";
        let mut audit =
            AuditEvent::verification(&claim.subject, None, false, &self.config.operator);
        add_details(
            &mut audit,
            json!({ "decision": "retry", "method": claim.method.as_str(), "reason": reason }),
        );
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
