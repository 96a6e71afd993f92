//! Accuracy protocols: LFW pair lists, the deepface pair CSVs, WIDER FACE ground truth, and the
//! metrics reported for them (10-fold accuracy, TAR at a FAR, thresholds at a false-match rate,
//! detection recall/precision/AP). Pure functions over scores; the CLI and the benches feed them.

use std::path::{Path, PathBuf};

use facegate_types::{BBox, Frame};

use crate::VisionError;

/// One labelled comparison of two image files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub a: PathBuf,
    pub b: PathBuf,
    pub same: bool,
    /// Cross-validation fold (LFW View 2), 0 when the list has none.
    pub fold: usize,
}

fn bad(path: &Path, line: usize, reason: impl Into<String>) -> VisionError {
    VisionError::Manifest {
        path: path.to_path_buf(),
        reason: format!("line {line}: {}", reason.into()),
    }
}

/// Parses an LFW pair list (`pairs.txt`, `pairsDevTrain.txt`, `pairsDevTest.txt`); image paths
/// are resolved under `images`. Folds follow the header (`folds per_class`, or a single count).
pub fn parse_lfw_pairs(path: &Path, images: &Path) -> Result<Vec<Pair>, VisionError> {
    let text = std::fs::read_to_string(path).map_err(|source| VisionError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| bad(path, 1, "empty file"))?;
    let nums: Vec<usize> = header
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| bad(path, 1, "header is not numbers"))?;
    let per_fold = match nums.as_slice() {
        [_, per_class] => 2 * per_class,
        [per_class] => 2 * per_class,
        _ => {
            return Err(bad(
                path,
                1,
                "header must be `folds per_class` or `per_class`",
            ));
        }
    };
    let img = |name: &str, idx: &str, line: usize| -> Result<PathBuf, VisionError> {
        let i: u32 = idx
            .parse()
            .map_err(|_| bad(path, line, format!("image number {idx:?}")))?;
        Ok(images.join(name).join(format!("{name}_{i:04}.jpg")))
    };
    let mut pairs = Vec::new();
    for (n, (i, line)) in lines.enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (a, b, same) = match f.as_slice() {
            [name, i1, i2] => (img(name, i1, i + 1)?, img(name, i2, i + 1)?, true),
            [n1, i1, n2, i2] => (img(n1, i1, i + 1)?, img(n2, i2, i + 1)?, false),
            _ => return Err(bad(path, i + 1, "expected 3 or 4 fields")),
        };
        pairs.push(Pair {
            a,
            b,
            same,
            fold: n / per_fold.max(1),
        });
    }
    Ok(pairs)
}

/// Parses deepface's `master.csv` / `pivot.csv` (`file_x,file_y,Decision` with `Yes`/`No`);
/// image names are resolved under `images`.
pub fn parse_deepface_pairs(path: &Path, images: &Path) -> Result<Vec<Pair>, VisionError> {
    let text = std::fs::read_to_string(path).map_err(|source| VisionError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut lines = text.lines().enumerate();
    let (_, header) = lines.next().ok_or_else(|| bad(path, 1, "empty file"))?;
    let cols: Vec<String> = header
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    let find = |names: &[&str]| cols.iter().position(|c| names.contains(&c.as_str()));
    let (ia, ib, id) = match (
        find(&["file_x", "img1"]),
        find(&["file_y", "img2"]),
        find(&["decision", "label"]),
    ) {
        (Some(a), Some(b), Some(d)) => (a, b, d),
        _ => {
            return Err(bad(
                path,
                1,
                format!("expected columns file_x,file_y,Decision, found {header:?}"),
            ));
        }
    };
    let mut pairs = Vec::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let get = |k: usize| {
            f.get(k)
                .copied()
                .ok_or_else(|| bad(path, i + 1, "missing field"))
        };
        let file = |s: &str| images.join(Path::new(s).file_name().unwrap_or_default());
        let same = match get(id)?.to_ascii_lowercase().as_str() {
            "yes" | "1" | "true" => true,
            "no" | "0" | "false" => false,
            other => return Err(bad(path, i + 1, format!("decision {other:?}"))),
        };
        pairs.push(Pair {
            a: file(get(ia)?),
            b: file(get(ib)?),
            same,
            fold: 0,
        });
    }
    Ok(pairs)
}

