//! `facegate verify` (1:1) and `facegate identify` (1:N) on an image. Both decide through the
//! engine's [`Decider`] (the operating point, the consent check and the audit record of the
//! gate, written before the answer is printed), so the command line never decides otherwise
//! than the gate would.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use facegate_engine::{Against, Decider, Method, Outcome};
use facegate_store::Store;
use facegate_types::{Embedding, ErrorChain, SubjectId};
use serde_json::json;

use super::store::open_store;
use crate::cli::{Cli, IdentifyArgs, VerifyArgs};

/// Loads the pipeline, the store and its gallery, embeds the largest face of `image`, and
/// makes the decider of the configured operating point for `operator`.
fn probe(cli: &Cli, image: &Path, operator: &str) -> Result<(Store, Embedding, Decider)> {
    let mut loaded = super::load(cli, |v| v.liveness = false)?;
    let ec = loaded
        .config
        .engine_config(&loaded.manifest, loaded.pipeline.embedding_dim())?;
    let mut store = open_store(cli, &loaded.config)?;
    let report = store.load_gallery(loaded.pipeline.model_id(), loaded.pipeline.embedding_dim())?;
    for f in &report.failures {
        eprintln!("facegate: warning: {}", ErrorChain(f));
    }
    for (other, n) in &report.other_models {
        eprintln!(
            "facegate: warning: {n} templates were made by model {other}, not {}: they are not \
             matched; re-enroll their subjects, or set [vision] precision to the model they were \
             made with",
            loaded.pipeline.model_id()
        );
    }
    let frame = super::read_image(image, loaded.config.max_pixels)?;
    let e = super::embed_largest(&mut loaded.pipeline, &frame, &image.display().to_string())?;
    Ok((store, e, Decider::new(&ec).with_operator(operator)))
}

fn exit(granted: bool) -> ExitCode {
    if granted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub fn verify(cli: &Cli, args: &VerifyArgs) -> Result<ExitCode> {
    let subject = SubjectId::new(args.subject.clone())?;
    let (mut store, e, decider) = probe(cli, &args.image, &args.operator)?;
    let against = Against::Claim {
        subject: &subject,
        method: Method::Face,
    };
    let (d, _) = decider.decide_once(&mut store, &e, against)?;
    let threshold = decider.threshold();
    let accepted = d.outcome == Outcome::Granted;
    if args.json {
        println!(
            "{}",
            json!({ "subject": subject, "similarity": d.score, "threshold": threshold,
                    "decision": d.outcome, "reason": d.reason, "accepted": accepted })
        );
    } else {
        println!(
            "verification of {subject}: similarity {}, threshold {threshold:.4}: {}{}",
            d.score.map_or("-".into(), |s| format!("{s:.4}")),
            if accepted { "ACCEPT" } else { "REJECT" },
            d.reason.map_or(String::new(), |r| format!(" ({r})"))
        );
    }
    Ok(exit(accepted))
}

pub fn identify(cli: &Cli, args: &IdentifyArgs) -> Result<ExitCode> {
    let (mut store, e, decider) = probe(cli, &args.image, &args.operator)?;
    let (d, matched) = decider.decide_once(&mut store, &e, Against::Gallery)?;
    let margin = decider.margin();
    let threshold = matched
        .as_ref()
        .map_or(decider.threshold(), |m| m.threshold);
    let ident = matched.as_ref().and_then(|m| m.identification.as_ref());
    let best = ident.and_then(|i| i.best());
    let accepted = d.outcome == Outcome::Granted;
    if args.json {
        println!(
            "{}",
            json!({
                "subject": if accepted { d.subject.as_ref() } else { None },
                "decision": d.outcome, "reason": d.reason,
                "best": best.map(|b| json!({ "subject": b.subject, "similarity": b.score })),
                "second_identity_similarity": ident.and_then(|i| i.second_identity_score),
                "threshold": threshold, "margin": margin,
                "gallery_size": ident.map_or(0, |i| i.scanned),
            })
        );
    } else {
        match (&d.subject, best) {
            (Some(s), Some(b)) if accepted => println!(
                "identified {s} (similarity {:.4}, threshold {threshold:.4})",
                b.score
            ),
            (_, Some(b)) => println!(
                "{}: best candidate {} at {:.4} ({}); threshold {threshold:.4}, margin {margin}",
                d.outcome.as_str(),
                b.subject,
                b.score,
                d.reason.as_deref().unwrap_or("-")
            ),
            _ => println!("unknown: the gallery is empty"),
        }
    }
    Ok(exit(accepted))
}
