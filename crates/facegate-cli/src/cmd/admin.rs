//! Operator commands on the store: keygen, enroll, consent, subjects, and 1:1 / 1:N on images.
//! Every write goes through a policy-checked consent and is recorded in the audit chain by the
//! store; verify and identify are recorded here, since only here the decision is known.

use facegate_types::ErrorChain;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use facegate_policy::{
    ConsentRecord, Guardian, IdentifyOutcome, VerifyOutcome, identification_outcome,
    verification_outcome,
};
use facegate_store::{
    AuditEvent, DuplicateOverride, EnrollmentCheck, MasterKey, SearchMode, Store, StoreError,
};
use facegate_types::{Clock, Embedding, SubjectId, SystemClock, UnixMillis};
use facegate_vision::{FaceGeometryLimits, Pipeline};
use serde_json::json;

use crate::cli::{
    Cli, ConsentArgs, ConsentCommand, EnrollArgs, IdentifyArgs, KeygenArgs, SubjectsCommand,
    VerifyArgs,
};
use crate::config::Config;

/// Opens the store named by the config and the command line, and deletes whatever has expired
/// (retention, Art. 8) before anything else reads it.
pub fn open_store(cli: &Cli, config: &Config) -> Result<Store> {
    let source = config.key_source(cli.key_file.as_deref())?;
    let key = MasterKey::load(&source).context("loading the master key")?;
    let dir = config.state_dir(cli.state_dir.as_deref());
    let mut store = Store::open(&dir, &key, Arc::new(SystemClock), &config.policy)
        .with_context(|| format!("opening the store in {}", dir.display()))?;
    if !store.is_read_only() {
        let swept = store.sweep_expired().context("retention sweep")?;
        if swept.templates_deleted > 0 {
            tracing::info!(
                templates = swept.templates_deleted,
                subjects = swept.subjects_affected,
                "expired templates deleted"
            );
        }
    }
    Ok(store)
}

pub fn rotate_key(cli: &Cli, new_key_file: &Path, operator: &str) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    let mut store = open_store(cli, &config)?;
    let new_key = MasterKey::load(&facegate_store::KeySource::File(new_key_file.to_path_buf()))
        .context("loading the new master key")?;
    let r = store.rotate_master_key(&new_key, operator)?;
    println!(
        "master key rotated from {} to {}: {} data key(s) re-wrapped, nobody re-enrolled; point the service at the new key and destroy the old one",
        r.old_key_id, r.new_key_id, r.keys_rewrapped
    );
    Ok(ExitCode::SUCCESS)
}

pub fn sweep(cli: &Cli) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    let source = config.key_source(cli.key_file.as_deref())?;
    let key = MasterKey::load(&source).context("loading the master key")?;
    let dir = config.state_dir(cli.state_dir.as_deref());
    let mut store = Store::open(&dir, &key, Arc::new(SystemClock), &config.policy)?;
    let r = store.sweep_expired()?;
    println!(
        "retention sweep: {} template(s) of {} subject(s) deleted, {} key(s) destroyed, {} expiry date(s) shortened",
        r.templates_deleted, r.subjects_affected, r.keys_destroyed, r.expiries_shortened
    );
    Ok(ExitCode::SUCCESS)
}

fn consent_record(
    config: &Config,
    subject: &SubjectId,
    a: &ConsentArgs,
    now: UnixMillis,
) -> ConsentRecord {
    ConsentRecord {
        subject: subject.clone(),
        age_years: a.age,
        purpose: config.policy.purpose(),
        notice_version: config.policy.notice().version(),
        method: a.method.into(),
        operator: a.operator.clone(),
        guardian: a.guardian_id.as_ref().map(|id| Guardian {
            identity: id.clone(),
            relation: a.guardian_relation.into(),
        }),
        granted_at: now,
    }
}

