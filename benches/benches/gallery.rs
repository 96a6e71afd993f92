//! 1:N identification over the in-memory gallery at 10k and 100k 512-d templates: the exact f32
//! scan next to the int8 scan with exact re-score of the best candidates.
//!
//! `cargo bench -p facegate-benches --bench gallery` (about a minute). After criterion's report
//! it prints median and p95 per query from `facegate_store::bench_queries`.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use facegate_store::{Gallery, SearchMode, bench_queries};
use facegate_types::Embedding;

const DIM: usize = 512;
const SIZES: [usize; 2] = [10_000, 100_000];
const MODES: [(SearchMode, &str); 2] = [
    (SearchMode::Exact, "exact"),
    (SearchMode::Quantised, "int8+rescore"),
];

/// Probes near random gallery rows (a genuine match in the gallery, like a real gate).
fn probes(g: &Gallery, n: usize) -> Vec<Embedding> {
    (0..n)
        .filter_map(|i| g.synthetic_probe((i * 7919) % g.len(), 0.02, i as u64 + 1))
        .collect()
}

fn identify(c: &mut Criterion, galleries: &[(usize, Gallery)]) {
    let mut group = c.benchmark_group("gallery_identify_512d");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (n, g) in galleries {
        let qs = probes(g, 16);
        group.throughput(Throughput::Elements(*n as u64));
        for (mode, name) in MODES {
            group.bench_with_input(BenchmarkId::new(name, n), &qs, |b, qs| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % qs.len();
                    std::hint::black_box(g.identify(&qs[i], 5, mode).ok())
                });
            });
        }
    }
    group.finish();
}

fn main() {
    let galleries: Vec<(usize, Gallery)> = SIZES
        .iter()
        .map(|&n| (n, Gallery::synthetic(n, DIM, 42)))
        .collect();
    let mut c = Criterion::default().configure_from_args();
    identify(&mut c, &galleries);
    c.final_summary();

    println!("\nper-query latency ({DIM}-d, k = 5, 200 queries):");
    for (n, g) in &galleries {
        let qs = probes(g, 200);
        let agree = qs
            .iter()
            .filter(|q| {
                let e = g.identify(q, 5, SearchMode::Exact).ok();
                let i = g.identify(q, 5, SearchMode::Quantised).ok();
                e.is_some() && e.map(|e| e.hits) == i.map(|i| i.hits)
            })
            .count();
        println!(
            "  n = {n:>7}  int8+rescore returns the exact top-5 for {agree}/{} probes",
            qs.len()
        );
        for (mode, name) in MODES {
            let t = bench_queries(g, &qs, mode);
            println!(
                "  n = {n:>7}  {name:<13} median {:>7.3} ms  p95 {:>7.3} ms",
                t.median_ms, t.p95_ms
            );
        }
    }
}
