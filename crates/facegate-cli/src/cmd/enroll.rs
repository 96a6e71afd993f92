//! `facegate enroll`: samples from photos (one whole, good face each) or a live source (count-down,
//! quality, liveness), the consent, and the store's enrollment checks.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use facegate_store::{DuplicateOverride, EnrollmentCheck, StoreError};
use facegate_types::{Clock, Embedding, ErrorChain, SubjectId, SystemClock};
use facegate_vision::{FaceGeometryLimits, Pipeline};
use serde_json::json;

use super::consent::consent_record;
use super::store::{open_store, via_service};
use crate::cli::{Cli, EnrollArgs};

/// Samples from a live source: a 3-2-1 count-down on the terminal, then the liveness session
/// the gate runs (motion cues, passive model, and the challenge's prompts when the configured
/// mode asks for it), and only once the face is found live, frames with exactly one face that
/// passes quality and the whole-face check, each shown as it is judged. The session keeps
/// watching while samples are taken (a spoof found later refuses the enrollment). Gives up
/// after 30 s or 900 frames.
fn live_samples(
    pipeline: &mut Pipeline,
    source: &str,
    want: usize,
    max_pixels: u64,
    liveness: &facegate_vision::LivenessConfig,
) -> Result<Vec<Embedding>> {
    use facegate_capture::{CaptureOptions, SourceSpec};
    use facegate_vision::{LiveStatus, LivenessSession, StageTimings};
    anyhow::ensure!((1..=10).contains(&want), "--samples must lie in 1..=10");
    anyhow::ensure!(
        pipeline.has_liveness(),
        "enrollment from a live source needs the liveness model, and it is not loaded"
    );
    let spec = SourceSpec::parse(source).with_context(|| format!("source {source}"))?;
    let mut src = facegate_capture::open(
        &spec,
        &CaptureOptions::default().with_max_pixels(max_pixels),
    )?;
    for n in (1..=3).rev() {
        eprint!("\rlook at the camera: {n}  ");
        std::thread::sleep(std::time::Duration::from_millis(700));
    }
    eprintln!("\rlook at the camera: now");
    let limits = FaceGeometryLimits::default();
    let start = std::time::Instant::now();
    let mut session = LivenessSession::new(liveness.clone());
    let mut rng: rand::rngs::StdRng = rand::make_rng();
    let mut samples = Vec::new();
    let mut frames = 0usize;
    while samples.len() < want
        && frames < 900
        && start.elapsed() < std::time::Duration::from_secs(30)
    {
        let frame = match src.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) if e.is_frame_error() => continue,
            Err(e) => return Err(e.into()),
        };
        frames += 1;
        let dets: Vec<_> = pipeline.detect(&frame)?.iter().take(2).copied().collect();
        let [det] = dets.as_slice() else {
            let status = if dets.is_empty() {
                "no face"
            } else {
                "more than one face: only the person enrolling, please"
            };
            eprint!("\r{status:<70}");
            continue;
        };
        let mut t = StageTimings::default();
        let face = pipeline.prepare(&frame, *det, &mut t)?;
        if frames.is_multiple_of(2) {
            let p = pipeline.passive_liveness(&frame, &face, &mut t)?;
            session.passive_score(frame.timestamp, p.unwrap_or(0.0));
        }
        let status = match session.push(face.sample.clone(), &mut rng) {
            LiveStatus::Spoof(why) => {
                eprintln!();
                anyhow::bail!(
                    "not accepted as a live face ({}); enrollment from {source} refused",
                    why.as_str()
                );
            }
            LiveStatus::Observing => "hold still, looking at the camera".to_string(),
            LiveStatus::Prompt(facegate_vision::ChallengeStatus::Prompt { action, .. }) => {
                action.prompt().to_string()
            }
            LiveStatus::Prompt(_) => "hold still".to_string(),
            LiveStatus::Live if !face.quality.passes() => {
                format!("hold still, face the camera ({:?})", face.quality.issues)
            }
            LiveStatus::Live => {
                let analysis = facegate_vision::FaceAnalysis {
                    detection: face.detection,
                    landmarks: face.landmarks,
                    quality: face.quality.clone(),
                    liveness: None,
                    embedding: None,
                };
                match pipeline.check_whole_face(&frame, &analysis, &limits)? {
                    Err(why) => format!("not a whole face: {why}"),
                    Ok(()) => {
                        samples.push(pipeline.embed_prepared(&frame, &face, &mut t)?);
                        format!("sample {}/{want} taken", samples.len())
                    }
                }
            }
        };
        eprint!("\r{status:<70}");
    }
    eprintln!();
    anyhow::ensure!(
        samples.len() == want,
        "only {} of {want} good, live samples from {source} in {frames} frames; try again in better light",
        samples.len()
    );
    Ok(samples)
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
    path: &Path,
    max_pixels: u64,
    choice: FaceChoice,
    id_photo: bool,
) -> Result<Embedding> {
    use facegate_vision::AnalyseOptions;
    let frame = super::read_image(path, max_pixels)?;
    let mut faces = Vec::new();
    let opts = AnalyseOptions {
        embed: true,
        liveness: false,
        max_faces: 64,
    };
    // An ID photo: with a margin and the fallback detector when the face fills the picture;
    // the faces' coordinates are in `photo.frame`. Otherwise the photo as it is, as before.
    let photo = if id_photo {
        pipeline.analyse_photo(&frame, opts, &mut faces)
    } else {
        pipeline.analyse_direct(&frame, opts, &mut faces)
    }
    .with_context(|| format!("{}: analysing the faces", path.display()))?;
    let n = faces.len();
    let face = match (choice, n) {
        (_, 0) => bail!(
            "{}: no face found; take another photo{}",
            path.display(),
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
            path.display()
        ),
        (FaceChoice::Nth(i), _) if (1..=n).contains(&i) => faces.swap_remove(i - 1),
        (FaceChoice::Nth(i), _) => bail!(
            "{}: --face {i}, but {n} face(s) found (1..={n})",
            path.display()
        ),
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
            path.display(),
            issues.join(", ")
        );
    }
    if let Err(why) = pipeline
        .check_photo_face(&photo, &face, &FaceGeometryLimits::default())
        .with_context(|| format!("{}: checking the face", path.display()))?
    {
        bail!(
            "{}: not a whole face: {why}; take a photo of the whole face",
            path.display()
        );
    }
    face.embedding
        .with_context(|| format!("{}: no embedding", path.display()))
}

