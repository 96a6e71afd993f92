//! 1:N identification over the in-memory gallery at 10k, 100k and 1M 512-d templates of the
//! synthetic face population (`facegate_store::FaceModel`: mated probes at cosines 0.5-0.9,
//! strangers, impostor scores spread like LFW's): the exact f32 scan, the bounded int8 scan, and
//! the sign-code prefilter, each searching for the engine's default rule (threshold 0.4332, the
//! shipped embedder's FMR 1e-4 point, margin 0.05).
//!
//! `cargo bench -p facegate-benches --bench gallery` (several minutes: the 1M gallery takes
//! about 2.6 GB and a minute to build). After criterion's report it prints, from
//! `facegate_store::compare_modes` (modes interleaved probe by probe), median and p95 per query
//! for mated probes and strangers and the agreement of each mode with the exact scan.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use facegate_store::{FaceModel, Gallery, MatchRule, SearchMode, compare_modes};
use facegate_types::Embedding;

const DIM: usize = 512;
const SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];
const MODES: [(SearchMode, &str); 3] = [
    (SearchMode::Exact, "exact"),
    (SearchMode::Quantised, "int8-bounded"),
    (SearchMode::Prefiltered, "prefiltered"),
];
const RULE: MatchRule = MatchRule {
    threshold: Some(0.4332),
    margin: 0.05,
};

fn identify(c: &mut Criterion, galleries: &[(usize, FaceModel, Gallery)]) {
    let mut group = c.benchmark_group("gallery_identify_512d");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (n, model, g) in galleries {
        let qs: Vec<Embedding> = model.probes(*n, 16).into_iter().map(|p| p.0).collect();
        group.throughput(Throughput::Elements(*n as u64));
        for (mode, name) in MODES {
            group.bench_with_input(BenchmarkId::new(name, n), &qs, |b, qs| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % qs.len();
                    std::hint::black_box(g.identify_with(&qs[i], 5, mode, RULE).ok())
                });
            });
        }
    }
    group.finish();
}

fn main() {
    let galleries: Vec<(usize, FaceModel, Gallery)> = SIZES
        .iter()
        .map(|&n| {
            let model = FaceModel::new(DIM, 42);
            let g = model.gallery(n);
            (n, model, g)
        })
        .collect();
    let mut c = Criterion::default().configure_from_args();
    identify(&mut c, &galleries);
    c.final_summary();

    let modes: Vec<SearchMode> = MODES.iter().map(|m| m.0).collect();
    println!(
        "\nper-query latency ({DIM}-d, k = 5, 200 probes: 100 mated, 100 strangers; rule: threshold {:?}, margin {}):",
        RULE.threshold, RULE.margin
    );
    for (n, model, g) in &galleries {
        let probes = model.probes(*n, 200);
        let reports = compare_modes(g, &probes, &modes, RULE, &[0.4332]);
        let exact = reports[0].all.median_ms;
        for (r, (_, name)) in reports.iter().zip(MODES) {
            println!(
                "  n = {n:>7}  {name:<13} median {:>7.3} ms  p95 {:>7.3} ms  (mated {:.3}, strangers {:.3})  exact/this {:>5.2}  top-1 {}/{}  decision {}/{}  prefilter answered {}",
                r.all.median_ms,
                r.all.p95_ms,
                r.mated.median_ms,
                r.strangers.median_ms,
                exact / r.all.median_ms,
                r.top1_agree,
                probes.len(),
                r.decision_agree[0],
                probes.len(),
                r.prefilter_answered
            );
        }
    }
}
