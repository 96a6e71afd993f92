//! `facegate enroll`: samples from photos (one whole, good face each) or a live source (count-down,
//! quality, liveness), the consent, and the store's enrollment checks.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use facegate_policy::Consent;
use facegate_store::{DuplicateOverride, EnrollmentCheck, Store, StoreError};
use facegate_types::{Clock, Embedding, ErrorChain, Frame, SubjectId, SystemClock, TemplateId};
use facegate_vision::{FaceGeometryLimits, Pipeline};
use serde_json::json;

use super::consent::consent_record;
use super::store::open_store;
use crate::cli::{Cli, EnrollArgs};

/// How long the count-down of a live enrollment lasts, in media time (3, 2, 1).
const COUNTDOWN: Duration = Duration::from_millis(2100);
/// A live enrollment gives up after this much media time, or [`MAX_LIVE_FRAMES`] frames.
const LIVE_LIMIT: Duration = Duration::from_secs(30);
const MAX_LIVE_FRAMES: usize = 900;

/// What a live enrollment says after a frame.
#[derive(Debug)]
pub(crate) enum LiveStep {
    /// Not done: what to show (`status` as in [`facegate_engine::FrameTurn::say`]).
    Going { status: &'static str, text: String },
    /// All samples taken, each from a live face that passed quality and the whole-face check.
    Done(Vec<Embedding>),
}

/// A live enrollment, frame by frame, wherever the frames come from (the command's own source,
/// or the running service's camera): a 3-2-1 count-down, then the liveness session the gate
/// runs (motion cues, passive model, and the challenge's prompts when the configured mode asks
/// for it), and only once the face is found live, frames with exactly one face that passes
/// quality and the whole-face check. The session keeps watching while samples are taken (a
/// spoof found later refuses the enrollment). Gives up after 30 s or 900 frames.
pub(crate) struct LiveEnrollment {
    want: usize,
    /// Counts down in media time first (the service's camera); the command counts down on
    /// the terminal before it opens its source.
    countdown: bool,
    first: Option<Duration>,
    frames: usize,
    session: facegate_vision::LivenessSession,
    rng: rand::rngs::StdRng,
    samples: Vec<Embedding>,
    limits: FaceGeometryLimits,
}

impl LiveEnrollment {
    pub(crate) fn new(
        pipeline: &Pipeline,
        want: usize,
        liveness: &facegate_vision::LivenessConfig,
        countdown: bool,
    ) -> Result<Self> {
        anyhow::ensure!((1..=10).contains(&want), "--samples must lie in 1..=10");
        anyhow::ensure!(
            pipeline.has_liveness(),
            "enrollment from a live source needs the liveness model, and it is not loaded"
        );
        Ok(Self {
            want,
            countdown,
            first: None,
            frames: 0,
            session: facegate_vision::LivenessSession::new(liveness.clone()),
            rng: rand::make_rng(),
            samples: Vec::new(),
            limits: FaceGeometryLimits::default(),
        })
    }