pub fn enroll(cli: &Cli, args: &EnrollArgs) -> Result<ExitCode> {
    let subject = SubjectId::new(args.subject.clone())?;
    let live = args.from.is_some();
    let mut loaded = super::load(cli, |v| v.liveness = live)?;
    let mut store = open_store(cli, &loaded.config)?;
    let now = SystemClock.now();
    let consent = loaded
        .config
        .policy
        .grant(
            consent_record(&loaded.config, &subject, &args.consent, now),
            now,
        )
        .with_context(|| format!("consent for {subject}"))?;
    let threshold = loaded.config.threshold(&loaded.manifest)?;
    let allow_duplicate_of = match (&args.allow_duplicate_of, &args.reason) {
        (Some(other), Some(reason)) => {
            anyhow::ensure!(
                !reason.trim().is_empty(),
                "--reason must say why the duplicate of {other} is allowed"
            );
            Some(DuplicateOverride {
                subject: SubjectId::new(other.clone())
                    .with_context(|| format!("--allow-duplicate-of {other}"))?,
                reason: reason.clone(),
            })
        }
        _ => None,
    };
    let choice = match (args.face, args.largest) {
        (Some(n), _) => FaceChoice::Nth(n),
        (None, true) => FaceChoice::Largest,
        (None, false) => FaceChoice::Only,
    };
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
                v.push(enrollment_sample(
                    &mut loaded.pipeline,
                    path,
                    loaded.config.max_pixels,
                    choice,
                    args.id_photo,
                )?);
            }
            v
        }
    };
    // The samples are checked against each other and the gallery first; then one transaction:
    // the consent, the subject, its data key and the sealed template (a kill in between leaves
    // neither a consent without template nor the reverse).
    let check = EnrollmentCheck {
        threshold,
        allow_duplicate_of,
    };
    let template = store
        .enroll_checked(&consent, &samples, loaded.pipeline.model_id(), &check)
        .map_err(|e| {
            let named = match &e {
                StoreError::SamplesDisagree { sample, others, .. } => {
                    let name = |i: &usize| match args.images.get(i - 1) {
                        Some(p) => format!("{i} ({})", p.display()),
                        None => format!("{i} (live frame {i})"),
                    };
                    Some(format!(
                        "sample {} disagrees with {}",
                        name(sample),
                        others.iter().map(name).collect::<Vec<_>>().join(", ")
                    ))
                }
                StoreError::DuplicateFace { existing, .. } => Some(format!(
                    "to enroll anyway: --allow-duplicate-of {existing} --reason TEXT"
                )),
                _ => None,
            };
            match named {
                Some(n) => anyhow::Error::new(e).context(n),
                None => anyhow::Error::new(e),
            }
        })?;
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
    let reload = json!({ "op": "reload_gallery", "model_id": loaded.pipeline.model_id(), "dim": loaded.pipeline.embedding_dim() });
    if let Some(reply) = via_service(&loaded.config, reload)? {
        tracing::info!(loaded = %reply["loaded"], "running service reloaded its gallery");
    }
    if args.json {
        println!(
            "{}",
            json!({ "subject": subject, "template": template, "samples": samples.len(), "expires_at": consent.expires_at() })
        );
    } else {
        println!(
            "enrolled {subject} as template {template} from {} sample(s); expires at {} (retention)",
            samples.len(),
            crate::output::date(consent.expires_at())
        );
    }
    Ok(ExitCode::SUCCESS)
}
