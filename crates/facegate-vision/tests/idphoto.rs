//! ID photos (issue 7): the fallback detector on a real photo, and the tight grey crops of LFW
//! View 1 DevTest, built here from `../shared/eval/lfw` at test time (nothing is written).
//! Needs the assets fetched by `deploy/dev.sh setup`; the LFW checks need `../shared/eval` and
//! fail without it when `FACEGATE_REQUIRE_EVAL` is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;

use facegate_capture::decode_image_file;
use facegate_types::{Embedding, Frame};
use facegate_vision::centerface::CenterFace;
use facegate_vision::eval::{accuracy_at, best_threshold, parse_lfw_pairs, tight_grey_crop};
use facegate_vision::runtime::ModelSession;
use facegate_vision::{AnalyseOptions, Manifest, PhotoPass, Pipeline, Role, VisionConfig};

fn manifest() -> Manifest {
    let path = facegate_testkit::workspace(env!("CARGO_MANIFEST_DIR")).join("models/manifest.toml");
    Manifest::load(&path).expect("models/manifest.toml")
}

fn pipeline() -> Pipeline {
    let config = VisionConfig {
        flip_tta: true,
        ..VisionConfig::default()
    };
    Pipeline::load(&manifest(), &config)
        .unwrap_or_else(|e| panic!("loading the pipeline ({e}); run deploy/dev.sh setup first"))
}

/// CenterFace, loaded and checked through the manifest like every model, finds the astronaut's
/// face where UltraFace does, and its own five landmarks agree with the landmark model's on
/// that face (within a fifth of the eye distance): the channel order, the letterbox and the
/// decoding (box and landmark axes) are right.
#[test]
fn centerface_finds_the_astronaut_and_its_landmarks_agree_with_the_landmark_model() {
    let m = manifest();
    let spec = m
        .model(Role::FallbackDetector)
        .expect("a fallback_detector in the manifest");
    let mut p = pipeline();
    assert!(p.has_fallback_detector());
    let mut cf = CenterFace::new(ModelSession::load(&m, spec).unwrap()).unwrap();
    let frame = decode_image_file(m.sample("astronaut").unwrap(), 40_000_000).unwrap();
    let mut found = Vec::new();
    cf.detect_landmarked(&frame, &mut found).unwrap();
    assert_eq!(found.len(), 1, "one face in the astronaut portrait");
    let c = found[0];
    let mut faces = Vec::new();
    let opts = AnalyseOptions {
        embed: false,
        liveness: false,
        max_faces: 4,
    };
    p.analyse(&frame, opts, &mut faces).unwrap();
    assert_eq!(faces.len(), 1);
    let u = &faces[0];
    assert!(
        c.detection.bbox.iou(&u.detection.bbox) > 0.5,
        "the two detectors' boxes overlap (IoU {})",
        c.detection.bbox.iou(&u.detection.bbox)
    );
    let eye = u.landmarks.left_eye().x - u.landmarks.right_eye().x;
    let eye = eye.abs().max(1.0);
    for (a, b) in c.landmarks.points().iter().zip(u.landmarks.points()) {
        let d = ((a.x - b.x).powi(2) + (a.y - b.y).powi(2)).sqrt();
        assert!(
            d < 0.2 * eye,
            "a landmark {d:.1} px (eye distance {eye:.1}) off"
        );
    }
    // A blank grey picture holds no face for either.
    let grey = Frame::from_rgb8(320, 240, vec![128; 320 * 240 * 3]).unwrap();
    cf.detect_landmarked(&grey, &mut found).unwrap();
    assert!(found.is_empty());
}

struct Scores {
    found: usize,
    images: usize,
    accuracy: f64,
}

