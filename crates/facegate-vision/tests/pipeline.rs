//! The vision pipeline on real models and real faces. Needs the assets fetched by
//! `deploy/dev.sh setup`; the LFW checks also need `../shared/eval` and skip loudly without it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use facegate_capture::decode_image_file;
use facegate_vision::align::{ARCFACE_TEMPLATE, similarity};
use facegate_vision::eval::parse_lfw_pairs;
use facegate_vision::{
    AnalyseOptions, FaceGeometryLimits, Manifest, Pipeline, Role, VisionConfig, VisionError,
};

fn workspace() -> PathBuf {
    facegate_testkit::workspace(env!("CARGO_MANIFEST_DIR"))
}

fn manifest() -> Manifest {
    let path = workspace().join("models/manifest.toml");
    Manifest::load(&path).expect("models/manifest.toml")
}

fn pipeline() -> MutexGuard<'static, Pipeline> {
    static P: OnceLock<Mutex<Pipeline>> = OnceLock::new();
    P.get_or_init(|| {
        let config = VisionConfig {
            liveness: true,
            flip_tta: true,
            ..VisionConfig::default()
        };
        let p = Pipeline::load(&manifest(), &config).unwrap_or_else(|e| {
            panic!("loading the pipeline ({e}); run deploy/dev.sh setup first")
        });
        Mutex::new(p)
    })
    .lock()
    .unwrap_or_else(|e| e.into_inner())
}

fn eval_dir() -> Option<PathBuf> {
    let dir = facegate_testkit::eval_dir(env!("CARGO_MANIFEST_DIR"));
    if dir.join("lfw/pairsDevTest.txt").is_file() {
        Some(dir)
    } else {
        facegate_testkit::skip(&format!(
            "evaluation data missing at {}/lfw/pairsDevTest.txt",
            dir.display()
        ));
        None
    }
}

#[test]
fn astronaut_has_one_good_live_face_with_landmarks_inside_the_box() {
    let path = manifest().sample("astronaut").unwrap();
    let frame = decode_image_file(&path, 40_000_000).unwrap();
    let mut p = pipeline();
    let mut faces = Vec::new();
    let opts = AnalyseOptions {
        embed: true,
        liveness: true,
        max_faces: 8,
    };
    p.analyse(&frame, opts, &mut faces).unwrap();
    assert_eq!(faces.len(), 1, "expected exactly one face");
    let f = &faces[0];
    assert!(f.detection.score > 0.9);
    for pt in f.landmarks.points() {
        assert!(
            f.detection.bbox.contains(*pt),
            "a landmark lies outside the face box"
        );
    }
    let lm = f.landmarks;
    assert!(
        lm.left_eye().x < lm.right_eye().x
            && lm.nose().y > lm.left_eye().y
            && lm.mouth_left().y > lm.nose().y
    );
    assert!(f.quality.passes(), "quality issues: {:?}", f.quality.issues);
    assert!(f.liveness.unwrap() > 0.5, "the portrait should look live");
    assert_eq!(f.embedding.as_ref().unwrap().dim(), 512);
    // The alignment maps her landmarks close to the template.
    let t = similarity(lm.points(), &ARCFACE_TEMPLATE).unwrap();
    for (src, dst) in lm.points().iter().zip(ARCFACE_TEMPLATE) {
        let m = t.apply(*src);
        assert!((m.x - dst.x).abs() < 6.0 && (m.y - dst.y).abs() < 6.0);
    }
}

#[test]
fn a_frame_without_faces_gives_no_faces() {
    let frame = facegate_types::Frame::from_rgb8(320, 240, vec![90; 320 * 240 * 3]).unwrap();
    let mut p = pipeline();
    assert!(p.detect(&frame).unwrap().is_empty());
    assert!(matches!(
        p.embed_largest(&frame),
        Err(VisionError::Input {
            stage: "detect",
            ..
        })
    ));
}

