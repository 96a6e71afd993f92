//! `facegate eval flip`: whether flip test-time augmentation (a second embedding of the mirrored
//! crop) changes decisions at the operating point, on LFW and on the live clips.
//!
//! Every image and clip frame goes once through the pipeline with flip on; the embedder also
//! keeps the unmirrored crop's own template ([`Pipeline::keep_plain_embeddings`]), so both
//! variants come from the same detection, landmarks and alignment. Each variant gets its own
//! thresholds, calibrated the way the manifest's table is (every cross-identity pair of the LFW
//! calibration split), and the decisions are compared pair by pair: how many genuine pairs one
//! variant accepts and the other refuses, how many impostors each lets in, and McNemar's exact
//! test on the discordant pairs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use facegate_types::{Embedding, Frame};
use facegate_vision::eval as metrics;
use facegate_vision::footage::LIVE_CLIPS;
use facegate_vision::{AnalyseOptions, Pipeline, StageTimings};
use serde::Serialize;
use serde_json::json;

use super::eval::{Looks, embed_centre_face, impostor_scores, require, test_images};
use crate::cli::{Cli, FlipEvalArgs};
use crate::output::progress;

/// The two templates of one face: the crop alone, and crop + mirror (the flip TTA template).
struct Both {
    plain: Embedding,
    flip: Embedding,
}

/// Decisions of both variants over one set of comparisons at one operating point.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Agreement {
    genuine: usize,
    impostor: usize,
    /// Genuine comparisons accepted with flip on, and with it off.
    genuine_accepted_flip: usize,
    genuine_accepted_plain: usize,
    impostors_accepted_flip: usize,
    impostors_accepted_plain: usize,
    /// Comparisons (of either kind) decided differently: accepted only with flip on, only off.
    only_flip_accepts: usize,
    only_plain_accepts: usize,
    /// Two-sided exact McNemar p-value of the discordant comparisons.
    mcnemar_p: f64,
}

impl Agreement {
    fn add(&mut self, same: bool, flip_accepts: bool, plain_accepts: bool) {
        if same {
            self.genuine += 1;
            self.genuine_accepted_flip += usize::from(flip_accepts);
            self.genuine_accepted_plain += usize::from(plain_accepts);
        } else {
            self.impostor += 1;
            self.impostors_accepted_flip += usize::from(flip_accepts);
            self.impostors_accepted_plain += usize::from(plain_accepts);
        }
        self.only_flip_accepts += usize::from(flip_accepts && !plain_accepts);
        self.only_plain_accepts += usize::from(plain_accepts && !flip_accepts);
    }

    fn finish(mut self) -> Self {
        self.mcnemar_p = mcnemar_exact(self.only_flip_accepts, self.only_plain_accepts);
        self
    }

    fn changed(&self) -> usize {
        self.only_flip_accepts + self.only_plain_accepts
    }
}

