//! Benchmark helpers, kept out of the gallery's production code: synthetic galleries and probes
//! of random unit vectors, the timing of a batch of 1:N queries, and [`quantile`], the one
//! definition of a median or p95 that every facegate benchmark reports (`facegate bench`,
//! `benches/`). Synthetic data only; nothing here reads or writes a real template.

use std::time::Instant;

use facegate_types::{Embedding, SubjectId, TemplateId};
use zeroize::Zeroize;

use crate::gallery::{Gallery, SearchMode};

/// The `q`-quantile (0..=1) of `values` by nearest rank: the smallest value with at least
/// `q * n` values at or below it (so p95 of 20 samples is the 19th smallest); 0 for none.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Median and 95th percentile of per-query latency, from [`bench_queries`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryTimings {
    pub queries: usize,
    pub median_ms: f64,
    pub p95_ms: f64,
}

impl Gallery {
    /// A gallery of `n` random unit vectors (one template per synthetic subject
    /// `syn-0000001`, ...), for benchmarks. Deterministic in `seed`.
    pub fn synthetic(n: usize, dim: usize, seed: u64) -> Self {
        let mut g = Self::new("synthetic", dim, n);
        let mut rng = XorShift::new(seed);
        let mut v = vec![0.0f32; dim];
        for i in 0..n {
            rng.unit_vector(&mut v);
            let subject = match SubjectId::new(format!("syn-{:07}", i + 1)) {
                Ok(s) => s,
                Err(_) => continue,
            };
            g.push_row(subject, TemplateId(i as u64 + 1), &v);
        }
        v.zeroize();
        g
    }

    /// A probe near row `row`: that row plus uniform noise of amplitude `noise` per component,
    /// renormalised. For benchmarks and tests.
    pub fn synthetic_probe(&self, row: usize, noise: f32, seed: u64) -> Option<Embedding> {
        if row >= self.len() {
            return None;
        }
        let mut rng = XorShift::new(seed);
        let v: Vec<f32> = self
            .row(row)
            .iter()
            .map(|x| x + noise * rng.uniform())
            .collect();
        Embedding::from_raw(v).ok()
    }
}

/// Runs each query once through [`Gallery::identify`] (`k = 5`) and reports median and p95
/// latency in milliseconds.
pub fn bench_queries(gallery: &Gallery, queries: &[Embedding], mode: SearchMode) -> QueryTimings {
    let mut ms: Vec<f64> = Vec::with_capacity(queries.len());
    for q in queries {
        let t = Instant::now();
        let r = gallery.identify(q, 5, mode);
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(r.ok());
    }
    QueryTimings {
        queries: ms.len(),
        median_ms: quantile(&ms, 0.5),
        p95_ms: quantile(&ms, 0.95),
    }
}

/// xorshift64* for synthetic data (not for anything secret).
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-1, 1).
    pub(crate) fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub(crate) fn unit_vector(&mut self, v: &mut [f32]) {
        loop {
            // Sum of three uniforms: close enough to Gaussian for direction sampling.
            for x in v.iter_mut() {
                *x = self.uniform() + self.uniform() + self.uniform();
            }
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 1e-6 {
                v.iter_mut().for_each(|x| *x /= norm);
                return;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert_eq!(quantile(&v, 0.95), 5.0);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
        let twenty: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(quantile(&twenty, 0.95), 19.0);
        assert_eq!(quantile(&twenty, 0.5), 10.0);
    }

    #[test]
    fn query_timings_use_the_one_quantile() {
        let g = Gallery::synthetic(64, 16, 3);
        let probes: Vec<_> = (0..10)
            .filter_map(|i| g.synthetic_probe(i, 0.1, i as u64))
            .collect();
        let t = bench_queries(&g, &probes, SearchMode::Exact);
        assert_eq!(t.queries, 10);
        assert!(t.median_ms <= t.p95_ms);
    }
}
