//! `facegate eval`: accuracy on labelled data (LFW, WIDER FACE, deepface pairs) and threshold
//! calibration. Data stays where it is (`../shared/eval` by default); nothing is copied.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use facegate_types::{BBox, Embedding, Frame};
use facegate_vision::eval::{self as metrics, Pair};
use facegate_vision::{AnalyseOptions, PhotoPass, Pipeline, StageTimings};
use serde_json::json;

use crate::cli::{
    CalibrateArgs, Cli, EvalCommand, FpirArgs, LfwArgs, PairsArgs, TightCrop, WiderArgs,
};
use crate::output::progress;

pub fn run(cli: &Cli, cmd: &EvalCommand) -> Result<ExitCode> {
    match cmd {
        EvalCommand::Lfw(a) => lfw(cli, a),
        EvalCommand::Wider(a) => wider(cli, a),
        EvalCommand::Pairs(a) => pairs(cli, a),
        EvalCommand::Calibrate(a) => calibrate(cli, a),
        EvalCommand::Liveness(a) => super::liveness_eval::run(cli, a),
        EvalCommand::Fpir(a) => fpir(cli, a),
        EvalCommand::Flip(a) => super::flip_eval::run(cli, a),
        EvalCommand::CalibrationInputs(a) => super::calibration_inputs::run(cli, a),
    }
}

pub(super) fn require(path: &Path, what: &str) -> Result<()> {
    if !path.exists() {
        bail!(
            "{what} not found at {} (the evaluation data lives in ../shared/eval)",
            path.display()
        );
    }
    Ok(())
}

/// How the images of an evaluation were looked at.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Looks {
    /// The ID-photo protocol (`eval::tight_grey_crop`) instead of the image.
    tight_crop: bool,
    /// The detector alone, no margin and no fallback.
    direct_only: bool,
    /// The tight crop aligned with the uncropped image's landmarks (a measurement).
    landmarks_from_uncropped: bool,
}

/// How many images each look found their face in, and how many had none.
#[derive(Debug, Clone, Copy, Default)]
struct LookCounts {
    direct: usize,
    margin: usize,
    fallback: usize,
    no_face: usize,
}

/// The face an LFW-style image is about, found as a photo is ([`Pipeline::analyse_photo`]):
/// the detection nearest the centre among the large ones. `None` when no face is found; there
/// is no guessed box.
pub(super) fn embed_centre_face(
    pipeline: &mut Pipeline,
    frame: &Frame,
    looks: Looks,
) -> Result<Option<(Embedding, PhotoPass)>> {
    if looks.tight_crop && looks.landmarks_from_uncropped {
        let crop = metrics::tight_grey_crop(frame).context("image smaller than the tight crop")?;
        let plain = Looks {
            tight_crop: false,
            landmarks_from_uncropped: false,
            ..looks
        };
        let Some((_, pass, landmarks)) = centre_face(pipeline, frame, plain)? else {
            return Ok(None);
        };
        let (dx, dy) = (
            ((frame.width() - crop.width()) / 2) as f32,
            ((frame.height() - crop.height()) / 2) as f32,
        );
        let moved = facegate_types::Landmarks5(
            landmarks
                .points()
                .map(|p| facegate_types::Point::new(p.x - dx, p.y - dy)),
        );
        let e = pipeline.embed_at(&crop, &moved, facegate_vision::preprocess::Border::Zero)?;
        return Ok(Some((e, pass)));
    }
    Ok(centre_face(pipeline, frame, looks)?.map(|(e, pass, _)| (e, pass)))
}

/// The face an LFW-style image is about: among the faces at least 0.3 of the largest's area,
/// the one nearest the centre of `photo`.
pub(super) fn centre_pick<'a>(
    faces: &'a [facegate_vision::FaceAnalysis],
    photo: &Frame,
) -> Option<&'a facegate_vision::FaceAnalysis> {
    let (cx, cy) = (photo.width() as f32 / 2.0, photo.height() as f32 / 2.0);
    let largest = faces
        .iter()
        .map(|f| f.detection.bbox.area())
        .fold(0.0f32, f32::max);
    faces
        .iter()
        .filter(|f| f.detection.bbox.area() >= 0.3 * largest)
        .min_by(|a, b| {
            let d = |f: &facegate_vision::FaceAnalysis| {
                let c = f.detection.bbox.center();
                (c.x - cx).powi(2) + (c.y - cy).powi(2)
            };
            d(a).total_cmp(&d(b))
        })
}