#[test]
fn a_tampered_or_misdescribed_model_is_refused_at_load() {
    let _p = pipeline(); // ONNX Runtime initialised
    let m = manifest();
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(m.path()).unwrap();
    let real = m.resolve(&m.model(Role::Detector).unwrap().dest);
    // A flipped byte: hash mismatch naming the file.
    let mut bytes = std::fs::read(&real).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::create_dir_all(dir.path().join("weights")).unwrap();
    std::fs::write(dir.path().join("weights/fr_detect.onnx"), &bytes).unwrap();
    let tampered = Manifest::parse(&text, Path::new("m.toml"), dir.path().to_path_buf()).unwrap();
    let err = facegate_vision::runtime::ModelSession::load(
        &tampered,
        tampered.model(Role::Detector).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, VisionError::ModelHash { .. }), "{err}");
    assert!(err.to_string().contains("fr_detect.onnx"), "{err}");
    // The right file but a manifest that describes another shape: refused naming the tensor.
    std::fs::copy(&real, dir.path().join("weights/fr_detect.onnx")).unwrap();
    let wrong = text.replacen("shape = [1, 3, 240, 320]", "shape = [1, 3, 480, 640]", 1);
    let misdescribed =
        Manifest::parse(&wrong, Path::new("m.toml"), dir.path().to_path_buf()).unwrap();
    let err = facegate_vision::runtime::ModelSession::load(
        &misdescribed,
        misdescribed.model(Role::Detector).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, VisionError::ModelShape { .. }), "{err}");
    assert!(err.to_string().contains("input input shape"), "{err}");
}

/// The photo fallback detector's session is created at its first use, but its file is checked
/// when the pipeline loads like every other model: a tampered copy stops `Pipeline::load`.
#[test]
fn a_tampered_fallback_detector_stops_the_pipeline_at_load_though_its_session_waits() {
    let _p = pipeline(); // ONNX Runtime initialised
    let m = manifest();
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(m.path()).unwrap();
    let fallback = m.model(Role::FallbackDetector).unwrap().dest.clone();
    for role in [
        Role::Detector,
        Role::Landmarks,
        Role::Embedder,
        Role::Liveness,
        Role::FallbackDetector,
    ] {
        let dest = &m.model(role).unwrap().dest;
        let to = dir.path().join(dest);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let mut bytes = std::fs::read(m.resolve(dest)).unwrap();
        if *dest == fallback {
            let last = bytes.len() - 1;
            bytes[last] ^= 0x01;
        }
        std::fs::write(&to, bytes).unwrap();
    }
    let copied = Manifest::parse(&text, Path::new("m.toml"), dir.path().to_path_buf()).unwrap();
    let mut config = VisionConfig::default();
    config.runtime.library = Some(facegate_vision::runtime::find_library(None, Some(&m)).unwrap());
    let err = Pipeline::load(&copied, &config).unwrap_err();
    assert!(matches!(err, VisionError::ModelHash { .. }), "{err}");
    assert!(err.to_string().contains(&fallback), "{err}");
    // With the right file the same copy loads, and has its fallback detector.
    std::fs::copy(m.resolve(&fallback), dir.path().join(&fallback)).unwrap();
    let p = Pipeline::load(&copied, &config).unwrap();
    assert!(p.has_fallback_detector());
}