    /// Judges one frame. An error refuses the enrollment: a face found not live, no good
    /// samples in time, or a vision failure.
    pub(crate) fn frame(&mut self, pipeline: &mut Pipeline, frame: &Frame) -> Result<LiveStep> {
        use facegate_vision::{ChallengeStatus, LiveStatus, StageTimings};
        let going = |status, text: String| Ok(LiveStep::Going { status, text });
        let first = *self.first.get_or_insert(frame.timestamp);
        let elapsed = frame.timestamp.saturating_sub(first);
        if self.countdown && elapsed < COUNTDOWN {
            let n = 3 - (elapsed.as_millis() / 700).min(2);
            return going("countdown", format!("look at the camera: {n}"));
        }
        self.frames += 1;
        if self.frames > MAX_LIVE_FRAMES || elapsed > COUNTDOWN + LIVE_LIMIT {
            bail!(
                "only {} of {} good, live samples in {} frames; try again in better light",
                self.samples.len(),
                self.want,
                self.frames - 1
            );
        }
        let dets: Vec<_> = pipeline.detect(frame)?.iter().take(2).copied().collect();
        let [det] = dets.as_slice() else {
            let text = if dets.is_empty() {
                "no face"
            } else {
                "more than one face: only the person enrolling, please"
            };
            return going("waiting", text.into());
        };
        let mut t = StageTimings::default();
        let face = pipeline.prepare(frame, *det, &mut t)?;
        if self.frames.is_multiple_of(2) {
            let p = pipeline.passive_liveness(frame, &face, &mut t)?;
            self.session
                .passive_score(frame.timestamp, p.unwrap_or(0.0));
        }
        match self.session.push(face.sample.clone(), &mut self.rng) {
            LiveStatus::Spoof(why) => {
                bail!("not accepted as a live face ({})", why.as_str())
            }
            LiveStatus::Observing => going("waiting", "hold still, looking at the camera".into()),
            LiveStatus::Prompt(ChallengeStatus::Prompt { action, .. }) => {
                going("prompt", action.prompt().into())
            }
            LiveStatus::Prompt(_) => going("waiting", "hold still".into()),
            LiveStatus::Live if !face.quality.passes() => going(
                "waiting",
                format!("hold still, face the camera ({:?})", face.quality.issues),
            ),
            LiveStatus::Live => {
                let analysis = facegate_vision::FaceAnalysis {
                    detection: face.detection,
                    landmarks: face.landmarks,
                    quality: face.quality.clone(),
                    liveness: None,
                    embedding: None,
                };
                if let Err(why) = pipeline.check_whole_face(frame, &analysis, &self.limits)? {
                    return going("waiting", format!("not a whole face: {why}"));
                }
                self.samples
                    .push(pipeline.embed_prepared(frame, &face, &mut t)?);
                if self.samples.len() == self.want {
                    return Ok(LiveStep::Done(std::mem::take(&mut self.samples)));
                }
                going(
                    "sample",
                    format!("sample {}/{} taken", self.samples.len(), self.want),
                )
            }
        }
    }

    /// Samples taken so far, and how many are wanted.
    pub(crate) fn progress(&self) -> (usize, usize) {
        (self.samples.len(), self.want)
    }
}

/// Samples from the command's own live source, each status shown on the terminal.
fn live_samples(
    pipeline: &mut Pipeline,
    source: &str,
    want: usize,
    max_pixels: u64,
    liveness: &facegate_vision::LivenessConfig,
) -> Result<Vec<Embedding>> {
    use facegate_capture::{CaptureOptions, SourceSpec};
    let mut enrollment = LiveEnrollment::new(pipeline, want, liveness, false)?;
    let spec = SourceSpec::parse(source).with_context(|| format!("source {source}"))?;
    let mut src = facegate_capture::open(
        &spec,
        &CaptureOptions::default().with_max_pixels(max_pixels),
    )?;
    for n in (1..=3).rev() {
        eprint!("\rlook at the camera: {n}  ");
        std::thread::sleep(COUNTDOWN / 3);
    }
    eprintln!("\rlook at the camera: now");
    loop {
        let frame = match src.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => {
                eprintln!();
                let (got, want) = enrollment.progress();
                bail!(
                    "only {got} of {want} good, live samples from {source} before it ended; try again in better light"
                );
            }
            Err(e) if e.is_frame_error() => continue,
            Err(e) => return Err(e.into()),
        };
        match enrollment
            .frame(pipeline, &frame)
            .with_context(|| format!("enrollment from {source} refused"))
        {
            Ok(LiveStep::Going { text, .. }) => eprint!("\r{text:<70}"),
            Ok(LiveStep::Done(samples)) => {
                eprintln!("\r{:<70}", format!("sample {want}/{want} taken"));
                return Ok(samples);
            }
            Err(e) => {
                eprintln!();
                return Err(e);
            }
        }
    }
}

/// Which face of a photo is enrolled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaceChoice {
    /// The only face; photos with several are refused.
    Only,
    /// Face N (1-based) in detector order, as `facegate detect` lists them.
    Nth(usize),
    Largest,
}

