//! `facegate compare A B`: 1:1 verification of the largest face of each image.

use std::process::ExitCode;

use anyhow::Result;
use facegate_policy::{VerifyOutcome, verification_outcome};
use serde_json::json;

use crate::cli::{Cli, CompareArgs};

pub fn run(cli: &Cli, args: &CompareArgs) -> Result<ExitCode> {
    let mut loaded = super::load(cli, |_| {})?;
    let threshold = loaded.config.threshold(&loaded.manifest)?;
    let max = loaded.config.max_pixels;
    let a = super::read_image(&args.a, max)?;
    let b = super::read_image(&args.b, max)?;
    let ea = super::embed_largest(&mut loaded.pipeline, &a, &args.a.display().to_string())?;
    let eb = super::embed_largest(&mut loaded.pipeline, &b, &args.b.display().to_string())?;
    let similarity = ea.cosine(&eb);
    let outcome = verification_outcome(similarity, threshold);
    let same = outcome == VerifyOutcome::Accept;
    let fmr = loaded.config.policy.matching().fmr();
    if args.json {
        println!(
            "{}",
            json!({ "similarity": similarity, "threshold": threshold, "fmr": fmr, "same_person": same })
        );
    } else {
        println!(
            "similarity {similarity:.4}, threshold {threshold:.4}{}: {}",
            fmr.map_or(String::new(), |f| format!(" (FMR {f:e})")),
            if same {
                "same person"
            } else {
                "different people"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
