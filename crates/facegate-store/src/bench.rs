//! Benchmark helpers, kept out of the gallery's production code: synthetic galleries and probes
//! (random unit vectors, and [`FaceModel`], a population shaped like a real embedder's, with
//! mated probes and strangers), the timing of a batch of 1:N queries, the side-by-side of the
//! search modes ([`compare_modes`]), and [`quantile`], the one definition of a median or p95
//! that every facegate benchmark reports (`facegate bench`, `benches/`). Synthetic data only;
//! nothing here reads or writes a real template.

use std::time::Instant;

use facegate_types::{Embedding, SubjectId, TemplateId};
use zeroize::Zeroize;

use crate::gallery::{Gallery, Identification, MatchRule, SearchMode};

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

/// A synthetic face population for 1:N benchmarks, shaped like a real embedder's output rather
/// than random directions (between which every cosine is about 0 +- 0.044 at 512-d):
/// identities share 16 (`FACTORS`) latent directions with Gaussian weights (the "look-alike"
/// structure that gives impostor cosines a spread near LFW's, about 0.1, with a heavy upper
/// tail), and every capture (the enrolled template, each probe) adds its own noise to the
/// identity. Mated probes score 0.5-0.9 against their template; strangers are identities
/// that were never enrolled. Everything is deterministic in the seed, and an identity is
/// regenerated from its number, so a 1,000,000-row gallery needs no second copy.
#[derive(Debug, Clone)]
pub struct FaceModel {
    dim: usize,
    seed: u64,
    /// `FACTORS` unit vectors of `dim`.
    factors: Vec<f32>,
}

/// Latent directions shared by all identities.
const FACTORS: usize = 16;
/// Weight of the latent part against the identity's own unit vector.
const FACTOR_WEIGHT: f32 = 0.33;
/// Noise of the enrolled capture (norm, against a unit identity).
const ENROL_NOISE: f32 = 0.5;
/// Noise range of probe captures: mated cosines from about 0.9 down to 0.5.
const PROBE_NOISE: (f32, f32) = (0.3, 1.4);
/// Identity numbers from here on are strangers (never enrolled by [`FaceModel::gallery`]).
const STRANGER_BASE: u64 = 1 << 40;