/// Accuracy at `threshold` (same when score >= threshold).
pub fn accuracy_at(scores: &[(f32, bool)], threshold: f32) -> f64 {
    if scores.is_empty() {
        return 0.0;
    }
    let right = scores
        .iter()
        .filter(|(s, same)| (*s >= threshold) == *same)
        .count();
    right as f64 / scores.len() as f64
}

/// The threshold with the best accuracy on `scores` (midpoints between sorted scores).
pub fn best_threshold(scores: &[(f32, bool)]) -> f32 {
    let mut sorted: Vec<(f32, bool)> = scores.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sweep: threshold just above sorted[k] means items 0..=k are "different".
    let total_same = sorted.iter().filter(|s| s.1).count() as i64;
    let mut correct = total_same; // threshold below everything: all predicted same
    let mut best = (correct, sorted.first().map_or(0.0, |s| s.0 - 1e-4));
    for k in 0..sorted.len() {
        correct += if sorted[k].1 { -1 } else { 1 };
        let next = sorted.get(k + 1).map_or(sorted[k].0 + 1e-4, |n| n.0);
        if next > sorted[k].0 && correct > best.0 {
            best = (correct, (sorted[k].0 + next) / 2.0);
        }
    }
    best.1
}

/// Result of a k-fold evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct KFold {
    pub accuracy_mean: f64,
    pub accuracy_std: f64,
    /// Threshold chosen on the other folds, per fold.
    pub thresholds: Vec<f32>,
    pub fold_accuracy: Vec<f64>,
}

/// LFW-style cross-validation: for each fold, pick the best threshold on the others and
/// measure accuracy on it. `scores[i]` belongs to fold `folds[i]`.
pub fn kfold(scores: &[(f32, bool)], folds: &[usize]) -> KFold {
    let n_folds = folds.iter().copied().max().map_or(0, |m| m + 1);
    let mut thresholds = Vec::new();
    let mut fold_accuracy = Vec::new();
    for f in 0..n_folds {
        let train: Vec<(f32, bool)> = scores
            .iter()
            .zip(folds)
            .filter(|(_, k)| **k != f)
            .map(|(s, _)| *s)
            .collect();
        let test: Vec<(f32, bool)> = scores
            .iter()
            .zip(folds)
            .filter(|(_, k)| **k == f)
            .map(|(s, _)| *s)
            .collect();
        let t = if train.is_empty() {
            best_threshold(&test)
        } else {
            best_threshold(&train)
        };
        thresholds.push(t);
        fold_accuracy.push(accuracy_at(&test, t));
    }
    let n = fold_accuracy.len().max(1) as f64;
    let mean = fold_accuracy.iter().sum::<f64>() / n;
    let var = fold_accuracy
        .iter()
        .map(|a| (a - mean).powi(2))
        .sum::<f64>()
        / n;
    KFold {
        accuracy_mean: mean,
        accuracy_std: var.sqrt(),
        thresholds,
        fold_accuracy,
    }
}

/// The smallest threshold whose false-match rate on `impostor` scores is at most `fmr`
/// (scores strictly above it are matches). `None` for an empty list.
pub fn threshold_at_fmr(impostor: &[f32], fmr: f64) -> Option<f32> {
    if impostor.is_empty() {
        return None;
    }
    let mut s = impostor.to_vec();
    s.sort_by(|a, b| b.total_cmp(a));
    let allowed = (fmr * s.len() as f64).floor() as usize;
    Some(s[allowed.min(s.len() - 1)])
}

