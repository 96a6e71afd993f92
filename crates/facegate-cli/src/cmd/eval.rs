//! `facegate eval`: accuracy on labelled data (LFW, WIDER FACE, deepface pairs) and threshold
//! calibration. Data stays where it is (`../shared/eval` by default); nothing is copied.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use facegate_types::{BBox, Embedding, Frame};
use facegate_vision::eval::{self as metrics, Pair};
use facegate_vision::{AnalyseOptions, Detection, Pipeline, StageTimings};
use serde_json::json;

use crate::cli::{CalibrateArgs, Cli, EvalCommand, LfwArgs, PairsArgs, WiderArgs};
use crate::output::progress;

pub fn run(cli: &Cli, cmd: &EvalCommand) -> Result<ExitCode> {
    match cmd {
        EvalCommand::Lfw(a) => lfw(cli, a),
        EvalCommand::Wider(a) => wider(cli, a),
        EvalCommand::Pairs(a) => pairs(cli, a),
        EvalCommand::Calibrate(a) => calibrate(cli, a),
        EvalCommand::Liveness(a) => super::liveness_eval::run(cli, a),
    }
}

fn require(path: &Path, what: &str) -> Result<()> {
    if !path.exists() {
        bail!(
            "{what} not found at {} (the evaluation data lives in ../shared/eval)",
            path.display()
        );
    }
    Ok(())
}

/// The face an LFW-style image is about: the detection nearest the centre among the large ones;
/// when the detector finds none, a centred box (LFW crops are centred on the face).
fn embed_centre_face(pipeline: &mut Pipeline, frame: &Frame) -> Result<(Embedding, bool)> {
    let (cx, cy) = (frame.width() as f32 / 2.0, frame.height() as f32 / 2.0);
    let dets = pipeline.detect(frame)?.to_vec();
    let largest = dets.iter().map(|d| d.bbox.area()).fold(0.0f32, f32::max);
    let pick = dets
        .iter()
        .filter(|d| d.bbox.area() >= 0.3 * largest)
        .min_by(|a, b| {
            let da = (a.bbox.center().x - cx).powi(2) + (a.bbox.center().y - cy).powi(2);
            let db = (b.bbox.center().x - cx).powi(2) + (b.bbox.center().y - cy).powi(2);
            da.total_cmp(&db)
        });
    let (det, fallback) = match pick {
        Some(d) => (*d, false),
        None => {
            let (w, h) = (frame.width() as f32, frame.height() as f32);
            (
                Detection {
                    bbox: BBox::new(0.3 * w, 0.28 * h, 0.7 * w, 0.76 * h),
                    score: 0.0,
                },
                true,
            )
        }
    };
    let mut t = StageTimings::default();
    let opts = AnalyseOptions {
        embed: true,
        liveness: false,
        max_faces: 1,
    };
    let face = pipeline.analyse_face(frame, det, opts, &mut t)?;
    Ok((face.embedding.context("no embedding")?, fallback))
}

