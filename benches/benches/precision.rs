//! fp32 against int8, interleaved in one process so that both see the same machine load: the
//! embedder on the astronaut portrait's aligned crop (one pass, no flip) and the detector on
//! the whole portrait, each call alternating between the two precisions (ABBA order), with the
//! medians, p95 and the int8/fp32 ratio of the raw `session.run` time and of the stage's wall
//! time. The embedder runs four ways: each precision on the threads its manifest entry names
//! (`threads`: the shared pool or the caller's thread) and on the other choice, so the choice
//! is re-checked on every machine the bench runs on. Needs the int8 models that
//! `deploy/dev.sh setup` builds.
//! Run: `cargo bench -p facegate-benches --bench precision` (`-- --rounds N`, default 300).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use facegate_benches::workspace_root;
use facegate_store::quantile;
use facegate_vision::align::{AlignedFace, align_into};
use facegate_vision::detector::UltraFace;
use facegate_vision::embedder::ArcFace;
use facegate_vision::landmarks::Pfld68;
use facegate_vision::manifest::{Manifest, Precision, Role, SessionThreads};
use facegate_vision::preprocess::Normalise;
use facegate_vision::runtime::{self, ModelSession, RuntimeConfig, VerifiedModel};
use facegate_vision::{FaceDetector, FaceEmbedder, LandmarkLocator};

/// Per-call times of one model in one precision: raw inference and the stage's wall time.
#[derive(Default)]
struct Times {
    inference: Vec<f64>,
    wall: Vec<f64>,
}

impl Times {
    fn push(&mut self, inference: Duration, wall: Duration) {
        self.inference.push(inference.as_secs_f64() * 1e3);
        self.wall.push(wall.as_secs_f64() * 1e3);
    }
}