/// A fixed sample of LFW View 1 DevTest (the first 60 same and 60 different pairs): at the
/// calibrated FMR 1e-3 threshold, same pairs score above it and different pairs below, with at
/// most 4 errors in 120 (the full View 2 error at this point is about 1.2%).
#[test]
fn lfw_devtest_sample_is_separated_at_the_calibrated_threshold() {
    let Some(eval) = eval_dir() else { return };
    let m = manifest();
    let threshold = m
        .model(Role::Embedder)
        .unwrap()
        .calibration
        .iter()
        .find(|c| (c.fmr - 1e-3).abs() < 1e-12)
        .expect("a calibrated FMR 1e-3 point in the manifest")
        .cosine;
    let pairs =
        parse_lfw_pairs(&eval.join("lfw/pairsDevTest.txt"), &eval.join("lfw/images")).unwrap();
    let same: Vec<_> = pairs.iter().filter(|p| p.same).take(60).collect();
    let diff: Vec<_> = pairs.iter().filter(|p| !p.same).take(60).collect();
    let mut p = pipeline();
    let mut embed = |path: &Path| {
        let frame = decode_image_file(path, 40_000_000).unwrap();
        p.embed_largest(&frame).unwrap().embedding.unwrap()
    };
    let mut errors = 0;
    let mut false_matches = 0;
    for pair in same.iter().chain(diff.iter()) {
        let s = embed(&pair.a).cosine(&embed(&pair.b));
        if (s > threshold) != pair.same {
            errors += 1;
            false_matches += usize::from(!pair.same);
        }
    }
    assert!(errors <= 4, "{errors} errors in 120 DevTest pairs");
    assert!(
        false_matches <= 1,
        "{false_matches} false matches in 60 different-person pairs"
    );
}

/// The evaluation data for a test that must not pass without it.
fn eval_dir_required() -> PathBuf {
    let dir = std::env::var_os("FACEGATE_EVAL_DIR")
        .map_or_else(|| workspace().join("../shared/eval"), PathBuf::from);
    assert!(
        dir.join("lfw/images").is_dir(),
        "evaluation data missing at {}/lfw/images (set FACEGATE_EVAL_DIR)",
        dir.display()
    );
    dir
}