pub fn cameras(args: &crate::cli::JsonArg) -> Result<ExitCode> {
    let list = facegate_capture::list_cameras()?;
    if args.json {
        let v: Vec<_> = list
            .iter()
            .map(|c| json!({ "index": c.index, "name": c.name, "path": c.path }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if list.is_empty() {
        println!("no V4L2 camera found");
    } else {
        for c in &list {
            println!("camera:{}  {}  {}", c.index, c.path.display(), c.name);
        }
    }
    Ok(if list.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Samples from a live source: a 3-2-1 count-down on the terminal, then frames with exactly one
/// face that passes quality, liveness (the configured threshold; the liveness model is required)
/// and the whole-face check, each shown as it is judged. Gives up after 30 s or 900 frames.
fn live_samples(
    pipeline: &mut Pipeline,
    source: &str,
    want: usize,
    max_pixels: u64,
    liveness_threshold: f32,
) -> Result<Vec<Embedding>> {
    use facegate_capture::{CaptureOptions, SourceSpec};
    use facegate_vision::AnalyseOptions;
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
    let opts = AnalyseOptions {
        embed: true,
        liveness: true,
        max_faces: 2,
    };
    let limits = FaceGeometryLimits::default();
    let start = std::time::Instant::now();
    let mut faces = Vec::new();
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
        pipeline.analyse(&frame, opts, &mut faces)?;
        let status = match faces.as_slice() {
            [] => "no face".to_string(),
            [f] => match live_sample_verdict(f, liveness_threshold) {
                Err(why) => why,
                Ok(()) => match pipeline.check_whole_face(&frame, f, &limits)? {
                    Err(why) => format!("not a whole face: {why}"),
                    Ok(()) => {
                        if let Some(e) = f.embedding.clone() {
                            samples.push(e);
                        }
                        format!("sample {}/{want} taken", samples.len())
                    }
                },
            },
            _ => "more than one face: only the person enrolling, please".to_string(),
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

/// Whether a face seen on a live source may become an enrollment sample: it passes quality and
/// the liveness model scored it live at `liveness_threshold` or above (no score is no pass).
/// The error is what the person is told.
fn live_sample_verdict(
    face: &facegate_vision::FaceAnalysis,
    liveness_threshold: f32,
) -> std::result::Result<(), String> {
    if !face.quality.passes() {
        return Err(format!(
            "hold still, face the camera ({:?})",
            face.quality.issues
        ));
    }
    match face.liveness {
        Some(p) if p.is_finite() && p >= liveness_threshold => Ok(()),
        _ => Err("not accepted as a live face".to_string()),
    }
}

pub fn keygen(args: &KeygenArgs) -> Result<ExitCode> {
    let id = facegate_store::generate_key_file(&args.path)
        .with_context(|| format!("creating key file {}", args.path.display()))?;
    println!(
        "new master key {} written to {} (mode 0600)",
        id,
        args.path.display()
    );
    println!(
        "for the service: systemd-creds encrypt --name=facegate-master-key {} /etc/credstore.encrypted/facegate-master-key",
        args.path.display()
    );
    Ok(ExitCode::SUCCESS)
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
) -> Result<Embedding> {
    use facegate_vision::AnalyseOptions;
    let frame = super::read_image(path, max_pixels)?;
    let mut faces = Vec::new();
    let opts = AnalyseOptions {
        embed: true,
        liveness: false,
        max_faces: 64,
    };
    pipeline
        .analyse(&frame, opts, &mut faces)
        .with_context(|| format!("{}: analysing the faces", path.display()))?;
    let n = faces.len();
    let face = match (choice, n) {
        (_, 0) => bail!("{}: no face found; take another photo", path.display()),
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
        .check_whole_face(&frame, &face, &FaceGeometryLimits::default())
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
            loaded.config.service.liveness_threshold,
        )?,
        None => {
            let mut v = Vec::with_capacity(args.images.len());
            for path in &args.images {
                v.push(enrollment_sample(
                    &mut loaded.pipeline,
                    path,
                    loaded.config.max_pixels,
                    choice,
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

pub fn consent(cli: &Cli, cmd: &ConsentCommand) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    if let ConsentCommand::Withdraw { subject, .. } = cmd
        && let Some(reply) = via_service(&config, json!({ "op": "withdraw", "subject": subject }))?
    {
        println!(
            "consent of {subject} withdrawn through the running service: {} template(s) deleted",
            reply["templates_deleted"]
        );
        if reply["residue_cleared"] == false {
            anyhow::bail!(
                "the rows are deleted and unreadable, but their old pages are still in the \
                 database file because another process keeps an old read transaction open; the \
                 service overwrites them as soon as it ends (it retries in the background)"
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut store = open_store(cli, &config)?;
    let now = SystemClock.now();
    match cmd {
        ConsentCommand::Grant { subject, consent } => {
            let subject = SubjectId::new(subject.clone())?;
            let c = config
                .policy
                .grant(consent_record(&config, &subject, consent, now), now)
                .with_context(|| format!("consent for {subject}"))?;
            let id = store.record_consent(&c)?;
            println!(
                "consent {} recorded for {subject} (notice version {}), expires at {}",
                id.0,
                c.record().notice_version,
                crate::output::date(c.expires_at())
            );
        }
        ConsentCommand::Withdraw {
            subject,
            operator,
            method: m,
        } => {
            let subject = SubjectId::new(subject.clone())?;
            let live = store
                .live_consent(&subject)?
                .with_context(|| format!("{subject} has no live consent to withdraw"))?;
            let report = store.withdraw(&live.withdraw(now, operator.clone(), (*m).into()))?;
            println!(
                "consent of {subject} withdrawn: {} template(s) deleted, data key {}",
                report.templates_deleted,
                if report.key_destroyed {
                    "destroyed"
                } else {
                    "absent"
                }
            );
            residue_gone(&store, report)?;
        }
        ConsentCommand::Pending(a) => {
            let pending = store.pending_notice()?;
            let current = config.policy.notice().version();
            let meanwhile = config.policy.notice().pending().describe();
            if a.json {
                let rows: Vec<_> = pending
                    .iter()
                    .map(|(s, v)| json!({ "subject": s, "notice_version": v }))
                    .collect();
                println!(
                    "{}",
                    json!({ "current_notice_version": current, "pending": rows, "meanwhile": meanwhile })
                );
            } else {
                for (s, v) in &pending {
                    println!("{s}  consented under notice version {v}");
                }
                println!(
                    "{} person(s) to inform of notice version {current}; meanwhile: {meanwhile}",
                    pending.len()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A withdrawal or deletion is reported done only when the freed pages are gone from the
/// database file and its WAL; a reader holding an old snapshot gets 30 s, then this fails
/// naming what remains (the store retries on its own once the reader ends).
fn residue_gone(store: &Store, report: facegate_store::RemovalReport) -> Result<()> {
    if !report.copies_sealed {
        eprintln!(
            "facegate: warning: the data keys could not be moved to a new epoch; copies of the \
             database made before keep this person's key until the next withdrawal"
        );
    }
    if report.residue_cleared || store.clear_residue(std::time::Duration::from_secs(30)) {
        return Ok(());
    }
    anyhow::bail!(
        "the rows are deleted and unreadable, but their old pages are still in {} because another \
         process keeps an old read transaction open; they are overwritten as soon as it ends \
         (stop that process, or run `facegate sweep` later)",
        store.file().display()
    )
}

/// The running service's answer to `req` over its admin socket, or `None` when none runs.
pub fn via_service(config: &Config, req: serde_json::Value) -> Result<Option<serde_json::Value>> {
    match &config.service.admin_socket {
        Some(path) if path.exists() => crate::adminsock::request(path, &req),
        _ => Ok(None),
    }
}

pub fn subjects(cli: &Cli, cmd: &SubjectsCommand) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    // While the service runs it owns the store (and its gallery): go through its admin socket.
    let req = match cmd {
        SubjectsCommand::List(_) => Some(json!({ "op": "subjects" })),
        SubjectsCommand::Delete {
            subject, reason, ..
        } => Some(json!({ "op": "delete", "subject": subject, "reason": reason })),
        SubjectsCommand::Show { .. } => None,
    };
    if let Some(req) = req
        && let Some(reply) = via_service(&config, req)?
    {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut store = open_store(cli, &config)?;
    match cmd {
        SubjectsCommand::List(a) => {
            let list = store.list_subjects()?;
            if a.json {
                let v: Vec<_> = list.iter().map(|s| json!({
                    "subject": s.subject, "age_years": s.age_years, "created_at": s.created_at, "templates": s.templates,
                    "consent_expires_at": s.consent_expires_at, "withdrawn_at": s.withdrawn_at,
                })).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<24} {:>9} {:>22} state",
                    "subject", "templates", "consent expires"
                );
                for s in &list {
                    let state = if s.withdrawn_at.is_some() {
                        "withdrawn"
                    } else if s.templates > 0 {
                        "enrolled"
                    } else {
                        "consent only"
                    };
                    println!(
                        "{:<24} {:>9} {:>22} {state}",
                        s.subject.as_str(),
                        s.templates,
                        s.consent_expires_at.map_or("-".into(), crate::output::date)
                    );
                }
                println!("{} subject(s)", list.len());
            }
        }
        SubjectsCommand::Show {
            subject,
            json: as_json,
        } => {
            let id = SubjectId::new(subject.clone())?;
            let d = store
                .subject(&id)?
                .with_context(|| format!("no subject {id}"))?;
            let consents: Vec<_> = d.consents.iter().map(|c| json!({
                "id": c.id.0, "granted_at": c.record.granted_at, "method": c.record.method, "operator": c.record.operator,
                "notice_version": c.record.notice_version, "guardian": c.record.guardian.is_some(), "expires_at": c.expires_at, "withdrawn_at": c.withdrawn_at,
            })).collect();
            let templates: Vec<_> = d.templates.iter().map(|t| json!({
                "template": t.template, "model_id": t.model_id, "created_at": t.created_at, "expires_at": t.expires_at,
            })).collect();
            let v = json!({ "subject": id, "age_years": d.summary.age_years, "consents": consents, "templates": templates });
            if *as_json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{id}: age {}, {} consent(s), {} template(s)",
                    d.summary.age_years,
                    d.consents.len(),
                    d.templates.len()
                );
                for c in &d.consents {
                    println!(
                        "  consent {} granted {} by {} ({:?}, notice v{}), expires {}{}",
                        c.id.0,
                        crate::output::date(c.record.granted_at),
                        c.record.operator,
                        c.record.method,
                        c.record.notice_version,
                        crate::output::date(c.expires_at),
                        c.withdrawn_at.map_or(String::new(), |w| format!(
                            ", withdrawn {}",
                            crate::output::date(w)
                        ))
                    );
                }
                for t in &d.templates {
                    println!(
                        "  template {} ({}) created {}, expires {}",
                        t.template,
                        t.model_id,
                        crate::output::date(t.created_at),
                        crate::output::date(t.expires_at)
                    );
                }
            }
        }
        SubjectsCommand::Delete {
            subject,
            operator,
            reason,
        } => {
            let id = SubjectId::new(subject.clone())?;
            let r = store.delete_subject(&id, operator, reason)?;
            println!(
                "deleted {id}: {} template(s), data key {}",
                r.templates_deleted,
                if r.key_destroyed {
                    "destroyed"
                } else {
                    "absent"
                }
            );
            residue_gone(&store, r)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads the pipeline, the store and its gallery, and embeds the largest face of `image`.
fn probe(cli: &Cli, image: &Path) -> Result<(super::Loaded, Store, Embedding, f32)> {
    let mut loaded = super::load(cli, |v| v.liveness = false)?;
    let threshold = loaded.config.threshold(&loaded.manifest)?;
    let mut store = open_store(cli, &loaded.config)?;
    let report = store.load_gallery(loaded.pipeline.model_id(), loaded.pipeline.embedding_dim())?;
    for f in &report.failures {
        eprintln!("facegate: warning: {}", ErrorChain(f));
    }
    let frame = super::read_image(image, loaded.config.max_pixels)?;
    let e = super::embed_largest(&mut loaded.pipeline, &frame, &image.display().to_string())?;
    Ok((loaded, store, e, threshold))
}

pub fn verify(cli: &Cli, args: &VerifyArgs) -> Result<ExitCode> {
    let subject = SubjectId::new(args.subject.clone())?;
    let (_loaded, mut store, e, threshold) = probe(cli, &args.image)?;
    let live = store.live_consent(&subject)?.is_some();
    let score = store
        .gallery()
        .context("gallery not loaded")?
        .verify(&subject, &e)?;
    let accepted =
        live && score.is_some_and(|s| verification_outcome(s, threshold) == VerifyOutcome::Accept);
    store.record(AuditEvent::verification(
        &subject,
        score,
        accepted,
        args.operator.clone(),
    ))?;
    if args.json {
        println!(
            "{}",
            json!({ "subject": subject, "similarity": score, "threshold": threshold, "live_consent": live, "accepted": accepted })
        );
    } else {
        let why = if !live {
            " (no live consent)"
        } else if score.is_none() {
            " (no template)"
        } else {
            ""
        };
        println!(
            "verification of {subject}: similarity {}, threshold {threshold:.4}: {}{why}",
            score.map_or("-".into(), |s| format!("{s:.4}")),
            if accepted { "ACCEPT" } else { "REJECT" }
        );
    }
    Ok(if accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn identify(cli: &Cli, args: &IdentifyArgs) -> Result<ExitCode> {
    let (loaded, mut store, e, threshold) = probe(cli, &args.image)?;
    let margin = loaded.config.policy.matching().margin();
    let result =
        store
            .gallery()
            .context("gallery not loaded")?
            .identify(&e, 5, SearchMode::Auto)?;
    let best = result.hits.first().cloned();
    let outcome = best
        .as_ref()
        .map(|b| identification_outcome(b.score, result.second_identity_score, threshold, margin));
    let mut accepted = None;
    if let (Some(b), Some(IdentifyOutcome::Match)) = (&best, &outcome)
        && store.live_consent(&b.subject)?.is_some()
    {
        accepted = Some(b.subject.clone());
    }
    store.record(AuditEvent::identification(
        &result,
        accepted.as_ref(),
        args.operator.clone(),
    ))?;
    if args.json {
        println!(
            "{}",
            json!({
                "subject": accepted, "best": best.as_ref().map(|b| json!({ "subject": b.subject, "similarity": b.score })),
                "second_identity_similarity": result.second_identity_score, "threshold": threshold, "margin": margin,
                "gallery_size": result.scanned,
            })
        );
    } else {
        match (&accepted, &best) {
            (Some(s), Some(b)) => println!(
                "identified {s} (similarity {:.4}, threshold {threshold:.4})",
                b.score
            ),
            (None, Some(b)) => println!(
                "unknown: best candidate {} at {:.4} ({:?}); threshold {threshold:.4}, margin {margin}",
                b.subject, b.score, outcome
            ),
            _ => println!("unknown: the gallery is empty"),
        }
    }
    Ok(if accepted.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use facegate_types::BBox;
    use facegate_vision::{Detection, FaceAnalysis, QualityIssue, QualityReport};

    use super::*;

    fn face(liveness: Option<f32>, issues: Vec<QualityIssue>) -> FaceAnalysis {
        FaceAnalysis {
            detection: Detection {
                bbox: BBox::new(10.0, 10.0, 110.0, 130.0),
                score: 0.99,
            },
            landmarks: facegate_types::Landmarks5::default(),
            quality: QualityReport {
                face_px: 100.0,
                sharpness: 100.0,
                brightness: 120.0,
                clipped: 0.0,
                yaw_deg: 0.0,
                pitch_deg: 0.0,
                roll_deg: 0.0,
                issues,
            },
            liveness,
            embedding: None,
        }
    }

    #[test]
    fn a_live_sample_needs_a_liveness_score_at_the_threshold() {
        let t = facegate_engine::DEFAULT_LIVENESS_THRESHOLD;
        assert!(live_sample_verdict(&face(Some(0.97), vec![]), t).is_ok());
        assert!(live_sample_verdict(&face(Some(t), vec![]), t).is_ok());
        for p in [Some(0.01), Some(t - 1e-3), Some(f32::NAN), None] {
            let err = live_sample_verdict(&face(p, vec![]), t).unwrap_err();
            assert!(err.contains("not accepted as a live face"), "{err}");
        }
        // A stricter configured threshold is the one applied.
        assert!(live_sample_verdict(&face(Some(0.6), vec![]), 0.9).is_err());
        let err =
            live_sample_verdict(&face(Some(0.99), vec![QualityIssue::Blurred]), t).unwrap_err();
        assert!(err.contains("hold still"), "{err}");
    }
}