/// Embeds the chosen face of `path`, refusing a photo with several faces (unless one is
/// chosen), a face that fails quality, and a box that holds no plausible whole face.
fn enrollment_sample(
    pipeline: &mut Pipeline,
    frame: &Frame,
    name: &str,
    choice: FaceChoice,
    id_photo: bool,
) -> Result<Embedding> {
    use facegate_vision::AnalyseOptions;
    let mut faces = Vec::new();
    let opts = AnalyseOptions {
        embed: true,
        liveness: false,
        max_faces: 64,
    };
    // An ID photo: with a margin and the fallback detector when the face fills the picture;
    // the faces' coordinates are in `photo.frame`. Otherwise the photo as it is, as before.
    let photo = if id_photo {
        pipeline.analyse_photo(frame, opts, &mut faces)
    } else {
        pipeline.analyse_direct(frame, opts, &mut faces)
    }
    .with_context(|| format!("{}: analysing the faces", name))?;
    let n = faces.len();
    let face = match (choice, n) {
        (_, 0) => bail!(
            "{}: no face found; take another photo{}",
            name,
            if id_photo {
                ""
            } else {
                " (for an ID photo whose face fills the picture, --id-photo)"
            }
        ),
        (FaceChoice::Only, 1) => faces.swap_remove(0),
        (FaceChoice::Only, _) => bail!(
            "{}: {n} faces found; enroll one person per photo, or pick one with --face N \
             (1..={n}, in the order `facegate detect` lists them) or --largest",
            name
        ),
        (FaceChoice::Nth(i), _) if (1..=n).contains(&i) => faces.swap_remove(i - 1),
        (FaceChoice::Nth(i), _) => bail!("{}: --face {i}, but {n} face(s) found (1..={n})", name),
        (FaceChoice::Largest, _) => {
            let i = faces
                .iter()
                .enumerate()
                .max_by(|a, b| {
                    a.1.detection
                        .bbox
                        .area()
                        .total_cmp(&b.1.detection.bbox.area())
                })
                .map_or(0, |(i, _)| i);
            faces.swap_remove(i)
        }
    };
    if !face.quality.passes() {
        let issues: Vec<String> = face
            .quality
            .issues
            .iter()
            .map(|i| format!("{i:?}"))
            .collect();
        bail!(
            "{}: the face fails quality ({}); take another photo",
            name,
            issues.join(", ")
        );
    }
    if let Err(why) = pipeline
        .check_photo_face(&photo, &face, &FaceGeometryLimits::default())
        .with_context(|| format!("{}: checking the face", name))?
    {
        bail!(
            "{}: not a whole face: {why}; take a photo of the whole face",
            name
        );
    }
    face.embedding
        .with_context(|| format!("{}: no embedding", name))
}

/// The operator's override of the duplicate check, from `--allow-duplicate-of` and `--reason`.
fn duplicate_override(
    other: Option<&String>,
    reason: Option<&String>,
) -> Result<Option<DuplicateOverride>> {
    match (other, reason) {
        (Some(other), Some(reason)) => {
            anyhow::ensure!(
                !reason.trim().is_empty(),
                "--reason must say why the duplicate of {other} is allowed"
            );
            Ok(Some(DuplicateOverride {
                subject: SubjectId::new(other.clone())
                    .with_context(|| format!("--allow-duplicate-of {other}"))?,
                reason: reason.clone(),
            }))
        }
        (Some(_), None) | (None, Some(_)) => {
            bail!("--allow-duplicate-of and --reason go together")
        }
        (None, None) => Ok(None),
    }
}

fn face_choice(face: Option<usize>, largest: bool) -> FaceChoice {
    match (face, largest) {
        (Some(n), _) => FaceChoice::Nth(n),
        (None, true) => FaceChoice::Largest,
        (None, false) => FaceChoice::Only,
    }
}

