//! Where the tight grey crops of LFW View 1 DevTest lose accuracy (README, "ID photos"): the
//! same 1,549 images embedded several ways, each pair list scored as `facegate eval lfw` scores
//! DevTest (one fold, best threshold). A measurement, not a test: it asserts nothing and prints
//! only counts and accuracies (no landmark, image or template).
//!
//! `cargo run --release -p facegate-benches --example tight_crop_losses` (about 8 min on two
//! cores; needs `deploy/dev.sh setup` and `../shared/eval`).
#![allow(clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;

use facegate_capture::decode_image_file;
use facegate_types::{Embedding, Frame, Landmarks5, Point};
use facegate_vision::centerface::CenterFace;
use facegate_vision::eval::{
    Pair, TIGHT_CROP_GAIN, accuracy_at, best_threshold, parse_lfw_pairs, tight_grey_crop,
    unscorable,
};
use facegate_vision::photo::with_margin;
use facegate_vision::preprocess::Border;
use facegate_vision::runtime::ModelSession;
use facegate_vision::{AnalyseOptions, Manifest, Pipeline, Role, VisionConfig};

type Templates = HashMap<PathBuf, Option<Embedding>>;

/// The whole image grey with the crop's contrast (what the crop does, without cutting).
fn grey(frame: &Frame) -> Frame {
    let (w, h) = (frame.width(), frame.height());
    let mut g = Vec::with_capacity((w * h) as usize);
    for y in 0..h {
        for p in frame.row(y)[..w as usize * 3].chunks_exact(3) {
            g.push(0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]));
        }
    }
    let mean = g.iter().sum::<f32>() / g.len().max(1) as f32;
    let data = g
        .iter()
        .flat_map(|v| {
            let v = ((v - mean) * TIGHT_CROP_GAIN + mean)
                .round()
                .clamp(0.0, 255.0) as u8;
            [v, v, v]
        })
        .collect();
    Frame::from_rgb8(w, h, data).expect("same size")
}

fn shift(l: &Landmarks5, dx: f32, dy: f32) -> Landmarks5 {
    Landmarks5(l.points().map(|p| Point::new(p.x + dx, p.y + dy)))
}

fn mean(a: &Landmarks5, b: &Landmarks5) -> Landmarks5 {
    Landmarks5(std::array::from_fn(|k| {
        let (p, q) = (a.points()[k], b.points()[k]);
        Point::new((p.x + q.x) / 2.0, (p.y + q.y) / 2.0)
    }))
}

/// The frame mirrored left to right.
fn mirror(frame: &Frame) -> Frame {
    let (w, h) = (frame.width(), frame.height());
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        let row = frame.row(y);
        for x in (0..w as usize).rev() {
            data.extend_from_slice(&row[x * 3..x * 3 + 3]);
        }
    }
    Frame::from_rgb8(w, h, data).expect("same size")
}

fn accuracy(pairs: &[Pair], a: &Templates, b: &Templates) -> f64 {
    let scores: Vec<(f32, bool)> = pairs
        .iter()
        .map(|p| match (&a[&p.a], &b[&p.b]) {
            (Some(x), Some(y)) => (x.cosine(y), p.same),
            _ => (unscorable(p.same), p.same),
        })
        .collect();
    accuracy_at(&scores, best_threshold(&scores))
}

