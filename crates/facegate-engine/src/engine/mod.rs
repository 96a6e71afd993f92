//! The gate loop: the engine, its handle, the run loop with its alerts and retention sweeps.
//! The paths it runs live beside it: `faces` (frames to verdicts), `alternatives` (the Art. 10
//! credentials and lockouts) and `record` (record, then act).

mod alternatives;
mod faces;
mod record;
mod terminal;

pub use terminal::{FrameJob, FrameTurn};

use std::borrow::BorrowMut;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use facegate_capture::{CaptureOptions, SourceSpec};
use facegate_policy::LockoutState;
use facegate_store::{AuditEvent, AuditKind, Identification, Store};
use facegate_types::{Clock, ErrorChain, SubjectId, SystemClock};
use facegate_vision::{Detection, LivenessConfig, LivenessSession, Pipeline, TrackId, Tracker};
use rand::rngs::StdRng;
use serde::Serialize;
use serde_json::json;

use crate::EngineError;
use crate::config::EngineConfig;
use crate::decide::Decider;
use crate::decision::{Agreement, AlertEvent, Method, Outcome, rfc3339};
use crate::feed::{CaptureThread, Received, SourceOpener, StreamEnd};
use crate::gate::{GateOutput, GateWorker};
use crate::observe::{Observation, Observer};
use crate::presented::Credential;
use crate::sink::EventSink;

/// How long the loop waits for a frame before it looks at credentials and timers again.
const POLL: Duration = Duration::from_millis(20);

/// Stops a running engine and submits credentials to it, from any thread.
#[derive(Clone)]
pub struct EngineHandle {
    stop: Arc<AtomicBool>,
    credentials: SyncSender<Credential>,
    jobs: SyncSender<StoreJob>,
    frame_jobs: SyncSender<FrameJob>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("stopped", &self.is_stopped())
            .finish_non_exhaustive()
    }
}

/// Work on the store that the loop runs between frames (admin commands while the service runs).
/// Admin work between frames: on the store, or on the pipeline and the store (a photo enrolled
/// while the service runs is analysed by the service's own models).
type StoreJob = Box<dyn FnOnce(&mut Store, &mut Pipeline) + Send>;

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
        let boxed: StoreJob = Box::new(move |store, _| {
            let _ = tx.send(job(store));
        });
        self.queue_job(boxed, rx, timeout)
    }

    /// Runs `job` on the engine's pipeline and store between two frames (an enrollment from
    /// photos while the service runs) and returns its result; as [`EngineHandle::with_store`].
    pub fn with_pipeline<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Pipeline, &mut Store) -> R + Send + 'static,
        timeout: Duration,
    ) -> Result<R, EngineError> {
        let (tx, rx) = sync_channel(1);
        let boxed: StoreJob = Box::new(move |store, pipeline| {
            let _ = tx.send(job(pipeline, store));
        });
        self.queue_job(boxed, rx, timeout)
    }

    /// Hands the camera's frames to `job` until it is done (a live enrollment at the
    /// terminal): while it runs the face path pauses, so nobody is identified or let in, and
    /// what it says goes to every sink as a [`crate::StatusEvent`]. The job reports its own
    /// result (through a channel it holds); it is dropped unfinished when the engine stops or
    /// the stream ends. Refused while another one is waiting or running.
    pub fn with_frames(&self, job: FrameJob) -> Result<(), EngineError> {
        self.frame_jobs
            .try_send(job)
            .map_err(|e| EngineError::Rejected {
                what: "frame job",
                reason: match e {
                    TrySendError::Full(_) => "another enrollment is running at this terminal",
                    TrySendError::Disconnected(_) => "engine stopped",
                },
            })
    }

    fn queue_job<R>(
        &self,
        boxed: StoreJob,
        rx: Receiver<R>,
        timeout: Duration,
    ) -> Result<R, EngineError> {
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
    frame_tx: SyncSender<FrameJob>,
    frame_rx: Receiver<FrameJob>,
    /// The frame job running now (the face path is paused while it runs).
    frame_job: Option<FrameJob>,
    tracker: Tracker,
    tracks: HashMap<TrackId, TrackState>,
    claim: Option<Claim>,
    /// Failed credentials and failed claims at this terminal (Art. 14: no sweeping guesses).
    terminal_lock: LockoutState,
    /// Failed face verifications per claimed identity.
    claim_locks: HashMap<SubjectId, LockoutState>,
    frame_index: u64,
    detections: Vec<Detection>,
    /// Decides every face at the configured operating point (the CLI decides through the same).
    decider: Decider,
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
                other_models = load.other_models.len(),
                "engine gallery ready"
            );
        }
        let (cred_tx, cred_rx) = sync_channel(config.credential_queue);
        let (job_tx, job_rx) = sync_channel(STORE_JOBS);
        let (frame_tx, frame_rx) = sync_channel(1);
        let tracker = Tracker::new(config.tracker_min_iou, config.tracker_max_missed);
        let decider = Decider::new(&config);
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
            frame_tx,
            frame_rx,
            frame_job: None,
            tracker,
            tracks: HashMap::new(),
            claim: None,
            terminal_lock: LockoutState::default(),
            claim_locks: HashMap::new(),
            frame_index: 0,
            detections: Vec::new(),
            observers: Vec::new(),
            decider,
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

    /// Adds an observer of the loop (health metrics, say), called between frames.
    #[must_use]
    pub fn with_observer(mut self, observer: Box<dyn Observer>) -> Self {
        self.observers.push(observer);
        self
    }

    /// The clock of event times (the store keeps its own for consent and audit).
    #[must_use]
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
            frame_jobs: self.frame_tx.clone(),
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
                    if !self.frame_job_turn(&frame) {
                        self.process_frame(&frame, arrived, gate.as_ref());
                    }
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
        // An enrollment still taking frames ends unfinished (its caller is told so).
        self.frame_job = None;
        while self.frame_rx.try_recv().is_ok() {}
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
    fn observe(&mut self, stats: &crate::feed::CaptureStats, finished: bool) {
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

    /// Hands something to every sink; a failing sink is logged and counted, never stops the
    /// others or the loop.
    fn each_sink(
        &mut self,
        mut deliver: impl FnMut(&mut dyn EventSink) -> Result<(), EngineError>,
    ) {
        for sink in &mut self.sinks {
            if let Err(e) = deliver(sink.as_mut()) {
                self.summary.sink_errors += 1;
                tracing::warn!(error = %ErrorChain(&e), "event sink failed");
            }
        }
    }

    fn run_store_jobs(&mut self) {
        while let Ok(job) = self.job_rx.try_recv() {
            job(&mut self.store, self.pipeline.borrow_mut());
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
            self.each_sink(|sink| sink.alert(&event));
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
}