/// [`embed_centre_face`]'s face, with its landmarks in the image's coordinates.
fn centre_face(
    pipeline: &mut Pipeline,
    frame: &Frame,
    looks: Looks,
) -> Result<Option<(Embedding, PhotoPass, facegate_types::Landmarks5)>> {
    let tight;
    let frame = if looks.tight_crop {
        tight = metrics::tight_grey_crop(frame).context("image smaller than the tight crop")?;
        &tight
    } else {
        frame
    };
    let look = AnalyseOptions {
        embed: false,
        liveness: false,
        max_faces: 16,
    };
    let mut faces = Vec::new();
    let (photo, pass) = if looks.direct_only {
        pipeline.analyse(frame, look, &mut faces)?;
        (std::borrow::Cow::Borrowed(frame), PhotoPass::Direct)
    } else {
        let p = pipeline.analyse_photo(frame, look, &mut faces)?;
        (p.frame, p.pass)
    };
    // The photo sits centred on its margin, so the centre is the photo's either way.
    let Some(face) = centre_pick(&faces, &photo) else {
        return Ok(None);
    };
    let mut t = StageTimings::default();
    let opts = AnalyseOptions {
        embed: true,
        liveness: false,
        max_faces: 1,
    };
    let face = pipeline.analyse_face(&photo, face.detection, opts, &mut t)?;
    let (dx, dy) = match &photo {
        // The margin's canvas: the photo sits centred on it.
        std::borrow::Cow::Owned(c) => (
            ((c.width() - frame.width()) / 2) as f32,
            ((c.height() - frame.height()) / 2) as f32,
        ),
        std::borrow::Cow::Borrowed(_) => (0.0, 0.0),
    };
    let landmarks = facegate_types::Landmarks5(
        face.landmarks
            .points()
            .map(|p| facegate_types::Point::new(p.x - dx, p.y - dy)),
    );
    Ok(Some((
        face.embedding.context("no embedding")?,
        pass,
        landmarks,
    )))
}

/// Embeds every image once. An image without a face has `None`; unreadable images are an error
/// naming the file.
fn embed_all(
    pipeline: &mut Pipeline,
    images: &[PathBuf],
    max_pixels: u64,
    looks: Looks,
) -> Result<(HashMap<PathBuf, Option<Embedding>>, LookCounts)> {
    let bar = progress(images.len() as u64, "embedding");
    let mut out = HashMap::with_capacity(images.len());
    let mut counts = LookCounts::default();
    for path in images {
        let frame = super::read_image(path, max_pixels)?;
        let e = embed_centre_face(pipeline, &frame, looks)
            .with_context(|| format!("embedding {}", path.display()))?;
        match &e {
            None => counts.no_face += 1,
            Some((_, PhotoPass::Direct)) => counts.direct += 1,
            Some((_, PhotoPass::Margin)) => counts.margin += 1,
            Some((_, PhotoPass::Fallback)) => counts.fallback += 1,
        }
        out.insert(path.clone(), e.map(|(e, _)| e));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((out, counts))
}

fn distinct_images(pairs: &[Pair]) -> Vec<PathBuf> {
    distinct(pairs.iter().flat_map(|p| [p.a.clone(), p.b.clone()]))
}

fn distinct(paths: impl Iterator<Item = PathBuf>) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = paths.collect();
    v.sort();
    v.dedup();
    v
}