fn report(what: &str, fp32: &Times, int8: &Times) {
    let m = |v: &[f64]| quantile(v, 0.5);
    let p95 = |v: &[f64]| quantile(v, 0.95);
    println!(
        "{what}: {} calls each; inference median fp32 {:.2} ms, int8 {:.2} ms (p95 {:.2} / {:.2}): \
         int8/fp32 = {:.3}; stage wall median {:.2} / {:.2} ms: {:.3}",
        fp32.inference.len(),
        m(&fp32.inference),
        m(&int8.inference),
        p95(&fp32.inference),
        p95(&int8.inference),
        m(&int8.inference) / m(&fp32.inference),
        m(&fp32.wall),
        m(&int8.wall),
        m(&int8.wall) / m(&fp32.wall),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` runs this without `--bench`: nothing to measure then.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("--rounds N"))
        .unwrap_or(300);
    let manifest = Manifest::load(&workspace_root().join("models/manifest.toml"))
        .expect("run deploy/dev.sh setup");
    let sample = manifest.sample("astronaut").unwrap();
    let frame =
        facegate_capture::decode_image_bytes(&std::fs::read(&sample).unwrap(), 40_000_000).unwrap();
    let lib = runtime::find_library(None, Some(&manifest)).unwrap();
    runtime::init(&lib, &RuntimeConfig::default()).unwrap();
    let load = |role, precision| {
        let spec = manifest
            .model_in(role, precision)
            .unwrap_or_else(|| panic!("no {} {} model", precision.as_str(), role.as_str()));
        ModelSession::load(&manifest, spec).expect("run deploy/dev.sh setup (it builds int8)")
    };

    let mut det = [
        UltraFace::new(load(Role::Detector, Precision::Fp32)),
        manifest
            .model_in(Role::Detector, Precision::Int8)
            .map(|_| UltraFace::new(load(Role::Detector, Precision::Int8)))
            .unwrap_or_else(|| UltraFace::new(load(Role::Detector, Precision::Fp32))),
    ];
    let has_int8_detector = manifest.model_in(Role::Detector, Precision::Int8).is_some();
    let mut dets = Vec::new();
    det[0].detect(&frame, &mut dets).unwrap();
    let face = dets[0].bbox;
    let mut lm = Pfld68::new(load(Role::Landmarks, Precision::Fp32));
    let points = lm.locate(&frame, &face).unwrap();
    let spec = manifest.model(Role::Embedder).unwrap();
    let mut aligned = AlignedFace::new();
    align_into(
        &frame,
        &points,
        Normalise::from(&spec.preprocess),
        &mut aligned,
    )
    .unwrap();
    // Each precision on the threads its manifest entry names, then on the other choice.
    let on = |precision, threads: Option<SessionThreads>| {
        let spec = manifest.model_in(Role::Embedder, precision).unwrap();
        let verified = VerifiedModel::read(&manifest, spec).expect("run deploy/dev.sh setup");
        let threads = threads.unwrap_or(spec.threads);
        let session = ModelSession::from_verified_on(&verified, threads).unwrap();
        (ArcFace::new(session, false), threads)
    };
    let other = |t: SessionThreads| match t {
        SessionThreads::Shared => SessionThreads::Caller,
        SessionThreads::Caller => SessionThreads::Shared,
    };
    let fp32_threads = manifest
        .model_in(Role::Embedder, Precision::Fp32)
        .unwrap()
        .threads;
    let int8_threads = manifest
        .model_in(Role::Embedder, Precision::Int8)
        .unwrap()
        .threads;
    let (e0, t0) = on(Precision::Fp32, None);
    let (e1, t1) = on(Precision::Int8, None);
    let (e2, t2) = on(Precision::Fp32, Some(other(fp32_threads)));
    let (e3, t3) = on(Precision::Int8, Some(other(int8_threads)));
    let mut emb = [e0, e1, e2, e3];
    let threads = [t0, t1, t2, t3];
    // Warm-up, and the two precisions' agreement on this face.
    let mut out = Vec::new();
    for e in &mut emb {
        for _ in 0..5 {
            e.embed(&aligned).unwrap();
        }
        out.push(e.embed(&aligned).unwrap());
    }
    for d in &mut det {
        for _ in 0..5 {
            d.detect(&frame, &mut dets).unwrap();
        }
    }
    println!(
        "astronaut: cosine between the fp32 and int8 embeddings {:.4}",
        out[0].cosine(&out[1])
    );

    let (mut e_times, mut d_times) = (
        [(); 4].map(|_| Times::default()),
        [Times::default(), Times::default()],
    );
    for round in 0..rounds {
        // ABBA: neither precision (nor threading) always runs first.
        let (order, e_order) = if round % 2 == 0 {
            ([0, 1], [0, 1, 2, 3])
        } else {
            ([1, 0], [3, 2, 1, 0])
        };
        for i in e_order {
            let start = Instant::now();
            emb[i].embed(&aligned).unwrap();
            e_times[i].push(emb[i].last_inference(), start.elapsed());
        }
        for i in order {
            let start = Instant::now();
            det[i].detect(&frame, &mut dets).unwrap();
            d_times[i].push(det[i].session().last_inference(), start.elapsed());
        }
    }
    report(
        &format!(
            "embed, each on its manifest threads (fp32 {}, int8 {})",
            t0.as_str(),
            t1.as_str()
        ),
        &e_times[0],
        &e_times[1],
    );
    report(
        &format!(
            "embed, the other threads (fp32 {}, int8 {})",
            t2.as_str(),
            t3.as_str()
        ),
        &e_times[2],
        &e_times[3],
    );
    let m = |t: &Times| quantile(&t.wall, 0.5);
    for (i, what) in [(0, "fp32"), (1, "int8"), (2, "fp32"), (3, "int8")] {
        println!(
            "embed {what} on {}: stage wall median {:.2} ms, {:.3} of fp32 on its manifest threads",
            threads[i].as_str(),
            m(&e_times[i]),
            m(&e_times[i]) / m(&e_times[0])
        );
    }
    if has_int8_detector {
        report("detect", &d_times[0], &d_times[1]);
    } else {
        println!("detect: the manifest has no int8 detector (fp32 against itself skipped)");
    }
}