/// Accuracy of LFW-style pairs with the threshold chosen on them (a single fold, as `facegate
/// eval lfw` does for DevTest); a pair with an image without a face is an error.
fn accuracy(
    pairs: &[facegate_vision::eval::Pair],
    a: &HashMap<PathBuf, Option<Embedding>>,
    b: &HashMap<PathBuf, Option<Embedding>>,
) -> f64 {
    let scores: Vec<(f32, bool)> = pairs
        .iter()
        .map(|p| match (&a[&p.a], &b[&p.b]) {
            (Some(x), Some(y)) => (x.cosine(y), p.same),
            _ => (facegate_vision::eval::unscorable(p.same), p.same),
        })
        .collect();
    accuracy_at(&scores, best_threshold(&scores))
}

/// Each image's template as a photo is embedded (`None`: no face found).
fn embed_all(
    p: &mut Pipeline,
    images: &[PathBuf],
    tight: bool,
) -> HashMap<PathBuf, Option<Embedding>> {
    images
        .iter()
        .map(|path| {
            let full = decode_image_file(path, 40_000_000).unwrap();
            let frame = if tight {
                tight_grey_crop(&full).unwrap()
            } else {
                full
            };
            let e = match p.embed_largest(&frame) {
                Ok(f) => f.embedding,
                Err(_) => None,
            };
            (path.clone(), e)
        })
        .collect()
}

/// The ID-photo protocol on every image of LFW View 1 DevTest (1,549 images, 1,000 pairs):
/// each image's centre 84x100 (forehead and chin cut), grey, contrast x1.8. A face must be
/// found in at least 99 % of the crops (the detector alone finds one in 1,101, and 448 give no
/// face at all). Accuracy is pinned at what was measured (2026-12-02, this test's own scoring:
/// the largest face of each image), with half a point of tolerance, so that a regression fails:
/// uncropped 99.2 %; an ID photo against the person as they are (the first image of each pair
/// cropped) 98.6 %; both cropped 98.1 % (95.7 % before a face clear of the edge could be found
/// to be a part of a larger face on the margin, [`facegate_vision::photo::part_of`]). The
/// issue's goal of 1 point from the uncropped figure is met for an ID photo against the person
/// as is, not for two ID photos (see README, "ID photos").
#[test]
fn tight_grey_crops_of_lfw_devtest_are_found_and_verified() {
    let eval = facegate_testkit::eval_dir(env!("CARGO_MANIFEST_DIR"));
    let Some(list) = facegate_testkit::require_path(
        eval.join("lfw/pairsDevTest.txt"),
        "LFW View 1 DevTest pair list",
    ) else {
        return;
    };
    let pairs = parse_lfw_pairs(&list, &eval.join("lfw/images")).unwrap();
    let mut images: Vec<PathBuf> = pairs
        .iter()
        .flat_map(|p| [p.a.clone(), p.b.clone()])
        .collect();
    images.sort();
    images.dedup();
    let mut p = pipeline();
    let full = embed_all(&mut p, &images, false);
    let tight = embed_all(&mut p, &images, true);
    let crops = Scores {
        found: tight.values().filter(|e| e.is_some()).count(),
        images: images.len(),
        accuracy: accuracy(&pairs, &tight, &tight),
    };
    let uncropped = accuracy(&pairs, &full, &full);
    let id_vs_live = accuracy(&pairs, &tight, &full);
    eprintln!(
        "tight crops: face in {}/{}; accuracy uncropped {:.3}, ID photo vs as-is {:.3}, both cropped {:.3}",
        crops.found, crops.images, uncropped, id_vs_live, crops.accuracy
    );
    assert!(
        crops.found as f64 >= 0.99 * crops.images as f64,
        "a face in only {} of {} tight crops",
        crops.found,
        crops.images
    );
    assert!(uncropped >= 0.99, "uncropped DevTest accuracy {uncropped}");
    assert!(
        id_vs_live >= uncropped - 0.011,
        "ID photo against the person as is: {id_vs_live} (uncropped {uncropped})"
    );
    assert!(
        crops.accuracy >= uncropped - 0.016,
        "both cropped: {} (uncropped {uncropped})",
        crops.accuracy
    );
}

