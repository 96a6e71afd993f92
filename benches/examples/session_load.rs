//! Model start-up costs: the SHA-256 checks of the five models and the ONNX Runtime library
//! (`verify_file`, from the page cache), and session creation for the five models one after
//! another against `ModelSession::load_parallel`, alternating in one process (`--reps`, default
//! 10), medians in milliseconds.
//! `cargo run --release -p facegate-benches --example session_load -- --reps 10`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use facegate_benches::workspace_root;
use facegate_store::quantile;
use facegate_vision::manifest::{Manifest, Role, verify_file};
use facegate_vision::runtime::{self, ModelSession, RuntimeConfig};

fn main() {
    let reps: usize = std::env::args()
        .nth(2)
        .map_or(10, |r| r.parse().expect("--reps N"));
    let manifest = Manifest::load(&workspace_root().join("models/manifest.toml")).unwrap();
    let lib = runtime::find_library(None, Some(&manifest)).unwrap();
    runtime::init(&lib, &RuntimeConfig::default()).unwrap();
    let roles = [
        Role::Detector,
        Role::Landmarks,
        Role::Embedder,
        Role::FallbackDetector,
        Role::Liveness,
    ];
    let specs = roles.map(|r| manifest.model(r));
    let rt = manifest.runtime_for_host().unwrap();
    let mut hashes = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        for s in specs.iter().flatten() {
            verify_file("model", &manifest.resolve(&s.dest), &s.sha256).unwrap();
        }
        let models = t.elapsed().as_secs_f64() * 1e3;
        verify_file("runtime", &lib, &rt.sha256).unwrap();
        hashes.push((models, t.elapsed().as_secs_f64() * 1e3 - models));
    }
    let (m, l): (Vec<f64>, Vec<f64>) = hashes.into_iter().unzip();
    println!(
        "sha-256 checks, median of {reps}: five models {:.1} ms, onnx runtime library {:.1} ms",
        quantile(&m, 0.5),
        quantile(&l, 0.5)
    );
    let (mut seq, mut par) = (Vec::new(), Vec::new());
    let mut per_role = vec![Vec::new(); roles.len()];
    for _ in 0..reps {
        let t = Instant::now();
        for (times, s) in per_role.iter_mut().zip(&specs) {
            let Some(s) = s else { continue };
            let one = Instant::now();
            drop(ModelSession::load(&manifest, s).unwrap());
            times.push(one.elapsed().as_secs_f64() * 1e3);
        }
        seq.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        drop(ModelSession::load_parallel(&manifest, specs).unwrap());
        par.push(t.elapsed().as_secs_f64() * 1e3);
    }
    for (role, times) in roles.iter().zip(&per_role) {
        println!(
            "  {:<18} load (hash + session + shape checks) median {:.1} ms",
            role.as_str(),
            quantile(times, 0.5)
        );
    }
    let (s, p) = (quantile(&seq, 0.5), quantile(&par, 0.5));
    println!(
        "five sessions, median of {reps}: one after another {s:.1} ms, in parallel {p:.1} ms (x{:.2})",
        p / s
    );
}