/// True-accept rate at a false-accept rate: genuine scores strictly above the impostor
/// threshold for `far`. Returns (tar, threshold).
pub fn tar_at_far(scores: &[(f32, bool)], far: f64) -> (f64, f32) {
    let impostor: Vec<f32> = scores.iter().filter(|s| !s.1).map(|s| s.0).collect();
    let genuine: Vec<f32> = scores.iter().filter(|s| s.1).map(|s| s.0).collect();
    let Some(t) = threshold_at_fmr(&impostor, far) else {
        return (0.0, 1.0);
    };
    let tar = genuine.iter().filter(|g| **g > t).count() as f64 / genuine.len().max(1) as f64;
    (tar, t)
}

/// Width and height of the ID-photo protocol's crop: the centre of a 250x250 LFW image cut so
/// that the face fills it (forehead and chin cut), as a site's staff photos often are.
pub const TIGHT_CROP: (u32, u32) = (84, 100);

/// The contrast gain of the ID-photo protocol (about the crop's mean grey, clipped to 0..=255).
pub const TIGHT_CROP_GAIN: f32 = 1.8;

/// The ID-photo protocol's version of an LFW image: the centre [`TIGHT_CROP`], grey
/// (BT.601 weights), contrast stretched by [`TIGHT_CROP_GAIN`] about its mean with clipping
/// (hard light). `None` when the frame is smaller than the crop.
pub fn tight_grey_crop(frame: &Frame) -> Option<Frame> {
    let (cw, ch) = TIGHT_CROP;
    if frame.width() < cw || frame.height() < ch {
        return None;
    }
    let (x0, y0) = ((frame.width() - cw) / 2, (frame.height() - ch) / 2);
    let mut grey = Vec::with_capacity((cw * ch) as usize);
    for y in y0..y0 + ch {
        let row = &frame.row(y)[x0 as usize * 3..(x0 + cw) as usize * 3];
        grey.extend(
            row.chunks_exact(3).map(|p| {
                0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])
            }),
        );
    }
    let mean = grey.iter().sum::<f32>() / grey.len() as f32;
    let data: Vec<u8> = grey
        .iter()
        .flat_map(|g| {
            let v = ((g - mean) * TIGHT_CROP_GAIN + mean)
                .round()
                .clamp(0.0, 255.0) as u8;
            [v, v, v]
        })
        .collect();
    Frame::from_rgb8(cw, ch, data).ok()
}

/// The score given to a pair with an image in which no face was found: it is an error at
/// every threshold (a same pair scores below any cosine, a different pair above any), so an
/// evaluation counts it against the pipeline instead of scoring a guessed box.
pub fn unscorable(same: bool) -> f32 {
    if same { -2.0 } else { 2.0 }
}

/// One LFW image: its identity (the folder name) and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LfwImage {
    pub identity: String,
    pub path: PathBuf,
}

/// Every `.jpg` under `images/<Name>/`, sorted by identity and file name.
pub fn lfw_images(images: &Path) -> Result<Vec<LfwImage>, VisionError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| VisionError::Io { path, source }
    };
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(images)
        .map_err(io(images))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let identity = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("jpg")))
            .collect();
        files.sort();
        out.extend(files.into_iter().map(|path| LfwImage {
            identity: identity.clone(),
            path,
        }));
    }
    Ok(out)
}

/// The open-set split of LFW: the first image of every identity (sorted by name) is the pool of
/// enrolled photos and strangers' probes; every other image, except those named in `exclude`
/// (the images the tests use), is the calibration set. The two never share an image, so the
/// galleries measured with the first never saw the impostor scores calibrated on the second.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LfwSplit {
    /// Indices into the image list: the first image of each identity.
    pub firsts: Vec<usize>,
    /// Indices of the calibration images.
    pub calibration: Vec<usize>,
    /// Images left out because `exclude` names them.
    pub excluded: usize,
}

