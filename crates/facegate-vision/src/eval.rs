//! Accuracy protocols: LFW pair lists, the deepface pair CSVs, WIDER FACE ground truth, and the
//! metrics reported for them (10-fold accuracy, TAR at a FAR, thresholds at a false-match rate,
//! detection recall/precision/AP). Pure functions over scores; the CLI and the benches feed them.

use std::path::{Path, PathBuf};

use facegate_types::BBox;

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
