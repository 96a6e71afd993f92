//! Criterion benchmarks of each vision stage and of the whole pipeline on the bundled astronaut
//! portrait (512x512, one face): decode, detect, landmarks, align, embed, end to end.
//! Run: `cargo bench -p facegate-benches --bench stages`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use facegate_benches::workspace_root;
use facegate_vision::align::{AlignedFace, align_into};
use facegate_vision::manifest::{Manifest, Role};
use facegate_vision::preprocess::Normalise;
use facegate_vision::runtime::{self, ModelSession, RuntimeConfig};
use facegate_vision::{
    AnalyseOptions, FaceDetector, FaceEmbedder, LandmarkLocator, Pipeline, VisionConfig,
};

fn stages(c: &mut Criterion) {
    let manifest = Manifest::load(&workspace_root().join("models/manifest.toml"))
        .expect("run deploy/dev.sh setup");
    let sample = manifest.sample("astronaut").unwrap();
    let bytes = std::fs::read(&sample).unwrap();
    let frame = facegate_capture::decode_image_bytes(&bytes, 40_000_000).unwrap();
    let lib = runtime::find_library(None, Some(&manifest)).unwrap();
    runtime::init(&lib, &RuntimeConfig::default()).unwrap();

    let mut g = c.benchmark_group("stage");
    g.sample_size(30);
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_png_512", |b| {
        b.iter(|| facegate_capture::decode_image_bytes(&bytes, 40_000_000).unwrap())
    });

    let mut det = facegate_vision::detector::UltraFace::new(
        ModelSession::load(&manifest, manifest.model(Role::Detector).unwrap()).unwrap(),
    );
    let mut dets = Vec::new();
    g.bench_function("detect", |b| {
        b.iter(|| det.detect(&frame, &mut dets).unwrap())
    });
    let face = dets[0].bbox;

    let mut lm = facegate_vision::landmarks::Pfld68::new(
        ModelSession::load(&manifest, manifest.model(Role::Landmarks).unwrap()).unwrap(),
    );
    g.bench_function("landmarks", |b| {
        b.iter(|| lm.locate(&frame, &face).unwrap())
    });
    let points = lm.locate(&frame, &face).unwrap();

    let spec = manifest.model(Role::Embedder).unwrap();
    let norm = Normalise {
        colour: spec.preprocess.colour,
        mean: spec.preprocess.mean,
        scale: spec.preprocess.scale,
    };
    let mut aligned = AlignedFace::new();
    g.bench_function("align", |b| {
        b.iter(|| align_into(&frame, &points, norm, &mut aligned).unwrap())
    });

    let mut emb = facegate_vision::embedder::ArcFace::new(
        ModelSession::load(&manifest, spec).unwrap(),
        false,
    );
    g.bench_function("embed", |b| b.iter(|| emb.embed(&aligned).unwrap()));
    g.finish();

    let mut e2e = c.benchmark_group("end_to_end");
    e2e.sample_size(20);
    e2e.throughput(Throughput::Elements(1));
    for flip in [false, true] {
        let config = VisionConfig {
            flip_tta: flip,
            liveness: true,
            ..VisionConfig::default()
        };
        let mut p = Pipeline::load(&manifest, &config).unwrap();
        let opts = AnalyseOptions {
            embed: true,
            liveness: true,
            max_faces: 4,
        };
        let mut out = Vec::new();
        let name = if flip {
            "one_face_flip_tta"
        } else {
            "one_face"
        };
        e2e.bench_function(name, |b| {
            b.iter(|| p.analyse(&frame, opts, &mut out).unwrap())
        });
    }
    e2e.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