pub fn lfw_split(images: &[LfwImage], exclude: &std::collections::HashSet<PathBuf>) -> LfwSplit {
    let mut split = LfwSplit::default();
    for (i, img) in images.iter().enumerate() {
        let first = i == 0 || images[i - 1].identity != img.identity;
        if first {
            split.firsts.push(i);
        } else if exclude.contains(&img.path) {
            split.excluded += 1;
        } else {
            split.calibration.push(i);
        }
    }
    split
}

/// The false-match rates `facegate eval calibrate` measures: 1, 2 and 5 per decade from 1e-2
/// down to 1e-7.
pub const CALIBRATION_FMRS: [f64; 16] = [
    1e-2, 5e-3, 2e-3, 1e-3, 5e-4, 2e-4, 1e-4, 5e-5, 2e-5, 1e-5, 5e-6, 2e-6, 1e-6, 5e-7, 2e-7, 1e-7,
];

/// One measured operating point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationRow {
    pub fmr: f64,
    pub cosine: f32,
    /// Impostor pairs scoring strictly above `cosine`.
    pub above: u64,
    /// All impostor pairs.
    pub pairs: u64,
    /// One-sided 95 % upper bound of the true false-match rate given `above` of `pairs`.
    pub fmr_upper95: f64,
}

/// The one-sided 95 % upper confidence bound of a rate after `k` events in `n` trials (Poisson,
/// with the Wilson-Hilferty approximation of the chi-square quantile: within 1 % of the exact
/// bound from k = 0 on).
pub fn upper95(k: u64, n: u64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let nu = 2.0 * k as f64 + 2.0;
    let a = 2.0 / (9.0 * nu);
    let chi2 = nu * (1.0 - a + 1.644_853_6 * a.sqrt()).powi(3);
    (chi2 / 2.0 / n as f64).min(1.0)
}

/// The one-sided 95 % lower confidence bound of a rate after `k` events in `n` trials (Poisson,
/// Wilson-Hilferty as [`upper95`]; 0 for `k = 0`): a measured rate whose lower bound is above a
/// target misses the target with 95 % confidence.
pub fn lower95(k: u64, n: u64) -> f64 {
    if n == 0 || k == 0 {
        return 0.0;
    }
    if k == 1 {
        // Exact: P(Poisson(m) >= 1) = 0.05 at m = -ln 0.95 (the approximation is poor here).
        return (-(0.95f64.ln()) / n as f64).min(1.0);
    }
    let nu = 2.0 * k as f64;
    let a = 2.0 / (9.0 * nu);
    let chi2 = nu * (1.0 - a - 1.644_853_6 * a.sqrt()).max(0.0).powi(3);
    (chi2 / 2.0 / n as f64).min(1.0)
}

/// Thresholds at each of `fmrs` from the impostor scores above some floor (`top`, any order)
/// out of `total` impostor pairs, as [`threshold_at_fmr`] picks them. `None` when `top` holds
/// too few scores for the loosest rate (the floor was too high).
pub fn calibrate_from_top(
    mut top: Vec<f32>,
    total: u64,
    fmrs: &[f64],
) -> Option<Vec<CalibrationRow>> {
    top.sort_by(|a, b| b.total_cmp(a));
    let mut rows = Vec::with_capacity(fmrs.len());
    for &fmr in fmrs {
        let allowed = (fmr * total as f64).floor() as usize;
        let cosine = *top.get(allowed)?;
        let above = top.iter().take_while(|s| **s > cosine).count() as u64;
        rows.push(CalibrationRow {
            fmr,
            cosine,
            above,
            pairs: total,
            fmr_upper95: upper95(above, total),
        });
    }
    Some(rows)
}

/// One WIDER FACE ground-truth box with its subset membership.
#[derive(Debug, Clone, PartialEq)]
pub struct WiderBox {
    pub bbox: BBox,
    pub easy: bool,
    pub medium: bool,
    pub hard: bool,
}