impl FaceModel {
    pub fn new(dim: usize, seed: u64) -> Self {
        let mut rng = XorShift::new(seed ^ 0xface);
        let mut factors = vec![0.0f32; FACTORS * dim.max(1)];
        for f in factors.chunks_exact_mut(dim.max(1)) {
            rng.unit_vector(f);
        }
        Self { dim, seed, factors }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    fn identity(&self, id: u64, out: &mut [f32]) {
        let mut rng = XorShift::new(self.seed ^ id.wrapping_mul(0xA24B_AED4_963E_E407));
        rng.unit_vector(out);
        for f in self.factors.chunks_exact(self.dim.max(1)) {
            // Sum of three uniforms on [-1, 1): variance 1.
            let w = FACTOR_WEIGHT * (rng.uniform() + rng.uniform() + rng.uniform());
            out.iter_mut().zip(f).for_each(|(o, x)| *o += w * x);
        }
        normalise(out);
    }

    /// One capture of identity `id`: the identity plus noise of norm `sigma`, renormalised.
    fn capture(&self, id: u64, capture: u64, sigma: f32, out: &mut [f32]) {
        self.identity(id, out);
        let mut rng = XorShift::new(
            self.seed ^ id.wrapping_mul(0x9FB2_1C65_1E98_DF25) ^ capture.wrapping_mul(0xD6E8_FEB8),
        );
        let mut noise = vec![0.0f32; out.len()];
        rng.unit_vector(&mut noise);
        out.iter_mut()
            .zip(&noise)
            .for_each(|(o, x)| *o += sigma * x);
        normalise(out);
    }

    /// A gallery of `n` enrolled identities (subject `syn-0000001` is identity 0, template 1).
    pub fn gallery(&self, n: usize) -> Gallery {
        let mut g = Gallery::new("synthetic", self.dim, n);
        let mut v = vec![0.0f32; self.dim];
        for i in 0..n {
            self.capture(i as u64, 0, ENROL_NOISE, &mut v);
            let Ok(subject) = SubjectId::new(format!("syn-{:07}", i + 1)) else {
                continue;
            };
            g.push_row(subject, TemplateId(i as u64 + 1), &v);
        }
        v.zeroize();
        g
    }

    /// A new capture of enrolled identity `id` (noise drawn from `PROBE_NOISE` by `seed`).
    pub fn mated_probe(&self, id: usize, seed: u64) -> Option<Embedding> {
        let mut rng = XorShift::new(seed ^ 0x3a7e);
        let t = (rng.uniform() + 1.0) / 2.0;
        let sigma = PROBE_NOISE.0 + t * (PROBE_NOISE.1 - PROBE_NOISE.0);
        let mut v = vec![0.0f32; self.dim];
        self.capture(id as u64, seed.wrapping_add(1), sigma, &mut v);
        Embedding::from_raw(v).ok()
    }

    /// A capture of a person who is not enrolled.
    pub fn stranger(&self, seed: u64) -> Option<Embedding> {
        let mut v = vec![0.0f32; self.dim];
        self.capture(STRANGER_BASE + seed, 1, ENROL_NOISE, &mut v);
        Embedding::from_raw(v).ok()
    }

    /// `count` probes for a gallery of `n`: alternately mated (`true`, of identities spread
    /// over the gallery) and strangers (`false`).
    pub fn probes(&self, n: usize, count: usize) -> Vec<(Embedding, bool)> {
        (0..count)
            .filter_map(|i| {
                let mated = i % 2 == 0;
                let e = if mated {
                    self.mated_probe((i * 7919) % n.max(1), i as u64)
                } else {
                    self.stranger(i as u64)
                };
                e.map(|e| (e, mated))
            })
            .collect()
    }
}

fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// One search mode's figures from [`compare_modes`], against the exact scan of the same run.
#[derive(Debug, Clone, PartialEq)]
pub struct ModeReport {
    pub mode: SearchMode,
    /// All probes, then mated probes only, then strangers only.
    pub all: QueryTimings,
    pub mated: QueryTimings,
    pub strangers: QueryTimings,
    /// Probes whose best hit (template and score) is the exact scan's.
    pub top1_agree: usize,
    /// Probes whose decision (`facegate_policy::identification_outcome` and the subject) is the
    /// exact scan's, at each of [`compare_modes`]' thresholds.
    pub decision_agree: Vec<usize>,
    /// Probes whose second-identity score is the exact scan's.
    pub second_agree: usize,
    /// Probes the prefilter answered itself (the rest fell back to the int8 scan).
    pub prefilter_answered: usize,
    /// Median rows re-scored in f32 per probe.
    pub rescored_median: f64,
    /// Median rows per probe the prefilter's checks left in (the first code's Hamming
    /// distance, then its asymmetric estimate, then all four codes: these are bounded in int8),
    /// for [`SearchMode::Prefiltered`]; zeros for the other modes.
    pub survivors_median: [f64; 3],
}

/// Runs every probe through every mode under `rule`, interleaved (probe by probe, the modes'
/// order rotating), timing each query, and compares each result with the exact scan's: top-1,
/// decision at each threshold of `thresholds` with the rule's margin, second identity score.
pub fn compare_modes(
    gallery: &Gallery,
    probes: &[(Embedding, bool)],
    modes: &[SearchMode],
    rule: MatchRule,
    thresholds: &[f32],
) -> Vec<ModeReport> {
    let margin = rule.margin;
    let k = 5;
    let mut ms: Vec<Vec<(f64, bool)>> = vec![Vec::with_capacity(probes.len()); modes.len()];
    let mut results: Vec<Vec<Option<Identification>>> = vec![Vec::new(); modes.len()];
    for (i, (probe, mated)) in probes.iter().enumerate() {
        for j in 0..modes.len() {
            let m = (i + j) % modes.len();
            let t = Instant::now();
            let r = gallery.identify_with(probe, k, modes[m], rule);
            ms[m].push((t.elapsed().as_secs_f64() * 1e3, *mated));
            results[m].push(r.ok());
        }
    }
    let reference: Vec<Option<Identification>> = probes
        .iter()
        .map(|(p, _)| gallery.identify_with(p, k, SearchMode::Exact, rule).ok())
        .collect();
    let decide = |r: &Identification, t: f32| {
        r.best().map(|b| {
            let o = facegate_policy::identification_outcome(
                b.score,
                r.second_identity_score,
                t,
                margin,
            );
            (
                o,
                (o == facegate_policy::IdentifyOutcome::Match).then(|| b.subject.clone()),
            )
        })
    };
    let timings = |v: &[f64]| QueryTimings {
        queries: v.len(),
        median_ms: quantile(v, 0.5),
        p95_ms: quantile(v, 0.95),
    };
    modes
        .iter()
        .enumerate()
        .map(|(m, mode)| {
            let pick = |f: &dyn Fn(bool) -> bool| {
                let v: Vec<f64> = ms[m].iter().filter(|x| f(x.1)).map(|x| x.0).collect();
                timings(&v)
            };
            let pairs: Vec<(&Identification, &Identification)> = results[m]
                .iter()
                .zip(&reference)
                .filter_map(|(a, b)| Some((a.as_ref()?, b.as_ref()?)))
                .collect();
            let rescored: Vec<f64> = pairs.iter().map(|(a, _)| a.rescored as f64).collect();
            let stage = |f: &dyn Fn(&Identification) -> usize| {
                let v: Vec<f64> = pairs.iter().map(|(a, _)| f(a) as f64).collect();
                quantile(&v, 0.5)
            };
            let survivors_median = [
                stage(&|a| a.stages.first_code),
                stage(&|a| a.stages.asymmetric),
                stage(&|a| a.stages.all_codes),
            ];
            ModeReport {
                mode: *mode,
                all: pick(&|_| true),
                mated: pick(&|x| x),
                strangers: pick(&|x| !x),
                top1_agree: pairs.iter().filter(|(a, b)| a.best() == b.best()).count(),
                decision_agree: thresholds
                    .iter()
                    .map(|t| {
                        pairs
                            .iter()
                            .filter(|(a, b)| decide(a, *t) == decide(b, *t))
                            .count()
                    })
                    .collect(),
                second_agree: pairs
                    .iter()
                    .filter(|(a, b)| a.second_identity_score == b.second_identity_score)
                    .count(),
                prefilter_answered: pairs
                    .iter()
                    .filter(|(a, _)| {
                        a.mode != SearchMode::Quantised || *mode == SearchMode::Quantised
                    })
                    .count(),
                rescored_median: quantile(&rescored, 0.5),
                survivors_median,
            }
        })
        .collect()
}

/// Cosines of each probe against every row (exact), summarised: the median mated score
/// (probe against its own template) and impostor quantiles over every other pair, to show the
/// population's shape (the tail to compare with a real embedder's calibration).
pub fn score_profile(
    gallery: &Gallery,
    probes: &[(Embedding, bool)],
    mated_rows: &[Option<usize>],
) -> ScoreProfile {
    let mut mated = Vec::new();
    let mut impostor_top = Vec::new();
    let mut impostors = Vec::new();
    for ((p, _), own) in probes.iter().zip(mated_rows) {
        let mut best = f64::NEG_INFINITY;
        for r in 0..gallery.len() {
            let c = f64::from(crate::gallery::dot_f32(gallery.row(r), p.as_slice()));
            if Some(r) == *own {
                mated.push(c);
            } else {
                best = best.max(c);
                impostors.push(c);
            }
        }
        impostor_top.push(best);
    }
    ScoreProfile {
        mated_p5: quantile(&mated, 0.05),
        mated_median: quantile(&mated, 0.5),
        mated_p95: quantile(&mated, 0.95),
        impostor_median: quantile(&impostors, 0.5),
        impostor_p99: quantile(&impostors, 0.99),
        impostor_p999: quantile(&impostors, 0.999),
        impostor_tail: IMPOSTOR_TAIL.map(|rate| quantile(&impostors, 1.0 - rate)),
        best_impostor_median: quantile(&impostor_top, 0.5),
    }
}

/// The false-match rates [`ScoreProfile::impostor_tail`] gives the cosine of: those of the
/// shipped embedder's calibration table on LFW (0.2563, 0.3504, 0.4332, 0.5121 in the README).
pub const IMPOSTOR_TAIL: [f64; 4] = [1e-2, 1e-3, 1e-4, 1e-5];

/// See [`score_profile`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreProfile {
    pub mated_p5: f64,
    pub mated_median: f64,
    pub mated_p95: f64,
    pub impostor_median: f64,
    pub impostor_p99: f64,
    pub impostor_p999: f64,
    /// Median over probes of the best impostor score in the whole gallery.
    pub best_impostor_median: f64,
    /// The cosine exceeded by each rate of [`IMPOSTOR_TAIL`] of all the impostor pairs.
    pub impostor_tail: [f64; 4],
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