/// Two-sided exact McNemar test: the binomial probability, under "neither variant is better",
/// of a split of the `b + c` discordant comparisons at least as uneven as the one seen.
pub(crate) fn mcnemar_exact(b: usize, c: usize) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let k = b.min(c);
    // log C(n, i) built up term by term; the tail sum in linear space is fine for n <= ~1000.
    let mut log_c = 0.0f64;
    let mut tail = 0.0f64;
    let half_n = n as f64 * std::f64::consts::LN_2;
    for i in 0..=k {
        if i > 0 {
            log_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (log_c - half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

/// One operating point's thresholds, one per variant.
#[derive(Debug, Clone, Copy, Serialize)]
struct Point {
    fmr: f64,
    flip: f32,
    plain: f32,
}

pub fn run(cli: &Cli, args: &FlipEvalArgs) -> Result<ExitCode> {
    let lfw = &args.lfw;
    let images = lfw.join("images");
    require(&images, "LFW images")?;
    let view2 = lfw.join("pairs.txt");
    let devtest = lfw.join("pairsDevTest.txt");
    require(&view2, "LFW View 2 pair list")?;
    require(&devtest, "LFW View 1 DevTest pair list")?;
    let mut loaded = super::load(cli, |v| {
        v.liveness = false;
        v.flip_tta = true;
    })?;
    loaded.pipeline.keep_plain_embeddings(true);
    let max = loaded.config.max_pixels;

    let all = metrics::lfw_images(&images)?;
    let split = metrics::lfw_split(&all, &test_images(lfw, &images)?);
    let calibration: Vec<(String, PathBuf)> = split
        .calibration
        .iter()
        .map(|&i| (all[i].identity.clone(), all[i].path.clone()))
        .collect();
    let view2_pairs = metrics::parse_lfw_pairs(&view2, &images)?;
    let devtest_pairs = metrics::parse_lfw_pairs(&devtest, &images)?;
    let mut wanted: Vec<PathBuf> = calibration.iter().map(|(_, p)| p.clone()).collect();
    for p in view2_pairs.iter().chain(&devtest_pairs) {
        wanted.push(p.a.clone());
        wanted.push(p.b.clone());
    }
    wanted.sort();
    wanted.dedup();

    let bar = progress(wanted.len() as u64, "embedding");
    let mut emb: HashMap<PathBuf, Both> = HashMap::with_capacity(wanted.len());
    let mut no_face = 0usize;
    for path in &wanted {
        let frame = super::read_image(path, max)?;
        match embed_centre_face(&mut loaded.pipeline, &frame, Looks::default())
            .with_context(|| format!("embedding {}", path.display()))?
        {
            Some((flip, _)) => {
                let plain = loaded
                    .pipeline
                    .take_plain_embedding()
                    .context("the embedder kept no unmirrored template")?;
                emb.insert(path.clone(), Both { plain, flip });
            }
            None => no_face += 1,
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    // Thresholds per variant from the calibration split, as `eval calibrate --split` makes them.
    let cal: Vec<(&str, &Both)> = calibration
        .iter()
        .filter_map(|(id, p)| emb.get(p).map(|b| (id.as_str(), b)))
        .collect();
    let table = |pick: fn(&Both) -> &Embedding| -> Result<Vec<metrics::CalibrationRow>> {
        let items: Vec<(&str, &Embedding)> = cal.iter().map(|(id, b)| (*id, pick(b))).collect();
        let (top, total) = impostor_scores(&items, 0.1);
        metrics::calibrate_from_top(top, total, &args.fmr)
            .context("too few impostor pairs above the score floor 0.1")
    };
    let flip_rows = table(|b| &b.flip)?;
    let plain_rows = table(|b| &b.plain)?;
    let points: Vec<Point> = flip_rows
        .iter()
        .zip(&plain_rows)
        .map(|(f, p)| Point {
            fmr: f.fmr,
            flip: f.cosine,
            plain: p.cosine,
        })
        .collect();

    let pair_sets = [("lfw_view2", &view2_pairs), ("lfw_devtest", &devtest_pairs)];
    let clips = clip_templates(&mut loaded.pipeline, &args.dir, args.every, max)?;

    let mut report: Vec<(Point, Vec<(&str, Agreement)>)> = Vec::new();
    for point in &points {
        let mut sets = Vec::new();
        for (name, pairs) in pair_sets {
            let mut a = Agreement::default();
            for p in pairs.iter() {
                if let (Some(x), Some(y)) = (emb.get(&p.a), emb.get(&p.b)) {
                    a.add(
                        p.same,
                        x.flip.cosine(&y.flip) >= point.flip,
                        x.plain.cosine(&y.plain) >= point.plain,
                    );
                }
            }
            sets.push((name, a.finish()));
        }
        sets.push(("clips", clip_agreement(&clips, point)));
        report.push((*point, sets));
    }

    let clip_frames: usize = clips.iter().map(|c| c.frames.len()).sum();
    if args.json {
        let points: Vec<_> = report
            .iter()
            .map(|(p, sets)| {
                let sets: serde_json::Map<String, serde_json::Value> = sets
                    .iter()
                    .map(|(n, a)| ((*n).to_owned(), json!(a)))
                    .collect();
                json!({ "fmr": p.fmr, "threshold_flip": p.flip, "threshold_plain": p.plain, "sets": sets })
            })
            .collect();
        println!(
            "{}",
            json!({
                "images": emb.len(),
                "images_without_face": no_face,
                "calibration_images": cal.len(),
                "clips": clips.len(),
                "clip_frames": clip_frames,
                "points": points,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} images embedded both ways ({no_face} without a face); thresholds from all cross-identity pairs of {} calibration images; {} live clips, {clip_frames} frames (every {}th)",
        emb.len(),
        cal.len(),
        clips.len(),
        args.every
    );
    println!(
        "{:<8} {:<12} {:>15} {:>9} {:>15} {:>22} {:>13} {:>9}",
        "FMR",
        "set",
        "thr flip/plain",
        "genuine",
        "accepted f/p",
        "impostors in f/p",
        "changed f+/p+",
        "McNemar p"
    );
    for (p, sets) in &report {
        for (name, a) in sets {
            println!(
                "{:<8} {:<12} {:>15} {:>9} {:>15} {:>22} {:>13} {:>9.3}",
                format!("{:e}", p.fmr),
                name,
                format!("{:.4}/{:.4}", p.flip, p.plain),
                a.genuine,
                format!("{}/{}", a.genuine_accepted_flip, a.genuine_accepted_plain),
                format!(
                    "{}/{} of {}",
                    a.impostors_accepted_flip, a.impostors_accepted_plain, a.impostor
                ),
                format!(
                    "{} ({}/{})",
                    a.changed(),
                    a.only_flip_accepts,
                    a.only_plain_accepts
                ),
                a.mcnemar_p
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The largest face of every `every`-th frame of one live clip, both ways.
struct ClipFaces {
    frames: Vec<Both>,
}

fn clip_templates(
    pipeline: &mut Pipeline,
    dir: &Path,
    every: usize,
    max_pixels: u64,
) -> Result<Vec<ClipFaces>> {
    let mut paths: Vec<PathBuf> = LIVE_CLIPS.iter().map(|c| dir.join(c.path)).collect();
    for d in ["d3", "d9", "d10", "d12"] {
        paths.push(dir.join("video").join(format!("portrait_{d}.mp4")));
    }
    let bar = progress(paths.len() as u64, "clips");
    let mut out = Vec::with_capacity(paths.len());
    let look = AnalyseOptions {
        embed: false,
        liveness: false,
        max_faces: 16,
    };
    let opts = AnalyseOptions {
        embed: true,
        liveness: false,
        max_faces: 1,
    };
    let mut faces = Vec::new();
    for path in &paths {
        let frames: Vec<Frame> = super::liveness_eval::decode(path, max_pixels)?;
        let mut clip = ClipFaces { frames: Vec::new() };
        for frame in frames.iter().step_by(every.max(1)) {
            pipeline.analyse(frame, look, &mut faces)?;
            let Some(largest) = faces
                .iter()
                .max_by(|a, b| a.detection.bbox.area().total_cmp(&b.detection.bbox.area()))
            else {
                continue;
            };
            let mut t = StageTimings::default();
            let face = pipeline.analyse_face(frame, largest.detection, opts, &mut t)?;
            let flip = face.embedding.context("no embedding")?;
            let plain = pipeline
                .take_plain_embedding()
                .context("the embedder kept no unmirrored template")?;
            clip.frames.push(Both { plain, flip });
        }
        if clip.frames.len() < 2 {
            anyhow::bail!("{}: a face in fewer than 2 frames", path.display());
        }
        out.push(clip);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Each clip's first face is its person's enrolled template; every later frame of the clip is a
/// genuine attempt, every frame of the other clips an impostor attempt.
fn clip_agreement(clips: &[ClipFaces], p: &Point) -> Agreement {
    let mut a = Agreement::default();
    for (i, enrolled) in clips.iter().enumerate() {
        let t = &enrolled.frames[0];
        for (j, clip) in clips.iter().enumerate() {
            let frames = if i == j {
                &clip.frames[1..]
            } else {
                &clip.frames[..]
            };
            for f in frames {
                a.add(
                    i == j,
                    t.flip.cosine(&f.flip) >= p.flip,
                    t.plain.cosine(&f.plain) >= p.plain,
                );
            }
        }
    }
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcnemar_matches_the_binomial_tail() {
        // 0 vs 6 discordant: 2 * 0.5^6.
        assert!((mcnemar_exact(0, 6) - 2.0 / 64.0).abs() < 1e-12);
        // 1 vs 9: 2 * (1 + 10) / 1024.
        assert!((mcnemar_exact(9, 1) - 22.0 / 1024.0).abs() < 1e-12);
        // An even split is no evidence either way.
        assert_eq!(mcnemar_exact(5, 5), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        // Large counts stay finite and symmetric.
        let p = mcnemar_exact(300, 360);
        assert!(p > 0.0 && p < 0.05, "{p}");
        assert_eq!(p, mcnemar_exact(360, 300));
    }

    #[test]
    fn agreement_counts_each_kind_of_disagreement() {
        let mut a = Agreement::default();
        a.add(true, true, true);
        a.add(true, true, false);
        a.add(false, false, true);
        a.add(false, false, false);
        let a = a.finish();
        assert_eq!((a.genuine, a.impostor), (2, 2));
        assert_eq!((a.genuine_accepted_flip, a.genuine_accepted_plain), (2, 1));
        assert_eq!(
            (a.impostors_accepted_flip, a.impostors_accepted_plain),
            (0, 1)
        );
        assert_eq!((a.only_flip_accepts, a.only_plain_accepts), (1, 1));
        assert_eq!(a.changed(), 2);
    }
}