/// Parses `gt.tsv` (`image x y w h easy medium hard`, header line optional) into
/// (image path under `images`, boxes) in file order.
pub fn parse_wider(
    path: &Path,
    images: &Path,
) -> Result<Vec<(PathBuf, Vec<WiderBox>)>, VisionError> {
    let text = std::fs::read_to_string(path).map_err(|source| VisionError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out: Vec<(PathBuf, Vec<WiderBox>)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split('\t').map(str::trim).collect();
        if f.len() < 8 || f[1].parse::<f32>().is_err() {
            if i == 0 || line.trim().is_empty() {
                continue;
            }
            return Err(bad(
                path,
                i + 1,
                "expected image, x, y, w, h, easy, medium, hard",
            ));
        }
        let num = |k: usize| {
            f[k].parse::<f32>()
                .map_err(|_| bad(path, i + 1, format!("field {k}: {:?}", f[k])))
        };
        let (x, y, w, h) = (num(1)?, num(2)?, num(3)?, num(4)?);
        let flag = |k: usize| f[k] == "1";
        let b = WiderBox {
            bbox: BBox::new(x, y, x + w, y + h),
            easy: flag(5),
            medium: flag(6),
            hard: flag(7),
        };
        let img = images.join(f[0]);
        match out.last_mut() {
            Some((p, boxes)) if *p == img => boxes.push(b),
            _ => out.push((img, vec![b])),
        }
    }
    Ok(out)
}

/// Detection results for one subset.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DetectionScore {
    pub recall: f64,
    pub precision: f64,
    pub average_precision: f64,
    pub faces: usize,
}

/// Ground truth and scored detections of one image.
pub type ImageDetections = (Vec<WiderBox>, Vec<(BBox, f32)>);

