//! `facegate eval calibration-inputs` (hidden): the model inputs of calibration images, made
//! by this pipeline (detect, landmarks, align, normalise), as raw little-endian f32 on stdout
//! for the int8 quantiser (`deploy/quantise.py calibrate`) to read into memory. Face data: the
//! command refuses unless stdout is a pipe, so it never lands in a file.

use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use facegate_vision::eval as metrics;
use facegate_vision::{AnalyseOptions, StageTimings};

use crate::cli::{CalibrationInputsArgs, CalibrationRole, Cli};

/// Most images one run may stream (the quantiser keeps them all in memory).
const MAX_IMAGES: usize = 2000;

pub fn run(cli: &Cli, args: &CalibrationInputsArgs) -> Result<ExitCode> {
    stdout_is_a_pipe()?;
    anyhow::ensure!(
        (1..=MAX_IMAGES).contains(&args.limit),
        "--limit must lie in 1..={MAX_IMAGES}, not {}",
        args.limit
    );
    if !args.pairs.exists() {
        bail!(
            "LFW pair list not found at {} (the evaluation data lives in ../shared/eval)",
            args.pairs.display()
        );
    }
    let images = args
        .images
        .clone()
        .unwrap_or_else(|| args.pairs.with_file_name("images"));
    let pairs = metrics::parse_lfw_pairs(&args.pairs, &images)?;
    let mut paths: Vec<_> = pairs
        .iter()
        .flat_map(|p| [p.a.clone(), p.b.clone()])
        .collect();
    paths.sort();
    paths.dedup();
    // Spread over the whole (sorted) list rather than its first names.
    let step = (paths.len() / args.limit).max(1);
    let chosen: Vec<_> = paths.iter().step_by(step).take(args.limit).collect();
    let mut loaded = super::load(cli, |v| v.liveness = false)?;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    let (mut written, mut no_face) = (0usize, 0usize);
    for path in chosen {
        let frame = super::read_image(path, loaded.config.max_pixels)?;
        let p = &mut loaded.pipeline;
        let wrote = match args.role {
            CalibrationRole::Detector => {
                p.detect(&frame)
                    .with_context(|| format!("detecting in {}", path.display()))?;
                write_f32(&mut out, p.detector_input())?;
                true
            }
            CalibrationRole::Embedder => {
                let look = AnalyseOptions {
                    embed: false,
                    liveness: false,
                    max_faces: 16,
                };
                let mut faces = Vec::new();
                let photo = p
                    .analyse_photo(&frame, look, &mut faces)
                    .with_context(|| format!("looking at {}", path.display()))?;
                let photo = photo.frame.into_owned();
                // The face the image is about, as `eval lfw` picks it.
                let pick = super::eval::centre_pick(&faces, &photo).map(|f| f.detection);
                match pick {
                    None => false,
                    Some(det) => {
                        let mut t = StageTimings::default();
                        let face = p
                            .prepare(&photo, det, &mut t)
                            .with_context(|| format!("aligning {}", path.display()))?;
                        let input = p
                            .prepared_input(&face)
                            .context("the aligned crop was replaced")?;
                        write_f32(&mut out, input)?;
                        true
                    }
                }
            }
        };
        if wrote {
            written += 1;
        } else {
            no_face += 1;
        }
    }
    out.flush().context("writing to the quantiser's pipe")?;
    tracing::info!(written, no_face, "calibration inputs written");
    eprintln!("calibration inputs: {written} written, {no_face} images without a face");
    Ok(ExitCode::SUCCESS)
}

fn write_f32(out: &mut impl Write, values: &[f32]) -> Result<()> {
    for v in values {
        out.write_all(&v.to_le_bytes())
            .context("writing to the quantiser's pipe")?;
    }
    Ok(())
}

/// Face data goes to a pipe (the quantiser's memory) and nowhere else.
fn stdout_is_a_pipe() -> Result<()> {
    let meta = std::fs::metadata("/proc/self/fd/1")
        .context("cannot tell what stdout is (/proc/self/fd/1)")?;
    if !meta.file_type().is_fifo() {
        bail!(
            "stdout is not a pipe: calibration inputs are face data and go only to the quantiser \
             (deploy/quantise.py calibrate reads them into memory), never to a file or terminal"
        );
    }
    Ok(())
}
