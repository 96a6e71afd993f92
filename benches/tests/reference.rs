//! The Python reference of `benches/compare` (numpy + onnxruntime + Pillow, from the pinned
//! venv that `benches/compare/setup-peers.sh` installs) is the same models as facegate: on
//! eight LFW View 2 pairs (four same, four different, fold 1) its cosine is within 0.02 of
//! facegate's, and both decide alike at the FMR 1e-4 threshold. This is what makes the
//! speed comparison of `benches/compare/compare.py` one of implementations, not of models.
//! Needs `../shared/eval/lfw` and the peers' venv; fails without them when
//! `FACEGATE_REQUIRE_EVAL` is set (`deploy/dev.sh setup` installs the venv). Only cosine
//! scores cross the process boundary: the reference prints no image, embedding or landmark.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use facegate_capture::decode_image_file;
use facegate_vision::eval::parse_lfw_pairs;
use facegate_vision::{Manifest, Pipeline, Role, VisionConfig};

const TOLERANCE: f32 = 0.02;

fn peers_python() -> PathBuf {
    let dir = std::env::var_os("FACEGATE_PEERS").map_or_else(
        || {
            let cache = std::env::var_os("XDG_CACHE_HOME").map_or_else(
                || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"),
                PathBuf::from,
            );
            cache.join("facegate/peers")
        },
        PathBuf::from,
    );
    dir.join("bin/python")
}

#[test]
fn python_reference_scores_lfw_pairs_as_facegate_does() {
    // This crate sits at `benches/`, one level down (testkit's locators assume `crates/<name>`).
    let root = facegate_benches::workspace_root();
    let eval = facegate_benches::eval_dir();
    let Some(pairs_txt) = facegate_testkit::require_path(eval.join("lfw/pairs.txt"), "LFW") else {
        return;
    };
    let Some(python) = facegate_testkit::require_path(
        peers_python(),
        "the peers' venv (benches/compare/setup-peers.sh)",
    ) else {
        return;
    };
    // Fold 1's first four same and first four different pairs, as an LFW list of 4 per class.
    let text = std::fs::read_to_string(&pairs_txt).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let per: usize = lines[0].split_whitespace().nth(1).unwrap().parse().unwrap();
    let subset = format!(
        "4\n{}\n{}\n",
        lines[1..5].join("\n"),
        lines[1 + per..5 + per].join("\n")
    );
    let list = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("reference-pairs.txt");
    std::fs::write(&list, subset).unwrap();
    let images = eval.join("lfw/images");

    let out = Command::new(&python)
        .arg(root.join("benches/compare/peers.py"))
        .args(["reference-pairs", "--flip", "--pairs"])
        .arg(&list)
        .arg("--images")
        .arg(&images)
        .output()
        .expect("running the Python reference");
    assert!(
        out.status.success(),
        "peers.py reference-pairs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(
        out.stdout
            .rsplit(|&b| b == b'\n')
            .find(|l| !l.is_empty())
            .unwrap(),
    )
    .unwrap();
    let reference = answer["pairs"].as_array().unwrap();

    let manifest = Manifest::load(&root.join("models/manifest.toml")).unwrap();
    let threshold = manifest
        .model(Role::Embedder)
        .unwrap()
        .calibration
        .iter()
        .find(|c| (c.fmr - 1e-4).abs() < 1e-12)
        .expect("a calibration point at FMR 1e-4")
        .cosine;
    let config = VisionConfig {
        flip_tta: true,
        ..VisionConfig::default()
    };
    let mut pipeline = Pipeline::load(&manifest, &config)
        .unwrap_or_else(|e| panic!("loading the pipeline ({e}); run deploy/dev.sh setup first"));
    let pairs = parse_lfw_pairs(&list, &images).unwrap();
    assert_eq!(pairs.len(), 8);
    assert_eq!(reference.len(), 8);
    let mut embed = |p: &PathBuf| {
        let frame = decode_image_file(p, 40_000_000).unwrap();
        pipeline.embed_largest(&frame).unwrap().embedding.unwrap()
    };
    for (i, (pair, r)) in pairs.iter().zip(reference).enumerate() {
        assert_eq!(
            r["same"].as_bool(),
            Some(pair.same),
            "pair {i}: the same list"
        );
        let theirs = r["similarity"]
            .as_f64()
            .unwrap_or_else(|| panic!("pair {i}: the reference found no face ({})", r["looks"]))
            as f32;
        let ours = embed(&pair.a).cosine(&embed(&pair.b));
        assert!(
            (ours - theirs).abs() <= TOLERANCE,
            "pair {i}: facegate {ours:.4}, reference {theirs:.4}"
        );
        assert_eq!(
            ours >= threshold,
            theirs >= threshold,
            "pair {i}: facegate {ours:.4} and the reference {theirs:.4} decide differently at {threshold}"
        );
        assert_eq!(
            ours >= threshold,
            pair.same,
            "pair {i}: an easy pair decided right"
        );
    }
}