/// Checks the samples against each other and the gallery, then stores the consent, the subject,
/// its data key and the sealed template in one transaction (a kill in between leaves neither a
/// consent without template nor the reverse). A refusal names the sample (`name(i)`, 1-based)
/// or the subject it concerns.
fn store_enrollment(
    store: &mut Store,
    consent: &Consent,
    samples: &[Embedding],
    model_id: &str,
    check: &EnrollmentCheck,
    name: &dyn Fn(usize) -> String,
) -> Result<TemplateId> {
    store
        .enroll_checked(consent, samples, model_id, check)
        .map_err(|e| {
            let named = match &e {
                StoreError::SamplesDisagree { sample, others, .. } => Some(format!(
                    "sample {} disagrees with {}",
                    name(*sample),
                    others
                        .iter()
                        .map(|i| name(*i))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                StoreError::DuplicateFace { existing, .. } => Some(format!(
                    "to enroll anyway: --allow-duplicate-of {existing} --reason TEXT"
                )),
                _ => None,
            };
            match named {
                Some(n) => anyhow::Error::new(e).context(n),
                None => anyhow::Error::new(e),
            }
        })
}

/// Names sample `i` (1-based) by its photo, or as a live frame.
fn sample_namer(names: Vec<String>) -> impl Fn(usize) -> String {
    move |i| match names.get(i.wrapping_sub(1)) {
        Some(p) => format!("{i} ({p})"),
        None => format!("{i} (live frame {i})"),
    }
}

/// What an enrollment at the running service needs of its configuration.
#[derive(Debug, Clone)]
pub struct ServiceEnrollment {
    /// The 1:1 threshold the samples must agree at (and a duplicate is found at).
    pub threshold: f32,
    pub max_pixels: u64,
    pub liveness: facegate_vision::LivenessConfig,
    /// The source the service reads: a live enrollment must name it.
    pub source: String,
    pub model_id: String,
}

/// How long an enrollment at the service may take, from the request to the answer.
const SERVICE_ENROLL_WAIT: Duration = Duration::from_secs(50);

/// Whether `named` is the source the service reads (files compared by their real path).
fn same_source(named: &str, served: &str) -> bool {
    let real = |s: &str| {
        let p = s.strip_prefix("file:").unwrap_or(s);
        std::fs::canonicalize(p).ok()
    };
    named == served || real(named).is_some_and(|p| Some(p) == real(served))
}

/// Answers an `enroll` request at the running service: photos analysed by the service's own
/// models between two frames, or samples from its own camera with the count-down and prompts
/// on the events stream (decisions pause meanwhile). Then the same checks and the same
/// transaction as `facegate enroll`, and the gallery changes at the next frame.
pub(crate) fn at_service(
    site: &ServiceEnrollment,
    handle: &facegate_engine::EngineHandle,
    req: Box<crate::adminproto::EnrollRequest>,
    photos: Vec<Vec<u8>>,
    uid: u32,
) -> Result<serde_json::Value> {
    use clap::ValueEnum;
    let subject = SubjectId::new(req.subject.clone())?;
    let method = crate::cli::MethodArg::from_str(&req.method, true)
        .map_err(|e| anyhow::anyhow!("method {:?}: {e}", req.method))?;
    let guardian_relation = match &req.guardian_relation {
        Some(r) => crate::cli::RelationArg::from_str(r, true)
            .map_err(|e| anyhow::anyhow!("guardian_relation {r:?}: {e}"))?,
        None => crate::cli::RelationArg::Parent,
    };
    let args = crate::cli::ConsentArgs {
        age: req.age,
        method,
        operator: format!("{} (uid:{uid})", req.operator),
        guardian_id: req.guardian_id.clone(),
        guardian_relation,
    };
    let check = EnrollmentCheck {
        threshold: site.threshold,
        allow_duplicate_of: duplicate_override(
            req.allow_duplicate_of.as_ref(),
            req.reason.as_ref(),
        )?,
    };
    let model_id = site.model_id.clone();
    let reply = move |template: TemplateId, consent: &Consent, samples: usize| {
        json!({ "ok": true, "subject": consent.record().subject, "template": template,
                "samples": samples, "expires_at": consent.expires_at() })
    };
    if !photos.is_empty() {
        let names: Vec<String> = (0..photos.len())
            .map(|i| {
                req.photo_names
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("photo {}", i + 1))
            })
            .collect();
        let choice = face_choice(req.face.map(|n| n as usize), req.largest);
        let (id_photo, max_pixels) = (req.id_photo, site.max_pixels);
        return handle.with_pipeline(
            move |pipeline, store| -> Result<serde_json::Value> {
                let mut samples = Vec::with_capacity(photos.len());
                for (bytes, name) in photos.iter().zip(&names) {
                    let frame = facegate_capture::decode_image_bytes(bytes, max_pixels)
                        .with_context(|| format!("reading {name}"))?;
                    samples.push(enrollment_sample(pipeline, &frame, name, choice, id_photo)?);
                }
                let now = SystemClock.now();
                let consent = store
                    .policy()
                    .grant(consent_record(store.policy(), &subject, &args, now), now)
                    .with_context(|| format!("consent for {subject}"))?;
                let template = store_enrollment(
                    store,
                    &consent,
                    &samples,
                    &model_id,
                    &check,
                    &sample_namer(names),
                )?;
                Ok(reply(template, &consent, samples.len()))
            },
            SERVICE_ENROLL_WAIT,
        )?;
    }
    let named = req.source.as_deref().unwrap_or_default();
    anyhow::ensure!(
        same_source(named, &site.source),
        "the running service reads {}, not {named}: enroll from its camera with --from {} (or stop the service to enroll from another source)",
        site.source,
        site.source
    );
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<serde_json::Value>>(1);
    let want = usize::from(req.samples);
    let liveness = site.liveness.clone();
    let started = std::time::Instant::now();
    let mut live: Option<LiveEnrollment> = None;
    let job: facegate_engine::FrameJob = Box::new(move |turn| {
        let mut step = || -> Result<Option<serde_json::Value>> {
            anyhow::ensure!(
                started.elapsed() < SERVICE_ENROLL_WAIT - Duration::from_secs(5),
                "no good, live samples from the service's camera in time; try again in better light"
            );
            let e = match &mut live {
                Some(e) => e,
                None => live.insert(LiveEnrollment::new(turn.pipeline, want, &liveness, true)?),
            };
            match e.frame(turn.pipeline, turn.frame)? {
                LiveStep::Going { status, text } => {
                    let (got, of) = e.progress();
                    turn.say(status, text, got, of);
                    Ok(None)
                }
                LiveStep::Done(samples) => {
                    let now = SystemClock.now();
                    let store = &mut *turn.store;
                    let consent = store
                        .policy()
                        .grant(consent_record(store.policy(), &subject, &args, now), now)
                        .with_context(|| format!("consent for {subject}"))?;
                    let template = store_enrollment(
                        store,
                        &consent,
                        &samples,
                        &model_id,
                        &check,
                        &sample_namer(Vec::new()),
                    )?;
                    turn.say("done", "enrolled, thank you", want, want);
                    Ok(Some(reply(template, &consent, samples.len())))
                }
            }
        };
        match step() {
            Ok(None) => std::ops::ControlFlow::Continue(()),
            Ok(Some(v)) => {
                let _ = tx.send(Ok(v));
                std::ops::ControlFlow::Break(())
            }
            Err(e) => {
                // The screen is public: the reason (which may name another person) goes to
                // the operator only.
                turn.say(
                    "failed",
                    "enrollment refused: the operator has the reason",
                    0,
                    want,
                );
                let _ = tx.send(Err(e));
                std::ops::ControlFlow::Break(())
            }
        }
    });
    handle.with_frames(job)?;
    match rx.recv_timeout(SERVICE_ENROLL_WAIT) {
        Ok(r) => r.context("enrollment at the service's camera refused"),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            bail!(
                "the enrollment did not finish in {} s",
                SERVICE_ENROLL_WAIT.as_secs()
            )
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            bail!("the service stopped, or its stream ended, before the enrollment finished")
        }
    }
}