/// Embeds every distinct image of `pairs` once. Returns the embeddings and how many images
/// needed the centred fallback box; unreadable images are an error naming the file.
fn embed_all(
    pipeline: &mut Pipeline,
    images: &[PathBuf],
    max_pixels: u64,
) -> Result<(HashMap<PathBuf, Embedding>, usize)> {
    let bar = progress(images.len() as u64, "embedding");
    let mut out = HashMap::with_capacity(images.len());
    let mut fallbacks = 0;
    for path in images {
        let frame = super::read_image(path, max_pixels)?;
        let (e, fb) = embed_centre_face(pipeline, &frame)
            .with_context(|| format!("embedding {}", path.display()))?;
        fallbacks += usize::from(fb);
        out.insert(path.clone(), e);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((out, fallbacks))
}

fn distinct_images(pairs: &[Pair]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = pairs
        .iter()
        .flat_map(|p| [p.a.clone(), p.b.clone()])
        .collect();
    v.sort();
    v.dedup();
    v
}

fn score_pairs(pairs: &[Pair], emb: &HashMap<PathBuf, Embedding>) -> Result<Vec<(f32, bool)>> {
    pairs
        .iter()
        .map(|p| {
            let a = emb
                .get(&p.a)
                .with_context(|| format!("no embedding for {}", p.a.display()))?;
            let b = emb
                .get(&p.b)
                .with_context(|| format!("no embedding for {}", p.b.display()))?;
            Ok((a.cosine(b), p.same))
        })
        .collect()
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
    let no_flip = args.no_flip;
    let mut loaded = super::load(cli, |v| {
        v.liveness = false;
        if no_flip {
            v.flip_tta = false;
        }
    })?;
    let flip = loaded.config.vision.flip_tta;
    let start = Instant::now();
    let (emb, fallbacks) = embed_all(
        &mut loaded.pipeline,
        &distinct_images(&all),
        loaded.config.max_pixels,
    )?;
    let scores = score_pairs(&all, &emb)?;
    let folds: Vec<usize> = all.iter().map(|p| p.fold).collect();
    let k = metrics::kfold(&scores, &folds);
    let (tar2, t2) = metrics::tar_at_far(&scores, 1e-2);
    let (tar3, t3) = metrics::tar_at_far(&scores, 1e-3);
    let secs = start.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            json!({
                "pairs": all.len(), "images": emb.len(), "detector_fallbacks": fallbacks, "flip_tta": flip,
                "accuracy": k.accuracy_mean, "accuracy_std": k.accuracy_std, "fold_accuracy": k.fold_accuracy,
                "fold_thresholds": k.thresholds, "tar_at_far_1e-2": tar2, "threshold_at_far_1e-2": t2,
                "tar_at_far_1e-3": tar3, "threshold_at_far_1e-3": t3, "seconds": secs,
                "model": loaded.pipeline.model_id(),
            })
        );
    } else {
        println!(
            "{}: {} pairs, {} images ({} without a detection, centred box used), flip TTA {}",
            args.pairs.display(),
            all.len(),
            emb.len(),
            fallbacks,
            if flip { "on" } else { "off" }
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

fn calibrate(cli: &Cli, args: &CalibrateArgs) -> Result<ExitCode> {
    require(&args.pairs, "LFW pair list")?;
    let images = args
        .images
        .clone()
        .unwrap_or_else(|| args.pairs.with_file_name("images"));
    let pairs = metrics::parse_lfw_pairs(&args.pairs, &images)?;
    let mut loaded = super::load(cli, |v| v.liveness = false)?;
    let list = distinct_images(&pairs);
    let (emb, _) = embed_all(&mut loaded.pipeline, &list, loaded.config.max_pixels)?;
    // Impostor scores: the list's different pairs plus every pair of its images whose identities
    // (LFW folder names) differ.
    let identity = |p: &Path| p.parent().and_then(|d| d.file_name()).map(|s| s.to_owned());
    let items: Vec<(&PathBuf, &Embedding)> = list
        .iter()
        .filter_map(|p| emb.get(p).map(|e| (p, e)))
        .collect();
    let mut impostor = Vec::with_capacity(items.len() * items.len() / 2);
    for i in 0..items.len() {
        for j in i + 1..items.len() {
            if identity(items[i].0) != identity(items[j].0) {
                impostor.push(items[i].1.cosine(items[j].1));
            }
        }
    }
    let mut points = Vec::new();
    for fmr in [1e-2, 1e-3, 1e-4] {
        let t = metrics::threshold_at_fmr(&impostor, fmr).context("no impostor pairs")?;
        points.push((fmr, t));
    }
    let flip = loaded.config.vision.flip_tta;
    if args.json {
        println!(
            "{}",
            json!({ "images": items.len(), "impostor_pairs": impostor.len(), "flip_tta": flip,
            "points": points.iter().map(|(f, c)| json!({ "fmr": f, "cosine": c })).collect::<Vec<_>>() })
        );
    } else {
        println!(
            "{} images, {} impostor pairs (all cross-identity pairs of {}), flip TTA {}",
            items.len(),
            impostor.len(),
            args.pairs.display(),
            if flip { "on" } else { "off" }
        );
        let body: Vec<String> = points
            .iter()
            .map(|(f, c)| format!("{{ fmr = {f:e}, cosine = {c:.4} }}"))
            .collect();
        println!("calibration = [{}]", body.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