fn main() {
    let manifest = Manifest::load(&facegate_benches::workspace_root().join("models/manifest.toml"))
        .expect("models/manifest.toml (run deploy/dev.sh setup)");
    let config = VisionConfig {
        flip_tta: true,
        ..VisionConfig::default()
    };
    let mut p = Pipeline::load(&manifest, &config).expect("the pipeline");
    let spec = manifest
        .model(Role::FallbackDetector)
        .expect("a fallback detector");
    let mut cf = CenterFace::new(ModelSession::load(&manifest, spec).expect("CenterFace"))
        .expect("CenterFace");
    let eval = facegate_benches::eval_dir();
    let pairs = parse_lfw_pairs(&eval.join("lfw/pairsDevTest.txt"), &eval.join("lfw/images"))
        .expect("LFW View 1 DevTest (../shared/eval)");
    let mut images: Vec<PathBuf> = pairs
        .iter()
        .flat_map(|p| [p.a.clone(), p.b.clone()])
        .collect();
    images.sort();
    images.dedup();
    let ways = [
        "uncropped (embed_largest)",
        "uncropped, grey x1.8, its landmarks",
        "tight crop (the product: margin, fallback)",
        "tight crop, the uncropped image's landmarks, black outside",
        "tight crop, the uncropped image's landmarks, grey margin outside",
        "tight crop, the uncropped image's landmarks, edge replicated",
        "tight crop, its own landmarks, black outside",
        "tight crop, its own landmarks, edge replicated",
        "tight crop, its own landmarks, reflected",
        "tight crop, its own landmarks averaged with the mirrored crop's",
        "tight crop, CenterFace's landmarks",
    ];
    let mut t: Vec<Templates> = ways.iter().map(|_| Templates::new()).collect();
    let look = AnalyseOptions {
        embed: false,
        liveness: false,
        max_faces: 16,
    };
    let (mut error_sum, mut compared, mut far) = (0.0f64, 0usize, 0usize);
    let mut faces = Vec::new();
    let mut found = Vec::new();
    let start = std::time::Instant::now();
    for (i, path) in images.iter().enumerate() {
        let full = decode_image_file(path, 40_000_000).expect("an LFW image");
        let crop = tight_grey_crop(&full).expect("250x250");
        let (ox, oy) = (
            ((full.width() - crop.width()) / 2) as f32,
            ((full.height() - crop.height()) / 2) as f32,
        );
        let f = p.embed_largest(&full).ok();
        let lf = f.as_ref().map(|f| f.landmarks);
        t[0].insert(path.clone(), f.and_then(|f| f.embedding));
        let g = grey(&full);
        t[1].insert(
            path.clone(),
            lf.and_then(|l| p.embed_at(&g, &l, Border::Zero).ok()),
        );
        let tight = p.embed_largest(&crop).ok();
        let lt = tight.as_ref().map(|f| f.landmarks);
        t[2].insert(path.clone(), tight.and_then(|f| f.embedding));
        let oracle = lf.map(|l| shift(&l, -ox, -oy));
        let (canvas, off) = with_margin(&crop, 4.0 / 3.0);
        let at = |p: &mut Pipeline, frame: &Frame, l: Option<Landmarks5>, b: Border| {
            l.and_then(|l| p.embed_at(frame, &l, b).ok())
        };
        t[3].insert(path.clone(), at(&mut p, &crop, oracle, Border::Zero));
        let on_canvas = oracle.map(|l| shift(&l, off.x, off.y));
        t[4].insert(path.clone(), at(&mut p, &canvas, on_canvas, Border::Zero));
        t[5].insert(path.clone(), at(&mut p, &crop, oracle, Border::Replicate));
        t[6].insert(path.clone(), at(&mut p, &crop, lt, Border::Zero));
        t[7].insert(path.clone(), at(&mut p, &crop, lt, Border::Replicate));
        t[8].insert(path.clone(), at(&mut p, &crop, lt, Border::Reflect));
        // The crop's own face on its margin, located again on the mirrored canvas.
        let photo = p.analyse_photo(&crop, look, &mut faces).expect("analyse");
        let own = faces
            .iter()
            .max_by(|a, b| a.detection.bbox.area().total_cmp(&b.detection.bbox.area()))
            .map(|f| (f.landmarks, f.detection.bbox));
        let frame = photo.frame.into_owned();
        let flipped = own.and_then(|(l, b)| {
            let w = frame.width() as f32;
            let m = mirror(&frame);
            let mb = facegate_types::BBox::new(w - 1.0 - b.x2, b.y1, w - 1.0 - b.x1, b.y2);
            let q = p.locate_landmarks(&m, &mb).ok()?;
            let q = q.points().map(|p| Point::new(w - 1.0 - p.x, p.y));
            Some(mean(&l, &Landmarks5([q[1], q[0], q[2], q[4], q[3]])))
        });
        t[9].insert(path.clone(), at(&mut p, &frame, flipped, Border::Zero));
        let centerface = own.and_then(|(_, b)| {
            cf.detect_landmarked(&frame, &mut found).ok()?;
            found
                .iter()
                .filter(|c| c.detection.bbox.iou(&b) > 0.3)
                .max_by(|x, y| {
                    x.detection
                        .bbox
                        .iou(&b)
                        .total_cmp(&y.detection.bbox.iou(&b))
                })
                .map(|c| c.landmarks)
        });
        t[10].insert(
            path.clone(),
            at(
                &mut p,
                &frame,
                centerface.or(own.map(|o| o.0)),
                Border::Zero,
            ),
        );
        if let (Some(a), Some(b)) = (oracle, lt) {
            let eye = a.left_eye().x - a.right_eye().x;
            let eye = (eye.powi(2) + (a.left_eye().y - a.right_eye().y).powi(2))
                .sqrt()
                .max(1.0);
            let e = a
                .points()
                .iter()
                .zip(b.points())
                .map(|(x, y)| ((x.x - y.x).powi(2) + (x.y - y.y).powi(2)).sqrt())
                .sum::<f32>()
                / 5.0
                / eye;
            error_sum += f64::from(e);
            compared += 1;
            far += usize::from(e > 0.1);
        }
        if i % 250 == 0 {
            eprintln!("{i} of {} images, {:.0?}", images.len(), start.elapsed());
        }
    }
    println!(
        "LFW View 1 DevTest: {} pairs, {} images, flip TTA on; {:.0?}",
        pairs.len(),
        images.len(),
        start.elapsed()
    );
    println!(
        "the crop's own landmarks against the uncropped image's (moved into the crop): mean {:.3} \
         eye distances over {compared} images, {far} above 0.1",
        error_sum / compared.max(1) as f64
    );
    println!("| way | faces | both images | first image only, second uncropped |");
    println!("|---|---|---|---|");
    for (way, e) in ways.iter().zip(&t) {
        println!(
            "| {way} | {} | {:.2}% | {:.2}% |",
            e.values().filter(|e| e.is_some()).count(),
            100.0 * accuracy(&pairs, e, e),
            100.0 * accuracy(&pairs, e, &t[0])
        );
    }
}