/// Sends the enrollment to the running service; `None` when none listens.
fn via_running_service(
    config: &crate::config::Config,
    args: &EnrollArgs,
) -> Result<Option<serde_json::Value>> {
    let Some(path) = config
        .service
        .admin_socket
        .as_deref()
        .filter(|p| p.exists())
    else {
        return Ok(None);
    };
    // A live source that is not the service's camera (another camera, a rehearsal file) is
    // read by this command itself, as when no service runs.
    if let Some(from) = &args.from {
        let status = crate::adminsock::request(path, &crate::adminproto::Request::Status {})?;
        let served = status.as_ref().and_then(|s| s["source"].as_str());
        if !served.is_some_and(|served| same_source(from, served)) {
            return Ok(None);
        }
    }
    let mut bodies = Vec::with_capacity(args.images.len());
    for p in &args.images {
        let meta = std::fs::metadata(p).with_context(|| format!("reading {}", p.display()))?;
        anyhow::ensure!(
            meta.len() <= crate::adminproto::MAX_PHOTO_BYTES,
            "{}: {} bytes; photos sent to the running service hold at most {}",
            p.display(),
            meta.len(),
            crate::adminproto::MAX_PHOTO_BYTES
        );
        bodies.push(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?);
    }
    use clap::ValueEnum;
    let name = |v: &dyn Fn() -> Option<clap::builder::PossibleValue>| {
        v().map(|p| p.get_name().to_owned()).unwrap_or_default()
    };
    let req = crate::adminproto::EnrollRequest {
        subject: args.subject.clone(),
        age: args.consent.age,
        method: name(&|| args.consent.method.to_possible_value()),
        operator: args.consent.operator.clone(),
        guardian_id: args.consent.guardian_id.clone(),
        guardian_relation: Some(name(&|| args.consent.guardian_relation.to_possible_value())),
        source: args.from.clone(),
        samples: u8::try_from(args.samples)
            .ok()
            .filter(|n| (1..=10).contains(n))
            .context("--samples must lie in 1..=10")?,
        photo_bytes: bodies.iter().map(|b| b.len() as u64).collect(),
        photo_names: args
            .images
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        face: args.face.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        largest: args.largest,
        id_photo: args.id_photo,
        allow_duplicate_of: args.allow_duplicate_of.clone(),
        reason: args.reason.clone(),
    };
    if args.from.is_some() {
        eprintln!(
            "enrolling at the running service: look at its camera; the count-down and prompts are on its screen (events stream)"
        );
    }
    crate::adminsock::request_with(
        path,
        &crate::adminproto::Request::Enroll(Box::new(req)),
        &bodies,
        SERVICE_ENROLL_WAIT + Duration::from_secs(5),
    )
}