/// The pairs' scores, and how many pairs had an image without a face (scored as errors,
/// [`metrics::unscorable`]).
fn score_pairs(
    pairs: &[Pair],
    emb: &HashMap<PathBuf, Option<Embedding>>,
    emb_b: &HashMap<PathBuf, Option<Embedding>>,
) -> Result<(Vec<(f32, bool)>, usize)> {
    let mut unscored = 0;
    let scores = pairs
        .iter()
        .map(|p| {
            let a = emb
                .get(&p.a)
                .with_context(|| format!("no embedding for {}", p.a.display()))?;
            let b = emb_b
                .get(&p.b)
                .with_context(|| format!("no embedding for {}", p.b.display()))?;
            Ok(match (a, b) {
                (Some(a), Some(b)) => (a.cosine(b), p.same),
                _ => {
                    unscored += 1;
                    (metrics::unscorable(p.same), p.same)
                }
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((scores, unscored))
}

fn lfw(cli: &Cli, args: &LfwArgs) -> Result<ExitCode> {
    require(&args.pairs, "LFW pair list")?;
    let images = args
        .images
        .clone()
        .unwrap_or_else(|| args.pairs.with_file_name("images"));
    let mut all = metrics::parse_lfw_pairs(&args.pairs, &images)?;
    if let Some(limit) = args.limit {
        let mut seen: HashMap<(usize, bool), usize> = HashMap::new();
        all.retain(|p| {
            let n = seen.entry((p.fold, p.same)).or_default();
            *n += 1;
            *n <= limit
        });
    }
    let (no_flip, force_flip) = (args.no_flip, args.flip);
    let mut loaded = super::load(cli, |v| {
        v.liveness = false;
        if no_flip {
            v.flip_tta = false;
        }
        if force_flip {
            v.flip_tta = true;
        }
    })?;
    let flip = loaded.config.vision.flip_tta;
    let looks = Looks {
        tight_crop: args.tight_crop.is_some(),
        direct_only: args.direct_only,
        landmarks_from_uncropped: args.landmarks_from_uncropped,
    };
    let start = Instant::now();
    let (scores, unscored, counts, images) = if args.tight_crop == Some(TightCrop::First) {
        // The first image of each pair as an ID photo, the second as it is.
        let firsts: Vec<PathBuf> = distinct(all.iter().map(|p| p.a.clone()));
        let seconds: Vec<PathBuf> = distinct(all.iter().map(|p| p.b.clone()));
        let (ea, counts) = embed_all(
            &mut loaded.pipeline,
            &firsts,
            loaded.config.max_pixels,
            looks,
        )?;
        let plain = Looks {
            tight_crop: false,
            ..looks
        };
        let (eb, counts_b) = embed_all(
            &mut loaded.pipeline,
            &seconds,
            loaded.config.max_pixels,
            plain,
        )?;
        let (scores, unscored) = score_pairs(&all, &ea, &eb)?;
        let counts = LookCounts {
            direct: counts.direct + counts_b.direct,
            margin: counts.margin + counts_b.margin,
            fallback: counts.fallback + counts_b.fallback,
            no_face: counts.no_face + counts_b.no_face,
        };
        (scores, unscored, counts, firsts.len() + seconds.len())
    } else {
        let (emb, counts) = embed_all(
            &mut loaded.pipeline,
            &distinct_images(&all),
            loaded.config.max_pixels,
            looks,
        )?;
        let (scores, unscored) = score_pairs(&all, &emb, &emb)?;
        (scores, unscored, counts, emb.len())
    };
    let folds: Vec<usize> = all.iter().map(|p| p.fold).collect();
    let k = metrics::kfold(&scores, &folds);
    let (tar2, t2) = metrics::tar_at_far(&scores, 1e-2);
    let (tar3, t3) = metrics::tar_at_far(&scores, 1e-3);
    let secs = start.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({
                "pairs": all.len(), "images": images, "images_without_face": counts.no_face,
                "pairs_with_an_image_without_face": unscored, "found_direct": counts.direct,
                "found_with_margin": counts.margin, "found_by_fallback_detector": counts.fallback,
                "tight_crop": args.tight_crop.map(|t| format!("{t:?}").to_lowercase()), "direct_only": looks.direct_only, "landmarks_from_uncropped": looks.landmarks_from_uncropped, "flip_tta": flip,
                "accuracy": k.accuracy_mean, "accuracy_std": k.accuracy_std, "fold_accuracy": k.fold_accuracy,
                "fold_thresholds": k.thresholds, "tar_at_far_1e-2": tar2, "threshold_at_far_1e-2": t2,
                "tar_at_far_1e-3": tar3, "threshold_at_far_1e-3": t3, "seconds": secs,
                "model": loaded.pipeline.model_id(),
            })
        );
    } else {
        println!(
            "{}: {} pairs, {} images{}{}, flip TTA {}",
            args.pairs.display(),
            all.len(),
            images,
            match args.tight_crop {
                Some(TightCrop::Both) => " (tight grey crops)",
                Some(TightCrop::First) => " (the first of each pair a tight grey crop)",
                None => "",
            },
            if looks.landmarks_from_uncropped {
                ", aligned with the uncropped images' landmarks"
            } else {
                ""
            },
            if flip { "on" } else { "off" }
        );
        println!(
            "faces found in {} images: {} as they are, {} with a margin, {} by the fallback \
             detector{}; no face in {} images, so {} pairs count as errors",
            images - counts.no_face,
            counts.direct,
            counts.margin,
            counts.fallback,
            if looks.direct_only {
                " (--direct-only)"
            } else {
                ""
            },
            counts.no_face,
            unscored
        );
        println!(
            "accuracy {:.2}% +- {:.2} ({} folds, threshold chosen on the other folds)",
            100.0 * k.accuracy_mean,
            100.0 * k.accuracy_std,
            k.fold_accuracy.len()
        );
        let th: Vec<String> = k.thresholds.iter().map(|t| format!("{t:.3}")).collect();
        println!("thresholds per fold: {}", th.join(" "));
        println!(
            "TAR {:.2}% at FAR 1e-2 (cosine > {t2:.4}); TAR {:.2}% at FAR 1e-3 (cosine > {t3:.4})",
            100.0 * tar2,
            100.0 * tar3
        );
        println!("{secs:.0} s");
    }
    Ok(ExitCode::SUCCESS)
}

fn pairs(cli: &Cli, args: &PairsArgs) -> Result<ExitCode> {
    let images = args.dir.join("images");
    require(&images, "deepface images")?;
    let mut loaded = super::load(cli, |v| v.liveness = false)?;
    let threshold = loaded.config.threshold(&loaded.manifest)?;
    let mut results = Vec::new();
    // deepface photos are full-size, with several faces at times: the largest face is the subject.
    let mut cache: HashMap<PathBuf, Embedding> = HashMap::new();
    for list in ["master.csv", "pivot.csv"] {
        let path = args.dir.join(list);
        require(&path, "deepface pair list")?;
        let ps = metrics::parse_deepface_pairs(&path, &images)?;
        let bar = progress(ps.len() as u64, list);
        let mut scores = Vec::new();
        for p in &ps {
            for img in [&p.a, &p.b] {
                if !cache.contains_key(img) {
                    let frame = super::read_image(img, loaded.config.max_pixels)?;
                    let e = super::embed_largest(
                        &mut loaded.pipeline,
                        &frame,
                        &img.display().to_string(),
                    )?;
                    cache.insert(img.clone(), e);
                }
            }
            scores.push((cache[&p.a].cosine(&cache[&p.b]), p.same));
            bar.inc(1);
        }
        bar.finish_and_clear();
        let best = metrics::best_threshold(&scores);
        let at_op = metrics::accuracy_at(&scores, threshold);
        let fmr_op = scores.iter().filter(|s| !s.1 && s.0 >= threshold).count() as f64
            / scores.iter().filter(|s| !s.1).count().max(1) as f64;
        let fnmr_op = scores.iter().filter(|s| s.1 && s.0 < threshold).count() as f64
            / scores.iter().filter(|s| s.1).count().max(1) as f64;
        results.push(json!({
            "list": list, "pairs": scores.len(), "accuracy_at_operating_point": at_op, "threshold": threshold,
            "false_match_rate": fmr_op, "false_non_match_rate": fnmr_op,
            "best_accuracy": metrics::accuracy_at(&scores, best), "best_threshold": best,
        }));
        if !args.json {
            println!(
                "{list}: {} pairs; at the operating point (cosine {threshold:.4}): accuracy {:.2}%, FMR {:.2}%, FNMR {:.2}%; best threshold {best:.3} gives {:.2}%",
                scores.len(),
                100.0 * at_op,
                100.0 * fmr_op,
                100.0 * fnmr_op,
                100.0 * metrics::accuracy_at(&scores, best)
            );
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn wider(cli: &Cli, args: &WiderArgs) -> Result<ExitCode> {
    let gt_path = args.dir.join("gt.tsv");
    require(&gt_path, "WIDER FACE ground truth")?;
    let threshold = args.threshold;
    let mut loaded = super::load(cli, |v| {
        v.liveness = false;
        v.detector_threshold = Some(threshold);
    })?;
    let gt = metrics::parse_wider(&gt_path, &args.dir.join("images"))?;
    let bar = progress(gt.len() as u64, "detecting");
    let mut per_image = Vec::with_capacity(gt.len());
    for (path, boxes) in gt {
        let frame = super::read_image(&path, loaded.config.max_pixels)?;
        let dets: Vec<(BBox, f32)> = loaded
            .pipeline
            .detect(&frame)?
            .iter()
            .map(|d| (d.bbox, d.score))
            .collect();
        per_image.push((boxes, dets));
        bar.inc(1);
    }
    bar.finish_and_clear();
    type Subset = (&'static str, fn(&metrics::WiderBox) -> bool);
    let subsets: [Subset; 3] = [
        ("easy", |b| b.easy),
        ("medium", |b| b.medium),
        ("hard", |b| b.hard),
    ];
    let mut out = serde_json::Map::new();
    for (name, f) in subsets {
        let s = metrics::evaluate_detection(&per_image, f);
        if !args.json {
            println!(
                "{name:>6}: AP {:.3}, recall {:.3}, precision {:.3} ({} faces, score > {threshold})",
                s.average_precision, s.recall, s.precision, s.faces
            );
        }
        out.insert(name.into(), json!({ "ap": s.average_precision, "recall": s.recall, "precision": s.precision, "faces": s.faces }));
    }
    if args.json {
        out.insert("images".into(), json!(per_image.len()));
        out.insert("score_threshold".into(), json!(threshold));
        println!("{}", serde_json::Value::Object(out));
    }
    Ok(ExitCode::SUCCESS)
}

/// The images the tests use (View 1 DevTest, and the few photos the CLI tests name), left out
/// of the calibration set so that no test scores a pair the thresholds were fitted on.
pub(super) fn test_images(lfw: &Path, images: &Path) -> Result<HashSet<PathBuf>> {
    let mut out: HashSet<PathBuf> = HashSet::new();
    let devtest = lfw.join("pairsDevTest.txt");
    require(&devtest, "LFW View 1 DevTest pair list")?;
    for p in metrics::parse_lfw_pairs(&devtest, images)? {
        out.insert(p.a);
        out.insert(p.b);
    }
    for (name, n) in [
        ("George_W_Bush", 1..=6),
        ("Colin_Powell", 1..=1),
        ("Aaron_Peirsol", 1..=1),
    ] {
        for i in n {
            out.insert(images.join(name).join(format!("{name}_{i:04}.jpg")));
        }
    }
    Ok(out)
}

/// Impostor scores above `floor` of every cross-identity pair of `items` (identity, template),
/// and how many pairs there were in all.
pub(super) fn impostor_scores(items: &[(&str, &Embedding)], floor: f32) -> (Vec<f32>, u64) {
    let mut top = Vec::new();
    let mut total = 0u64;
    for i in 0..items.len() {
        for j in i + 1..items.len() {
            if items[i].0 != items[j].0 {
                total += 1;
                let s = items[i].1.cosine(items[j].1);
                if s > floor {
                    top.push(s);
                }
            }
        }
    }
    (top, total)
}

fn calibrate(cli: &Cli, args: &CalibrateArgs) -> Result<ExitCode> {
    let mut loaded = super::load(cli, |v| {
        v.liveness = false;
        v.flip_tta = !args.no_flip;
    })?;
    // The images: the LFW split's calibration set (every image but each person's first and the
    // tests' images), or those of one pair list.
    let (list, what) = if args.split {
        let lfw = args.lfw.clone();
        let images = args.images.clone().unwrap_or_else(|| lfw.join("images"));
        require(&images, "LFW images")?;
        let all = metrics::lfw_images(&images)?;
        let split = metrics::lfw_split(&all, &test_images(&lfw, &images)?);
        let list: Vec<PathBuf> = split
            .calibration
            .iter()
            .map(|&i| all[i].path.clone())
            .collect();
        let what = format!(
            "the LFW split: all {} images but each person's first ({}) and {} the tests use",
            all.len(),
            split.firsts.len(),
            split.excluded
        );
        (list, what)
    } else {
        require(&args.pairs, "LFW pair list")?;
        let images = args
            .images
            .clone()
            .unwrap_or_else(|| args.pairs.with_file_name("images"));
        let pairs = metrics::parse_lfw_pairs(&args.pairs, &images)?;
        (
            distinct_images(&pairs),
            format!("the images of {}", args.pairs.display()),
        )
    };
    let (emb, counts) = embed_all(
        &mut loaded.pipeline,
        &list,
        loaded.config.max_pixels,
        Looks::default(),
    )?;
    let identity = |p: &Path| {
        p.parent()
            .and_then(|d| d.file_name())
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_owned()
    };
    let names: Vec<String> = list.iter().map(|p| identity(p)).collect();
    let items: Vec<(&str, &Embedding)> = list
        .iter()
        .zip(&names)
        .filter_map(|(p, n)| emb.get(p).and_then(Option::as_ref).map(|e| (n.as_str(), e)))
        .collect();
    // Only the top of the impostor distribution matters; FMR 1e-2 is far above this floor.
    let (top, total) = impostor_scores(&items, 0.1);
    let rows = metrics::calibrate_from_top(top, total, &metrics::CALIBRATION_FMRS)
        .context("too few impostor pairs above the score floor 0.1 for FMR 1e-2")?;
    let flip = loaded.config.vision.flip_tta;
    if args.json {
        println!(
            "{}",
            json!({ "images": items.len(), "images_without_face": counts.no_face, "impostor_pairs": total, "flip_tta": flip,
            "points": rows.iter().map(|r| json!({ "fmr": r.fmr, "cosine": r.cosine, "impostors_above": r.above, "fmr_upper95": r.fmr_upper95 })).collect::<Vec<_>>() })
        );
    } else {
        println!(
            "{} images ({} without a face left out), {total} impostor pairs: all cross-identity pairs of {what}; flip TTA {}",
            items.len(),
            counts.no_face,
            if flip { "on" } else { "off" }
        );
        println!("calibration_pairs = {total}");
        println!("calibration = [");
        for r in &rows {
            println!(
                "    {{ fmr = {:e}, cosine = {:.4}, impostors_above = {} }},  # 95% upper bound of the FMR: {:.2e}",
                r.fmr, r.cosine, r.above, r.fmr_upper95
            );
        }
        println!("]");
    }
    Ok(ExitCode::SUCCESS)
}

/// Open-set identification on LFW: galleries of N people (one photo each, the first of the
/// person), strangers (everybody else's first photo) searched against them at the threshold the
/// policy derives for each FPIR target and N, through the product's gallery and decision rule.
fn fpir(cli: &Cli, args: &FpirArgs) -> Result<ExitCode> {
    use facegate_policy::{IdentifyOutcome, fpir_threshold, identification_outcome};
    use facegate_store::{Gallery, SearchMode};
    use facegate_types::{SubjectId, TemplateId};
    let images = args.lfw.join("images");
    require(&images, "LFW images")?;
    let mut loaded = super::load(cli, |v| v.liveness = false)?;
    // The flip setting the product uses when 1:N follows an `fpir` target (`auto` turns it on).
    let flip = loaded.config.flip_setting.resolve(
        loaded.config.policy.matching().operating_point(),
        args.fpir.first().copied(),
    );
    if flip != loaded.config.vision.flip_tta {
        loaded.config.vision.flip_tta = flip;
        loaded.pipeline = facegate_vision::Pipeline::load(&loaded.manifest, &loaded.config.vision)
            .context("loading the vision pipeline")?;
    }
    // The table the product derives 1:N thresholds from: each rate its 95 % upper bound.
    let calibration = loaded.config.fpir_calibration(&loaded.manifest)?;
    facegate_policy::check_calibration(&calibration)?;
    let margin = loaded.config.policy.matching().margin();
    let all = metrics::lfw_images(&images)?;
    let mut split = metrics::lfw_split(&all, &HashSet::new());
    if let Some(p) = args.people {
        // A fixed random subset of the people (a shorter run for the tests).
        anyhow::ensure!(
            p >= 2 && p <= split.firsts.len(),
            "--people {p} must be between 2 and the {} people of LFW",
            split.firsts.len()
        );
        shuffle(&mut split.firsts, 0x005e_ed0f_5e75);
        split.firsts.truncate(p);
        split.firsts.sort_unstable();
    }
    // Each person's first photo, and the second for the mated searches (FNIR).
    let mut second: HashMap<usize, usize> = HashMap::new();
    for (k, &f) in split.firsts.iter().enumerate() {
        if all
            .get(f + 1)
            .is_some_and(|n| n.identity == all[f].identity)
        {
            second.insert(k, f + 1);
        }
    }
    let mut list: Vec<PathBuf> = split.firsts.iter().map(|&i| all[i].path.clone()).collect();
    list.extend(second.values().map(|&i| all[i].path.clone()));
    let (emb, counts) = embed_all(
        &mut loaded.pipeline,
        &list,
        loaded.config.max_pixels,
        Looks::default(),
    )?;
    let people = split.firsts.len();
    let first = |k: usize| emb.get(&all[split.firsts[k]].path).and_then(Option::as_ref);
    // The gallery population's own per-pair rate: every cross-identity pair of the first
    // photos, scored once (the top only; the thresholds lie far above 0.3).
    let (mut population_top, mut population_pairs) = (Vec::new(), 0u64);
    for a in 0..people {
        let Some(ea) = first(a) else { continue };
        for b in a + 1..people {
            if let Some(eb) = first(b) {
                population_pairs += 1;
                let s = ea.cosine(eb);
                if s > 0.3 {
                    population_top.push(s);
                }
            }
        }
    }
    let population_above = |t: f32| population_top.iter().filter(|&&s| s >= t).count() as u64;
    let mut rows = Vec::new();
    for &n in &args.sizes {
        anyhow::ensure!(
            n >= 1 && n < people,
            "gallery size {n} must leave strangers among the {people} people of LFW"
        );
        for &target in &args.fpir {
            let t = fpir_threshold(&calibration, target, n)?;
            let (mut probes, mut false_pos, mut mated, mut missed) = (0u64, 0u64, 0u64, 0u64);
            // The (stranger, enrolled person) pairs behind the false positives: the same pair
            // comes back in every seed that puts one in the gallery and the other outside.
            let mut fp_pairs: HashSet<(usize, String)> = HashSet::new();
            for seed in 0..args.seeds {
                let mut order: Vec<usize> = (0..people).collect();
                shuffle(&mut order, 0x9e37_79b9_7f4a_7c15 ^ (seed as u64 + 1));
                let mut gallery = Gallery::new(
                    loaded.pipeline.model_id(),
                    loaded.pipeline.embedding_dim(),
                    n,
                );
                for (row, &k) in order[..n].iter().enumerate() {
                    if let Some(e) = first(k) {
                        gallery.insert(
                            &SubjectId::new(format!("p{k}"))?,
                            TemplateId(row as u64 + 1),
                            e,
                        )?;
                    }
                }
                let decide = |probe: &Embedding| -> Result<Option<String>> {
                    let r = gallery.identify(probe, 3, SearchMode::Exact)?;
                    Ok(r.best().and_then(|b| {
                        (identification_outcome(b.score, r.second_identity_score, t.cosine, margin)
                            == IdentifyOutcome::Match)
                            .then(|| b.subject.to_string())
                    }))
                };
                for &k in &order[n..] {
                    if let Some(e) = first(k) {
                        probes += 1;
                        if let Some(who) = decide(e)? {
                            false_pos += 1;
                            fp_pairs.insert((k, who));
                        }
                    }
                }
                for &k in &order[..n] {
                    let Some(e) = second
                        .get(&k)
                        .and_then(|&i| emb.get(&all[i].path))
                        .and_then(Option::as_ref)
                    else {
                        continue;
                    };
                    if first(k).is_none() {
                        continue;
                    }
                    mated += 1;
                    missed += u64::from(decide(e)?.as_deref() != Some(format!("p{k}").as_str()));
                }
            }
            rows.push(FpirRow {
                n,
                target,
                t,
                probes,
                false_pos,
                distinct: fp_pairs.len() as u64,
                population_above: population_above(t.cosine),
                mated,
                missed,
            });
        }
    }
    if args.json {
        let v: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({ "gallery": r.n, "fpir_target": r.target, "threshold": r.t.cosine, "calibrated_fmr_upper95": r.t.fmr,
                    "needed_fmr": r.t.needed_fmr, "met": r.t.met, "stranger_searches": r.probes, "false_positives": r.false_pos,
                    "distinct_false_pairs": r.distinct,
                    "fpir": r.fpir(), "fpir_upper95": metrics::upper95(r.false_pos, r.probes),
                    "population_pairs_above": r.population_above,
                    "population_fmr": r.population_above as f64 / population_pairs.max(1) as f64,
                    "mated_searches": r.mated, "fnir": r.missed as f64 / r.mated.max(1) as f64 })
            })
            .collect();
        println!(
            "{}",
            json!({ "people": people, "images_without_face": counts.no_face, "seeds": args.seeds, "margin": margin,
                "population_pairs": population_pairs, "rows": v })
        );
    } else {
        println!(
            "LFW: {people} people; gallery = N people's first photos, strangers = everybody else's first photo; \
             {} seeds; margin {margin}; {} photos without a face; {population_pairs} cross-identity pairs of first photos",
            args.seeds, counts.no_face
        );
        println!(
            "| N | target FPIR | threshold (FMR bound) | stranger searches | false positives (distinct pairs) | FPIR (95% upper) | first-photo pairs above (FMR) | FNIR (mated searches) |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {:e} | {:.4} ({:.2e}{}) | {} | {} ({}) | {:.2e} ({:.2e}) | {} ({:.2e}) | {:.2}% ({}) |",
                r.n,
                r.target,
                r.t.cosine,
                r.t.fmr,
                if r.t.met { "" } else { ", cannot be promised" },
                r.probes,
                r.false_pos,
                r.distinct,
                r.fpir(),
                metrics::upper95(r.false_pos, r.probes),
                r.population_above,
                r.population_above as f64 / population_pairs.max(1) as f64,
                100.0 * r.missed as f64 / r.mated.max(1) as f64,
                r.mated
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One gallery size and target of [`fpir`], over all seeds.
struct FpirRow {
    n: usize,
    target: f64,
    t: facegate_policy::FpirThreshold,
    probes: u64,
    false_pos: u64,
    /// Distinct (stranger, enrolled person) pairs behind `false_pos`.
    distinct: u64,
    /// Cross-identity pairs of the first photos scoring at or above the threshold.
    population_above: u64,
    mated: u64,
    missed: u64,
}

impl FpirRow {
    fn fpir(&self) -> f64 {
        self.false_pos as f64 / self.probes.max(1) as f64
    }
}

/// A fixed-seed Fisher-Yates shuffle (xorshift64*), so the galleries repeat run to run.
fn shuffle(v: &mut [usize], seed: u64) {
    let mut x = seed.max(1);
    for i in (1..v.len()).rev() {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        v.swap(i, (r % (i as u64 + 1)) as usize);
    }
}