/// A box on one eye or on the lower half of a face gets five landmarks from the landmark model
/// anyway, often in a face-like layout that passes quality; [`Pipeline::check_whole_face`] must
/// refuse every such fragment that a face is detected on, and keep nearly every whole LFW face.
/// Fragments are cut from the LFW images here, scaled up to 160x160 so that the detector fires.
#[test]
fn fragments_of_lfw_faces_are_not_whole_faces() {
    let eval = eval_dir_required();
    let mut people: Vec<_> = std::fs::read_dir(eval.join("lfw/images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    people.sort();
    let mut p = pipeline();
    let limits = FaceGeometryLimits::default();
    let opts = AnalyseOptions {
        embed: false,
        liveness: false,
        max_faces: 4,
    };
    let (mut whole, mut whole_kept) = (0, 0);
    let (mut fragments, mut detected, mut accepted) = (0, 0, Vec::new());
    let mut faces = Vec::new();
    for dir in people.iter().step_by(40).take(100) {
        let mut images: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        images.sort();
        let frame = decode_image_file(&images[0], 40_000_000).unwrap();
        // The face as the detector sees the photo (the fragments are cut around its landmarks).
        p.analyse(&frame, opts, &mut faces).unwrap();
        let Some(face) = faces
            .iter()
            .max_by(|a, b| a.detection.bbox.area().total_cmp(&b.detection.bbox.area()))
            .cloned()
        else {
            continue;
        };
        if !face.quality.passes() {
            continue;
        }
        whole += 1;
        whole_kept += usize::from(p.check_whole_face(&frame, &face, &limits).unwrap().is_ok());
        let (lm, b) = (face.landmarks, face.detection.bbox);
        let io = lm.right_eye().x - lm.left_eye().x;
        let lower_top = lm.nose().y - 0.15 * b.height();
        let crops = [
            (
                lm.left_eye().x - 0.6 * io,
                lm.left_eye().y - 0.6 * io,
                1.2 * io,
            ),
            (
                lm.right_eye().x - 0.6 * io,
                lm.right_eye().y - 0.6 * io,
                1.2 * io,
            ),
            (b.x1, lower_top, b.width().max(b.y2 - lower_top)),
        ];
        for (x, y, side) in crops {
            fragments += 1;
            let crop = crop_scaled(&frame, x, y, side, side, 160);
            p.analyse(&crop, opts, &mut faces).unwrap();
            for f in faces.clone() {
                if !f.quality.passes() {
                    continue;
                }
                detected += 1;
                if p.check_whole_face(&crop, &f, &limits).unwrap().is_ok() {
                    accepted.push(images[0].clone());
                }
            }
            // Enrollment (without --id-photo) sees a photo as it is, and checks it like this.
            let photo = p.analyse_direct(&crop, opts, &mut faces).unwrap();
            for f in &faces {
                if f.quality.passes() && p.check_photo_face(&photo, f, &limits).unwrap().is_ok() {
                    accepted.push(images[0].clone());
                }
            }
        }
    }
    assert!(whole >= 80, "only {whole} good whole faces in the sample");
    assert!(
        whole_kept * 100 >= whole * 93,
        "only {whole_kept} of {whole} whole faces kept"
    );
    assert!(
        fragments >= 240 && detected >= 20,
        "{detected} faces on {fragments} fragments"
    );
    assert!(
        accepted.is_empty(),
        "{} fragment(s) accepted as whole faces, cut from e.g. {:?}",
        accepted.len(),
        &accepted[..accepted.len().min(3)]
    );
}

/// `w` x `h` pixels of `frame` from (`x0`, `y0`), scaled to `out` x `out` (nearest neighbour).
fn crop_scaled(
    frame: &facegate_types::Frame,
    x0: f32,
    y0: f32,
    w: f32,
    h: f32,
    out: u32,
) -> facegate_types::Frame {
    let mut data = Vec::with_capacity((out * out * 3) as usize);
    for y in 0..out {
        for x in 0..out {
            let sx = (x0 + (x as f32 + 0.5) * w / out as f32).clamp(0.0, frame.width() as f32 - 1.0)
                as usize;
            let sy = (y0 + (y as f32 + 0.5) * h / out as f32)
                .clamp(0.0, frame.height() as f32 - 1.0) as u32;
            data.extend_from_slice(&frame.row(sy)[sx * 3..sx * 3 + 3]);
        }
    }
    facegate_types::Frame::from_rgb8(out, out, data).unwrap()
}

#[test]
fn the_int8_embedder_runs_on_the_callers_thread_and_embeds_as_on_the_pool() {
    use facegate_vision::FaceEmbedder;
    use facegate_vision::align::{AlignedFace, align_into};
    use facegate_vision::embedder::ArcFace;
    use facegate_vision::manifest::{Precision, SessionThreads};
    use facegate_vision::preprocess::Normalise;
    use facegate_vision::runtime::{ModelSession, VerifiedModel};

    let mut p = pipeline(); // ONNX Runtime initialised
    let m = manifest();
    let frame = decode_image_file(m.sample("astronaut").unwrap(), 40_000_000).unwrap();
    let mut faces = Vec::new();
    let opts = AnalyseOptions {
        embed: false,
        liveness: false,
        max_faces: 1,
    };
    p.analyse(&frame, opts, &mut faces).unwrap();
    drop(p);
    let spec = m
        .model_in(Role::Embedder, Precision::Int8)
        .expect("deploy/dev.sh setup builds the int8 embedder");
    // The manifest runs it on the caller's thread (measured faster: README, "int8 embedder").
    assert_eq!(spec.threads, SessionThreads::Caller);
    assert_eq!(
        m.model(Role::Embedder).unwrap().threads,
        SessionThreads::Shared
    );
    let mut aligned = AlignedFace::new();
    align_into(
        &frame,
        &faces[0].landmarks,
        Normalise::from(&spec.preprocess),
        &mut aligned,
    )
    .unwrap();
    let verified = VerifiedModel::read(&m, spec).unwrap();
    let embed = |threads| {
        let session = ModelSession::from_verified_on(&verified, threads).unwrap();
        ArcFace::new(session, false).embed(&aligned).unwrap()
    };
    let (caller, shared) = (embed(SessionThreads::Caller), embed(SessionThreads::Shared));
    let cosine = caller.cosine(&shared);
    assert!(
        cosine > 0.99999,
        "the same model on one thread and on the pool differ: cosine {cosine}"
    );
}
