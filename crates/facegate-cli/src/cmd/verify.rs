//! `facegate verify` (1:1) and `facegate identify` (1:N) on an image. They are recorded in the
//! audit chain here, since only here the decision is known.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use facegate_policy::{
    IdentifyOutcome, VerifyOutcome, identification_outcome, verification_outcome,
};
use facegate_store::{AuditEvent, SearchMode, Store};
use facegate_types::{Embedding, ErrorChain, SubjectId};
use serde_json::json;

use super::store::open_store;
use crate::cli::{Cli, IdentifyArgs, VerifyArgs};

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
    let (loaded, mut store, e, _) = probe(cli, &args.image)?;
    let margin = loaded.config.policy.matching().margin();
    let gallery = store.gallery().context("gallery not loaded")?;
    let threshold = loaded
        .config
        .identification_threshold(&loaded.manifest, gallery.len())?;
    let result = gallery.identify(&e, 5, SearchMode::Auto)?;
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