fn print_enrolled(
    json_out: bool,
    subject: &SubjectId,
    template: &serde_json::Value,
    samples: usize,
    expires_at: &serde_json::Value,
    pretty_expiry: String,
    how: &str,
) {
    if json_out {
        println!(
            "{}",
            json!({ "subject": subject, "template": template, "samples": samples, "expires_at": expires_at })
        );
    } else {
        println!(
            "enrolled {subject} as template {} from {samples} sample(s){how}; expires at {pretty_expiry} (retention)",
            template
                .as_str()
                .map_or_else(|| template.to_string(), str::to_owned),
        );
    }
}

pub fn enroll(cli: &Cli, args: &EnrollArgs) -> Result<ExitCode> {
    let subject = SubjectId::new(args.subject.clone())?;
    // While the service runs it owns the camera and the store: enroll through it.
    let config = crate::config::Config::load(cli.config.as_deref())?;
    if let Some(reply) = via_running_service(&config, args)? {
        let expires = reply["expires_at"].as_i64().map(facegate_types::UnixMillis);
        print_enrolled(
            args.json,
            &subject,
            &reply["template"],
            reply["samples"].as_u64().unwrap_or(0) as usize,
            &reply["expires_at"],
            expires.map_or_else(|| "?".into(), crate::output::date),
            " through the running service",
        );
        return Ok(ExitCode::SUCCESS);
    }
    drop(config);
    let live = args.from.is_some();
    let mut loaded = super::load(cli, |v| v.liveness = live)?;
    let mut store = open_store(cli, &loaded.config)?;
    let now = SystemClock.now();
    let consent = loaded
        .config
        .policy
        .grant(
            consent_record(&loaded.config.policy, &subject, &args.consent, now),
            now,
        )
        .with_context(|| format!("consent for {subject}"))?;
    let check = EnrollmentCheck {
        threshold: loaded.config.threshold(&loaded.manifest)?,
        allow_duplicate_of: duplicate_override(
            args.allow_duplicate_of.as_ref(),
            args.reason.as_ref(),
        )?,
    };
    let choice = face_choice(args.face, args.largest);
    let samples = match &args.from {
        Some(source) => live_samples(
            &mut loaded.pipeline,
            source,
            args.samples,
            loaded.config.max_pixels,
            &loaded.config.liveness,
        )?,
        None => {
            let mut v = Vec::with_capacity(args.images.len());
            for path in &args.images {
                let frame = super::read_image(path, loaded.config.max_pixels)?;
                v.push(enrollment_sample(
                    &mut loaded.pipeline,
                    &frame,
                    &path.display().to_string(),
                    choice,
                    args.id_photo,
                )?);
            }
            v
        }
    };
    let names = args
        .images
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let template = store_enrollment(
        &mut store,
        &consent,
        &samples,
        loaded.pipeline.model_id(),
        &check,
        &sample_namer(names),
    )?;
    // Art. 15: the operator who enrolls is the one to tell when filing is near or due.
    match store.check_filing() {
        Ok((stored, status)) if status.is_alert() => {
            eprintln!("facegate: warning: {}", status.describe(stored));
        }
        Ok(_) => {}
        Err(e) => eprintln!(
            "facegate: warning: the filing status could not be read: {}",
            ErrorChain(&e)
        ),
    }
    drop(store);
    // A running service matches against its own gallery: have it reload.
    let reload = crate::adminproto::Request::ReloadGallery {
        model_id: Some(loaded.pipeline.model_id().to_owned()),
        dim: Some(loaded.pipeline.embedding_dim() as u64),
    };
    if let Some(reply) = super::store::via_service(&loaded.config, reload)? {
        tracing::info!(loaded = %reply["loaded"], "running service reloaded its gallery");
    }
    print_enrolled(
        args.json,
        &subject,
        &json!(template),
        samples.len(),
        &json!(consent.expires_at()),
        crate::output::date(consent.expires_at()),
        "",
    );
    Ok(ExitCode::SUCCESS)
}