/// Enrollment from ID photos: of the first 300 DevTest images' tight crops, how many pass
/// quality and the whole-face check as enrollment runs them ([`Pipeline::check_photo_face`]).
#[test]
fn most_tight_crops_pass_the_enrollment_checks() {
    let eval = facegate_testkit::eval_dir(env!("CARGO_MANIFEST_DIR"));
    let Some(list) = facegate_testkit::require_path(
        eval.join("lfw/pairsDevTest.txt"),
        "LFW View 1 DevTest pair list",
    ) else {
        return;
    };
    let pairs = parse_lfw_pairs(&list, &eval.join("lfw/images")).unwrap();
    let mut images: Vec<PathBuf> = pairs
        .iter()
        .flat_map(|p| [p.a.clone(), p.b.clone()])
        .collect();
    images.sort();
    images.dedup();
    let mut p = pipeline();
    let limits = facegate_vision::FaceGeometryLimits::default();
    let opts = AnalyseOptions {
        embed: false,
        liveness: false,
        max_faces: 4,
    };
    let (mut tried, mut quality, mut accepted) = (0, 0, 0);
    let mut faces = Vec::new();
    for path in images.iter().take(300) {
        let crop = tight_grey_crop(&decode_image_file(path, 40_000_000).unwrap()).unwrap();
        let photo = p.analyse_photo(&crop, opts, &mut faces).unwrap();
        tried += 1;
        let Some(f) = faces
            .iter()
            .max_by(|a, b| a.detection.bbox.area().total_cmp(&b.detection.bbox.area()))
        else {
            continue;
        };
        if !f.quality.passes() {
            continue;
        }
        quality += 1;
        accepted += usize::from(p.check_photo_face(&photo, f, &limits).unwrap().is_ok());
    }
    eprintln!(
        "tight crops: {tried} tried, {quality} pass quality, {accepted} pass the whole-face checks"
    );
    assert!(accepted * 100 >= quality * 90, "{accepted} of {quality}");
}

/// Which look finds the face: an ordinary photo is seen as it is or with the margin (its face
/// is large), a tight crop only with the margin or the fallback, never with a guessed box.
#[test]
fn a_tight_crop_is_found_with_the_margin_and_a_blank_photo_gives_no_face() {
    let m = manifest();
    let frame = decode_image_file(m.sample("astronaut").unwrap(), 40_000_000).unwrap();
    let mut p = pipeline();
    let mut faces = Vec::new();
    let opts = AnalyseOptions {
        embed: true,
        liveness: false,
        max_faces: 4,
    };
    let photo = p.analyse_photo(&frame, opts, &mut faces).unwrap();
    assert_eq!(
        photo.pass,
        PhotoPass::Direct,
        "the astronaut's face is small"
    );
    assert_eq!(faces.len(), 1);
    let eval = facegate_testkit::eval_dir(env!("CARGO_MANIFEST_DIR"));
    if let Some(img) = facegate_testkit::require_path(
        eval.join("lfw/images/Aaron_Peirsol/Aaron_Peirsol_0001.jpg"),
        "an LFW image",
    ) {
        let full = decode_image_file(&img, 40_000_000).unwrap();
        let crop = tight_grey_crop(&full).unwrap();
        let photo = p.analyse_photo(&crop, opts, &mut faces).unwrap();
        assert_ne!(photo.pass, PhotoPass::Direct);
        assert_eq!(faces.len(), 1);
        // The canvas is the crop with its margin; the face lies inside the crop's part.
        assert!(photo.frame.width() > crop.width() && photo.frame.height() > crop.height());
        let same = p.embed_largest(&full).unwrap().embedding.unwrap();
        let s = faces[0].embedding.as_ref().unwrap().cosine(&same);
        assert!(s > 0.4, "the crop and the photo it came from: cosine {s}");
    }
    let blank = Frame::from_rgb8(84, 100, vec![200; 84 * 100 * 3]).unwrap();
    p.analyse_photo(&blank, opts, &mut faces).unwrap();
    assert!(faces.is_empty(), "no guessed face in a blank photo");
    assert!(p.embed_largest(&blank).is_err());
}