/// WIDER-style evaluation of one subset: a detection matching (IoU >= 0.5) a face of the subset
/// is a true positive, one matching a face outside it is ignored, the rest are false positives.
/// `per_image[i]` pairs the ground truth with the detections (box, score) of one image.
pub fn evaluate_detection(
    per_image: &[ImageDetections],
    subset: fn(&WiderBox) -> bool,
) -> DetectionScore {
    let mut scored: Vec<(f32, bool)> = Vec::new();
    let mut faces = 0usize;
    for (gt, dets) in per_image {
        faces += gt.iter().filter(|g| subset(g)).count();
        let mut taken = vec![false; gt.len()];
        let mut dets = dets.clone();
        dets.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (d, score) in dets {
            let best = gt
                .iter()
                .enumerate()
                .filter(|(k, _)| !taken[*k])
                .map(|(k, g)| (k, g.bbox.iou(&d)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            match best {
                Some((k, iou)) if iou >= 0.5 => {
                    taken[k] = true;
                    if subset(&gt[k]) {
                        scored.push((score, true));
                    }
                }
                _ => scored.push((score, false)),
            }
        }
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp, mut ap, mut prev_recall) = (0usize, 0usize, 0.0f64, 0.0f64);
    let mut precisions = Vec::with_capacity(scored.len());
    let mut recalls = Vec::with_capacity(scored.len());
    for (_, hit) in &scored {
        if *hit {
            tp += 1
        } else {
            fp += 1
        }
        precisions.push(tp as f64 / (tp + fp) as f64);
        recalls.push(tp as f64 / faces.max(1) as f64);
    }
    // Interpolated AP: precision envelope from the right.
    for i in (0..precisions.len().saturating_sub(1)).rev() {
        precisions[i] = precisions[i].max(precisions[i + 1]);
    }
    for (p, r) in precisions.iter().zip(&recalls) {
        ap += (r - prev_recall) * p;
        prev_recall = *r;
    }
    DetectionScore {
        recall: tp as f64 / faces.max(1) as f64,
        precision: if tp + fp == 0 {
            0.0
        } else {
            tp as f64 / (tp + fp) as f64
        },
        average_precision: ap,
        faces,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lfw_pairs_with_folds() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pairs.txt");
        std::fs::write(
            &p,
            "2\t1\nAbel\t1\t2\nAbel\t1\tZed\t3\nBo\t4\t5\nBo\t1\tCy\t2\n",
        )
        .unwrap();
        let pairs = parse_lfw_pairs(&p, Path::new("/img")).unwrap();
        assert_eq!(pairs.len(), 4);
        assert_eq!(pairs[0].a, PathBuf::from("/img/Abel/Abel_0001.jpg"));
        assert!(pairs[0].same && !pairs[1].same);
        assert_eq!(pairs[1].b, PathBuf::from("/img/Zed/Zed_0003.jpg"));
        assert_eq!(
            pairs.iter().map(|p| p.fold).collect::<Vec<_>>(),
            vec![0, 0, 1, 1]
        );
        std::fs::write(&p, "1\nAbel\tx\t2\n").unwrap();
        assert!(
            parse_lfw_pairs(&p, Path::new("/img"))
                .unwrap_err()
                .to_string()
                .contains("line 2")
        );
    }

    #[test]
    fn best_threshold_separates_separable_scores() {
        let s = [(0.1, false), (0.2, false), (0.6, true), (0.9, true)];
        let t = best_threshold(&s);
        assert!(t > 0.2 && t < 0.6, "{t}");
        assert_eq!(accuracy_at(&s, t), 1.0);
    }

    #[test]
    fn kfold_uses_other_folds_to_choose_thresholds() {
        let s = [
            (0.1, false),
            (0.8, true),
            (0.2, false),
            (0.7, true),
            (0.75, false),
            (0.9, true),
        ];
        let k = kfold(&s, &[0, 0, 1, 1, 2, 2]);
        assert_eq!(k.thresholds.len(), 3);
        assert_eq!(k.fold_accuracy[0], 1.0);
        assert!(k.fold_accuracy[2] < 1.0);
    }

    #[test]
    fn fmr_threshold_and_tar() {
        let impostor: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        assert_eq!(threshold_at_fmr(&impostor, 0.01), Some(0.989));
        let mut s: Vec<(f32, bool)> = impostor.iter().map(|v| (*v * 0.5, false)).collect();
        s.extend([(0.3, true), (0.6, true)]);
        let (tar, t) = tar_at_far(&s, 0.001);
        assert!((t - 0.499).abs() < 1e-6, "{t}"); // one impostor (0.4995) above it: FMR 1e-3
        assert_eq!(tar, 0.5);
    }

    #[test]
    fn the_tight_crop_is_the_grey_centre_with_harsh_contrast() {
        // A 250x250 frame whose red channel is the column and green the row.
        let mut data = Vec::with_capacity(250 * 250 * 3);
        for y in 0..250u32 {
            for x in 0..250u32 {
                data.extend([x as u8, y as u8, 100]);
            }
        }
        let f = Frame::from_rgb8(250, 250, data).unwrap();
        let c = tight_grey_crop(&f).unwrap();
        assert_eq!((c.width(), c.height()), TIGHT_CROP);
        let px = |x: u32, y: u32| &c.row(y)[x as usize * 3..x as usize * 3 + 3];
        assert!(px(10, 20).iter().all(|v| *v == px(10, 20)[0]), "grey");
        // Grey of the crop's first pixel (frame 83, 75) and the crop's mean, stretched by 1.8.
        let g = |x: f32, y: f32| 0.299 * x + 0.587 * y + 0.114 * 100.0;
        let mean = g(83.0 + 41.5, 75.0 + 49.5);
        let want = ((g(83.0, 75.0) - mean) * TIGHT_CROP_GAIN + mean).round();
        assert!(
            (f32::from(px(0, 0)[0]) - want).abs() <= 1.0,
            "{:?} vs {want}",
            px(0, 0)
        );
        assert!(
            tight_grey_crop(&Frame::from_rgb8(80, 80, vec![0; 80 * 80 * 3]).unwrap()).is_none()
        );
        // Unscorable pairs are wrong at any threshold.
        for t in [-1.0, 0.0, 0.4, 1.0] {
            assert_eq!(
                accuracy_at(&[(unscorable(true), true), (unscorable(false), false)], t),
                0.0
            );
        }
    }

    #[test]
    fn calibration_from_the_top_scores_matches_the_full_sort() {
        let all: Vec<f32> = (0..100_000)
            .map(|i| ((i * 7919) % 100_000) as f32 / 1e5)
            .collect();
        let fmrs = [1e-2, 1e-3, 1e-4];
        let top: Vec<f32> = all.iter().copied().filter(|s| *s > 0.9).collect();
        let rows = calibrate_from_top(top, all.len() as u64, &fmrs).unwrap();
        for r in &rows {
            assert_eq!(Some(r.cosine), threshold_at_fmr(&all, r.fmr));
            assert!(r.above as f64 <= r.fmr * all.len() as f64);
            assert!(r.fmr_upper95 > r.above as f64 / 1e5);
        }
        // A floor above the loosest threshold cannot calibrate it.
        let top: Vec<f32> = all.iter().copied().filter(|s| *s > 0.995).collect();
        assert!(calibrate_from_top(top, all.len() as u64, &fmrs).is_none());
        // Known Poisson bounds: k = 0 -> 3.00 / n, k = 2 -> 6.30 / n, k = 10 -> 17.0 / n.
        for (k, b) in [(0, 2.996), (2, 6.296), (10, 16.96)] {
            let got = upper95(k, 1_000_000) * 1e6;
            assert!((got - b).abs() / b < 0.01, "k {k}: {got} vs {b}");
        }
        // Lower bounds: k = 1 -> 0.0513 / n, 2 -> 0.355 / n, 10 -> 5.425 / n, 32 -> 23.29 / n
        // (within 3 %, on the low side).
        assert_eq!(lower95(0, 1000), 0.0);
        for (k, b) in [(1, 0.05129), (2, 0.3554), (10, 5.425), (32, 23.29)] {
            let got = lower95(k, 1_000_000) * 1e6;
            assert!(got <= b * 1.001 && got >= 0.97 * b, "k {k}: {got} vs {b}");
        }
    }

    #[test]
    fn the_lfw_split_keeps_first_images_apart_from_calibration() {
        let img = |id: &str, n: u32| LfwImage {
            identity: id.into(),
            path: PathBuf::from(format!("/{id}/{id}_{n:04}.jpg")),
        };
        let images = vec![
            img("A", 1),
            img("A", 2),
            img("A", 3),
            img("B", 1),
            img("C", 1),
            img("C", 2),
        ];
        let exclude = [PathBuf::from("/A/A_0003.jpg")].into_iter().collect();
        let s = lfw_split(&images, &exclude);
        assert_eq!(s.firsts, vec![0, 3, 4]);
        assert_eq!(s.calibration, vec![1, 5]);
        assert_eq!(s.excluded, 1);
    }

    #[test]
    fn detection_ap_counts_hits_misses_and_ignores() {
        let g = |x: f32, easy: bool| WiderBox {
            bbox: BBox::new(x, 0.0, x + 10.0, 10.0),
            easy,
            medium: true,
            hard: true,
        };
        let gt = vec![g(0.0, true), g(100.0, true), g(200.0, false)];
        let dets = vec![
            (BBox::new(0.0, 0.0, 10.0, 10.0), 0.9),
            (BBox::new(200.0, 0.0, 210.0, 10.0), 0.8),
            (BBox::new(500.0, 0.0, 510.0, 10.0), 0.7),
        ];
        let s = evaluate_detection(&[(gt, dets)], |b| b.easy);
        assert_eq!(s.faces, 2);
        assert_eq!(s.recall, 0.5);
        assert_eq!(s.precision, 0.5); // the ignored match counts neither way
        assert!((s.average_precision - 0.5).abs() < 1e-9);
    }
}
