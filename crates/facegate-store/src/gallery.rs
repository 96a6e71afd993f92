//! The in-memory gallery: every live template of one model, decrypted once into one contiguous,
//! row-major `n x dim` matrix of L2-normalised f32, for 1:1 **verification** and 1:N
//! **identification** (the two modes of Art. 19 of the Measures).
//!
//! Memory: the matrix (and its int8 copy) live in buffers that are `mlock`ed where the OS allows
//! (a warning is logged when it does not, e.g. under a small `RLIMIT_MEMLOCK`; the unit sets
//! `LimitMEMLOCK=`), so templates are not written to swap, and are zeroised when the gallery is
//! dropped, when a buffer grows (the old buffer), and row by row when a template is removed.
//!
//! Search: identification has three scans, and every score it returns is an exact f32 cosine.
//! - [`SearchMode::Exact`] scans every row of the f32 matrix.
//! - [`SearchMode::Quantised`] scans an int8 copy (one scale per row) and re-scores in f32
//!   every row whose int8 score could reach the reported ones. Each row keeps the norm of its
//!   quantisation residual, so the int8 score's error has a computed bound (see
//!   [`Gallery::identify_with`]); the hits, the second identity's score and so the decision are
//!   the exact scan's (up to f32 rounding of the exact scan itself, below 1e-4 in cosine). The
//!   scan reads a quarter of the bytes of the f32 one.
//! - [`SearchMode::Prefiltered`] (the default for large galleries) scans a 1-bit code per row
//!   (the signs of the template after a fixed pseudo-random rotation, 64 bytes for 512-d, held in
//!   cache at 100,000 templates) by Hamming distance, scores the nearest rows in int8 and the
//!   best of them in f32, and then checks, in one pass, every row the code does not exclude at
//!   the rule's critical level: first by an asymmetric estimate from the same code (the row's
//!   signs against the probe's rotated coordinates, with a per-row spread), then by three more
//!   codes, then by the int8 bound; only rows that pass all of these are scored in f32. It falls
//!   back to the bounded int8 scan when too many rows remain. Its guarantee is statistical (see
//!   [`Gallery::identify_with`]); the tests and `facegate bench gallery` check it.
//!
//! The f32 and int8 scans use two threads above a size threshold (`std::thread::scope`); the
//! prefilter uses one (the gate's second core belongs to the models). The bit-counting kernels
//! are safe Rust compiled again for `popcnt` and for AVX-512 (VPOPCNTDQ), chosen at run time;
//! the AVX-512 pass over 512-bit codes uses `std::arch` (unaligned loads from checked slices,
//! prefetches) behind the same run-time check, with the portable loop as the fallback.
//!
//! Updates happen in place: insertion appends a row, removal swap-removes it (the last row moves
//! into the hole) and keeps the row -> (subject, template) index in step.

use std::collections::HashMap;
use std::fmt;

use facegate_types::{Embedding, SubjectId, TemplateId};
use zeroize::Zeroize;

use crate::StoreError;

/// Galleries with at least this many matrix elements are scanned by two threads.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 20;
/// Number of scan threads for large galleries (the terminal boards have two cores to spare).
const SEARCH_THREADS: usize = 2;
/// Candidates kept by the quantised scan before the exact re-score.
const QUANT_CANDIDATES: usize = 64;
/// Galleries smaller than this use the exact scan even in [`SearchMode::Auto`].
const QUANT_MIN_ROWS: usize = 4096;
/// The fewest rows the prefilter's widest candidate list holds (see `PREFILTER_MAX_SHARE`).
const PREFILTER_MIN: usize = 256;
/// The nearest rows by the first code that [`SearchMode::Prefiltered`] scores first (in int8,
/// the best of them in f32): at least this many, and at least `n / FIRST_SHARE`, as many as the
/// previous prefilter scored in f32 (64 and 1/4096 measured 0.03-0.1 ms faster on mated probes,
/// but a result below a high threshold then more often reports a lower best than the exact
/// scan: top-1 187 of 200 against 196 at 100,000 and 0.7550).
const FIRST_MIN: usize = 256;
const FIRST_SHARE: usize = 1024;
/// The prefilter widens its candidate list (x4 each time) up to this share of the gallery
/// before it falls back to the bounded int8 scan.
const PREFILTER_MAX_SHARE: usize = 16;
/// Standard deviations of the sign-code statistics a left-out row must lie beyond.
const PREFILTER_Z: f64 = 6.0;
/// Margin the prefilter certifies when the caller names no rule (above the policy's default).
pub const DEFAULT_CERTIFIED_MARGIN: f32 = 0.10;

/// The identification rule a result will be judged by (`facegate_policy::identification_outcome`:
/// the best score must reach `threshold` and beat the second identity by `margin`). The
/// prefilter keeps the decision under this rule; without a threshold it keeps the top-1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchRule {
    pub threshold: Option<f32>,
    pub margin: f32,
}

impl MatchRule {
    /// No threshold, the margin [`DEFAULT_CERTIFIED_MARGIN`].
    pub const TOP1: Self = Self {
        threshold: None,
        margin: DEFAULT_CERTIFIED_MARGIN,
    };

    /// The cosine every left-out row must stay below for the decision (and, where the result
    /// is a match or no threshold is set, the top-1) to be the full scan's.
    fn level(&self, best: f32, second: Option<f32>) -> f32 {
        let margin = if self.margin.is_finite() {
            self.margin.max(0.0)
        } else {
            1.0
        };
        match self.threshold {
            // Below the threshold: unknown as long as nothing left out reaches it.
            Some(t) if best < t => t,
            // Ambiguous: stays so while nothing left out beats the second by the margin.
            Some(_) if second.is_some_and(|s2| best - s2 < margin) => {
                second.map_or(best, |s2| s2 + margin)
            }
            // A match: stays this one while nothing left out comes within the margin.
            _ => best - margin,
        }
    }
}
/// Slack for f32 rounding in the int8 bound and in the exact dot product itself.
const BOUND_SLACK: f32 = 1e-4;
/// Rounds of (random signs, Walsh-Hadamard transform) in the code's rotation.
const ROTATION_ROUNDS: usize = 3;
/// Seed of the rotation's signs (fixed: codes need not be secret-keyed, only well spread).
const ROTATION_SEED: u64 = 0x0f1e_2d3c_4b5a_6978;
/// Further sign codes per row (other rotations), read only for rows the first code cannot
/// exclude: with four codes the check resolves about half the cosine the first one does.
const EXTRA_CODES: usize = 3;

/// Rows whose rotated template (by any of the four rotations) has `|y|_1 / sqrt(bits)` below
/// this are never left out by a Hamming distance: the sign-code statistics assume a template
/// spread over the rotated coordinates (a natural one has about `sqrt(2 / pi)` = 0.80), and a
/// template concentrated on a few (only a crafted one is) differs from the probe in about half
/// the bits whatever its cosine. Such rows are checked by the asymmetric estimate, whose
/// spread follows the row's own concentration, and then by their int8 bound.
const SPREAD_MIN: f64 = 0.75;
/// Bits of the probe's rotated magnitudes in the asymmetric check of the first code.
const ASYM_BITS: usize = 6;
/// Deviations (in units of the sub-Gaussian scale) the asymmetric check's rotation term must
/// exceed for a row to be missed: a tail of at most `exp(-t^2 / 2)`, 6.7e-10, per row.
const ASYM_T: f64 = 6.5;

/// Which scan identification uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchMode {
    /// Quantised for large galleries, exact for small ones.
    #[default]
    Auto,
    /// Scan every row in f32.
    Exact,
    /// Scan the int8 copy, then re-score in f32 every row whose bounded int8 score could reach
    /// the reported scores (exact hits).
    Quantised,
    /// Scan 1-bit codes by Hamming distance, re-score the nearest in f32, and fall back to
    /// [`SearchMode::Quantised`] when a left-out row could change the decision.
    Prefiltered,
}

/// One row of the gallery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowRef {
    pub subject: SubjectId,
    pub template: TemplateId,
}

/// A candidate returned by identification (an exact cosine).
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub subject: SubjectId,
    pub template: TemplateId,
    pub score: f32,
}

/// The result of 1:N identification.
#[derive(Debug, Clone, PartialEq)]
pub struct Identification {
    /// Up to `k` hits, one per identity (its best template), best first.
    pub hits: Vec<Hit>,
    /// The best score of the second-best identity, whatever `k` was (for the margin rule).
    pub second_identity_score: Option<f32>,
    /// Rows scanned.
    pub scanned: usize,
    /// The scan that gave the result (never `Auto`; `Quantised` when the prefilter fell back).
    pub mode: SearchMode,
    /// Rows re-scored exactly in f32.
    pub rescored: usize,
    /// What the prefilter's checks left in ([`SearchMode::Prefiltered`] only; zero otherwise).
    pub stages: PrefilterStages,
}

impl Identification {
    pub fn best(&self) -> Option<&Hit> {
        self.hits.first()
    }

    /// Best score minus the second identity's best score (`None` without two identities).
    pub fn margin(&self) -> Option<f32> {
        Some(self.best()?.score - self.second_identity_score?)
    }
}

/// The in-memory gallery. See the module docs.
pub struct Gallery {
    model_id: String,
    dim: usize,
    exact: SecretBuf<f32>,
    quant: SecretBuf<i8>,
    /// Per row: `max|x| / 127`, so `x ≈ q * inv_scale`.
    inv_scale: Vec<f32>,
    /// Per row: an upper bound of `|x - q * inv_scale|` (the int8 residual's L2 norm).
    residual: Vec<f32>,
    /// The largest `residual` any row ever had (a valid bound for every row).
    residual_max: f32,
    /// Per row: `code_words` u64 words of sign bits (see [`Rotation`]).
    codes: SecretBuf<u64>,
    code_words: usize,
    rotation: Rotation,
    /// Per row: the L1 norm of the rotated, unit-length template (`<code, rotated>` for the
    /// first code's signs as +-1), and `sqrt(1 - a^2) / a` with `a` that norm over `sqrt(bits)`,
    /// rounded up: the spread of the asymmetric estimate (see [`AsymProbe`]).
    code_l1: Vec<f32>,
    code_beta: Vec<f32>,
    /// Per row: some rotation leaves the template concentrated (see [`SPREAD_MIN`]).
    concentrated: Vec<bool>,
    concentrated_count: usize,
    /// Per row: `EXTRA_CODES * code_words` words, the codes of `extra_rotations`.
    extra: SecretBuf<u64>,
    extra_rotations: Vec<Rotation>,
    rows: Vec<RowRef>,
    by_template: HashMap<TemplateId, usize>,
    by_subject: HashMap<SubjectId, Vec<TemplateId>>,
}

impl fmt::Debug for Gallery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gallery")
            .field("model_id", &self.model_id)
            .field("dim", &self.dim)
            .field("rows", &self.rows.len())
            .field("subjects", &self.by_subject.len())
            .field(
                "locked",
                &(self.exact.locked && self.quant.locked && self.codes.locked),
            )
            .finish_non_exhaustive()
    }
}

impl Gallery {
    /// An empty gallery for `dim`-dimensional templates of `model_id`, with room for `capacity`
    /// rows before it first grows.
    pub fn new(model_id: impl Into<String>, dim: usize, capacity: usize) -> Self {
        let cap = capacity.max(16);
        let rotation = Rotation::new(dim, ROTATION_SEED);
        let code_words = rotation.words();
        let extra_rotations: Vec<Rotation> = (1..=EXTRA_CODES as u64)
            .map(|i| Rotation::new(dim, ROTATION_SEED.wrapping_add(i)))
            .collect();
        Self {
            model_id: model_id.into(),
            dim,
            exact: SecretBuf::new(cap * dim),
            quant: SecretBuf::new(cap * dim),
            inv_scale: Vec::with_capacity(cap),
            residual: Vec::with_capacity(cap),
            residual_max: 0.0,
            codes: SecretBuf::new(cap * code_words),
            code_words,
            code_l1: Vec::with_capacity(cap),
            code_beta: Vec::with_capacity(cap),
            concentrated: Vec::with_capacity(cap),
            concentrated_count: 0,
            rotation,
            extra: SecretBuf::new(cap * code_words * EXTRA_CODES),
            extra_rotations,
            rows: Vec::with_capacity(cap),
            by_template: HashMap::with_capacity(cap),
            by_subject: HashMap::with_capacity(cap),
        }
    }

    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of templates (rows).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Number of distinct subjects.
    pub fn subjects(&self) -> usize {
        self.by_subject.len()
    }

    /// Whether the matrix memory is locked against swapping.
    pub fn is_locked(&self) -> bool {
        self.exact.locked && self.quant.locked && self.codes.locked && self.extra.locked
    }

    /// Bytes each template takes in the scans' buffers: the f32 row, its int8 copy, its sign
    /// codes, the int8 scale and residual bound, the first code's L1 norm and spread, and the
    /// concentration flag (the row index and maps come on top).
    pub fn bytes_per_template(&self) -> usize {
        self.dim * 5 + self.code_words * 8 * (1 + EXTRA_CODES) + 17
    }

    /// The row index (which row holds which template), in row order.
    pub fn rows(&self) -> &[RowRef] {
        &self.rows
    }

    /// The templates of `subject` in the gallery.
    pub fn templates_of(&self, subject: &SubjectId) -> &[TemplateId] {
        self.by_subject.get(subject).map_or(&[], Vec::as_slice)
    }

    pub fn contains_template(&self, template: TemplateId) -> bool {
        self.by_template.contains_key(&template)
    }

    /// Adds (or replaces) a template.
    pub fn insert(
        &mut self,
        subject: &SubjectId,
        template: TemplateId,
        values: &Embedding,
    ) -> Result<(), StoreError> {
        self.check_dim(values.dim())?;
        self.remove_template(template);
        self.push_row(subject.clone(), template, values.as_slice());
        Ok(())
    }

    pub(crate) fn push_row(&mut self, subject: SubjectId, template: TemplateId, values: &[f32]) {
        let (q, inv, res) = quantise_row(values);
        self.exact.push(values);
        self.quant.push(&q);
        drop(q);
        self.inv_scale.push(inv);
        self.residual.push(res);
        self.residual_max = self.residual_max.max(res);
        let rotated = self.rotation.rotate(values);
        let code = sign_bits(&rotated);
        self.codes.push(&code);
        let (l1, beta) = code_spread(&rotated);
        let mut concentrated = spread_of(&rotated) < SPREAD_MIN;
        drop(rotated);
        self.code_l1.push(l1);
        self.code_beta.push(beta);
        for r in &self.extra_rotations {
            let rotated = r.rotate(values);
            concentrated |= spread_of(&rotated) < SPREAD_MIN;
            self.extra.push(&sign_bits(&rotated));
        }
        self.concentrated.push(concentrated);
        self.concentrated_count += usize::from(concentrated);
        let row = self.rows.len();
        self.by_template.insert(template, row);
        self.by_subject
            .entry(subject.clone())
            .or_default()
            .push(template);
        self.rows.push(RowRef { subject, template });
    }

    /// Removes one template (swap-remove). Returns whether it was there.
    pub fn remove_template(&mut self, template: TemplateId) -> bool {
        let Some(row) = self.by_template.remove(&template) else {
            return false;
        };
        let last = self.rows.len() - 1;
        self.exact.swap_remove_chunk(row, self.dim);
        self.quant.swap_remove_chunk(row, self.dim);
        self.inv_scale.swap_remove(row);
        self.residual.swap_remove(row);
        self.codes.swap_remove_chunk(row, self.code_words);
        self.code_l1.swap_remove(row);
        self.code_beta.swap_remove(row);
        let was = self.concentrated.swap_remove(row);
        self.concentrated_count -= usize::from(was);
        self.extra
            .swap_remove_chunk(row, self.code_words * EXTRA_CODES);
        let removed = self.rows.swap_remove(row);
        if row != last {
            let moved = self.rows[row].template;
            self.by_template.insert(moved, row);
        }
        if let Some(list) = self.by_subject.get_mut(&removed.subject) {
            list.retain(|t| *t != template);
            if list.is_empty() {
                self.by_subject.remove(&removed.subject);
            }
        }
        true
    }

    /// Removes every template of `subject`. Returns how many.
    pub fn remove_subject(&mut self, subject: &SubjectId) -> usize {
        let templates = self.by_subject.get(subject).cloned().unwrap_or_default();
        templates
            .into_iter()
            .filter(|t| self.remove_template(*t))
            .count()
    }

    fn check_dim(&self, got: usize) -> Result<(), StoreError> {
        if got == self.dim {
            Ok(())
        } else {
            Err(StoreError::DimensionMismatch {
                expected: self.dim,
                got,
            })
        }
    }

    pub(crate) fn row(&self, r: usize) -> &[f32] {
        &self.exact.as_slice()[r * self.dim..(r + 1) * self.dim]
    }

    /// 1:1 verification: the best cosine between `probe` and the templates of `subject`, or
    /// `None` when the subject has no template here.
    pub fn verify(
        &self,
        subject: &SubjectId,
        probe: &Embedding,
    ) -> Result<Option<f32>, StoreError> {
        self.check_dim(probe.dim())?;
        let p = probe.as_slice();
        Ok(self
            .templates_of(subject)
            .iter()
            .filter_map(|t| self.by_template.get(t))
            .map(|&r| dot_f32(self.row(r), p))
            .reduce(f32::max))
    }

    /// 1:N identification: the `k` best identities, best first, plus the second identity's best
    /// score. Scores are exact cosines whatever the mode. The prefilter certifies
    /// [`DEFAULT_CERTIFIED_MARGIN`]; the engine calls [`Gallery::identify_with`] with its own.
    pub fn identify(
        &self,
        probe: &Embedding,
        k: usize,
        mode: SearchMode,
    ) -> Result<Identification, StoreError> {
        self.identify_with(probe, k, mode, MatchRule::TOP1)
    }

    /// 1:N identification for a decision under `rule`.
    ///
    /// What each mode guarantees against a full exact scan:
    /// - `Exact` and `Quantised`: the same hits (identities, templates, scores) and second
    ///   identity score. The int8 score `a` of a row obeys `|cos - a| <= r_x + (1 + r_x) r_p`
    ///   (`r` the residual norms of row and probe; the rest is Cauchy-Schwarz), so after the
    ///   best int8 candidates are re-scored, every row whose bound reaches the lowest reported
    ///   exact score is re-scored too; rows left out score strictly lower.
    /// - `Prefiltered`: the same decision under `rule`, and the same best identity and score
    ///   when the result is a match or `rule` has no threshold, unless a row scoring at or
    ///   above the rule's critical level (`best - margin` for a match or without a threshold,
    ///   `second + margin` when ambiguous, the threshold when below it) is left out. A row is
    ///   left out only by one of three checks, each at a fixed tail: (a) its first code's
    ///   Hamming distance lies six standard deviations beyond the distance expected at the
    ///   level (sign codes of rotated vectors differ in a fraction `acos(cos) / pi` of the bits;
    ///   one-sided normal tail about 1e-9); (b) its asymmetric estimate (`AsymProbe`) lies
    ///   `ASYM_T` = 6.5 of its own spread below the level (tail at most `exp(-6.5^2 / 2)`,
    ///   6.7e-10); (c) its distance by all four codes (2,048 bits) lies six standard deviations
    ///   beyond (about 1e-9). So a row at or above the level is missed with probability at most
    ///   about 3e-9, over the rotation (a fixed seed the templates do not depend on; a
    ///   uniformly random rotation in (b)'s bound, the randomised Walsh-Hadamard transform
    ///   standing in for it). Rows that a rotation leaves concentrated (`SPREAD_MIN`; only
    ///   crafted templates are) are never left out by (a) or (c). Rows excluded by the int8
    ///   bound are excluded for certain. The second identity's score is exact whenever it is
    ///   within the margin of the best; otherwise it may be a lower one, still below
    ///   `best - margin`. Below the threshold, the best hit may be another row under the
    ///   threshold. When more than 1/16 of the gallery would need checking, the bounded int8
    ///   scan answers (`mode` then says `Quantised`).
    pub fn identify_with(
        &self,
        probe: &Embedding,
        k: usize,
        mode: SearchMode,
        rule: MatchRule,
    ) -> Result<Identification, StoreError> {
        self.check_dim(probe.dim())?;
        let n = self.rows.len();
        let mode = match mode {
            SearchMode::Auto if n >= QUANT_MIN_ROWS => SearchMode::Prefiltered,
            SearchMode::Auto => SearchMode::Exact,
            m => m,
        };
        let k = k.max(1);
        let p = probe.as_slice();
        // Enough rows to find k + 1 distinct identities even when several templates per person
        // crowd the top.
        let want = (4 * (k + 1)).max(16);
        let (found, mode) = match mode {
            // Distances are u16: codes wider than that (dim above 16,384) take the int8 scan.
            SearchMode::Prefiltered
                if self.rotation.bits() * (1 + EXTRA_CODES) > usize::from(u16::MAX) =>
            {
                (self.quantised(p, k, want), SearchMode::Quantised)
            }
            SearchMode::Prefiltered => match self.prefiltered(p, k, want, rule) {
                Some(found) => (found, SearchMode::Prefiltered),
                None => (self.quantised(p, k, want), SearchMode::Quantised),
            },
            SearchMode::Quantised => (self.quantised(p, k, want), SearchMode::Quantised),
            _ => {
                let c = self.scan(want, |rows, top| {
                    scan_f32(self.exact.as_slice(), self.dim, rows, p, top);
                });
                let rescored = c.len();
                let (hits, second) = self.collate(c, k);
                (
                    Found {
                        hits,
                        second,
                        rescored,
                        stages: PrefilterStages::default(),
                    },
                    SearchMode::Exact,
                )
            }
        };
        Ok(Identification {
            hits: found.hits,
            second_identity_score: found.second,
            scanned: n,
            mode,
            rescored: found.rescored,
            stages: found.stages,
        })
    }

    /// Sorts scored rows and keeps the best row of each identity: `k` hits and the second
    /// identity's score.
    fn collate(&self, mut candidates: Vec<(f32, u32)>, k: usize) -> (Vec<Hit>, Option<f32>) {
        // Score, then row: equal scores resolve the same way in every mode.
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut hits: Vec<Hit> = Vec::with_capacity(k);
        let mut second = None;
        let mut seen: Vec<&SubjectId> = Vec::with_capacity(k + 1);
        for (score, r) in candidates {
            let rr = &self.rows[r as usize];
            if seen.contains(&&rr.subject) {
                continue;
            }
            seen.push(&rr.subject);
            if seen.len() == 2 {
                second = Some(score);
            }
            if hits.len() < k {
                hits.push(Hit {
                    subject: rr.subject.clone(),
                    template: rr.template,
                    score,
                });
            }
            if hits.len() >= k && seen.len() >= 2 {
                break;
            }
        }
        (hits, second)
    }

    /// Exact scores of `rows`.
    fn rescore(&self, rows: impl Iterator<Item = u32>, p: &[f32]) -> Vec<(f32, u32)> {
        rows.map(|r| (dot_f32(self.row(r as usize), p), r))
            .collect()
    }

    /// The bounded int8 scan (see [`Gallery::identify_with`]).
    fn quantised(&self, p: &[f32], k: usize, want: usize) -> Found {
        let n = self.rows.len();
        let (q, sp, rp) = quantise_row(p);
        // int8 scores of every row, kept for the second step (4 bytes a row).
        let mut approx = vec![0.0f32; n];
        self.par_rows(&mut approx, |rows, out| {
            scan_i8(
                self.quant.as_slice(),
                &self.inv_scale,
                self.dim,
                rows,
                &q,
                sp,
                out,
            );
        });
        drop(q);
        let mut top = TopN::new(want.max(QUANT_CANDIDATES));
        for (r, a) in approx.iter().enumerate() {
            top.offer(*a, r as u32);
        }
        let floor = top.floor;
        let kept = top.into_vec();
        let all_kept = kept.len() == n;
        let mut rescored = kept.len();
        let (hits, second) = self.collate(self.rescore(kept.iter().map(|c| c.1), p), k);
        if all_kept {
            return Found {
                hits,
                second,
                rescored,
                stages: PrefilterStages::default(),
            };
        }
        // The lowest score reported; with fewer identities than asked, every row counts.
        let lowest = match (hits.len() >= k, second) {
            (true, Some(s2)) => hits.last().map_or(s2, |h| h.score.min(s2)),
            _ => f32::NEG_INFINITY,
        };
        let bound = |res: f32| res + (1.0 + res) * rp + BOUND_SLACK;
        if floor + bound(self.residual_max) < lowest {
            return Found {
                hits,
                second,
                rescored,
                stages: PrefilterStages::default(),
            };
        }
        // Every row whose upper bound reaches the lowest reported score, plus those already
        // scored: the reported scores can only rise, and the rows left out stay below them.
        let mut more: Vec<u32> = kept.iter().map(|c| c.1).collect();
        more.sort_unstable();
        let extra: Vec<u32> = approx
            .iter()
            .zip(&self.residual)
            .enumerate()
            .filter(|(r, (a, res))| {
                **a + bound(**res) >= lowest && more.binary_search(&(*r as u32)).is_err()
            })
            .map(|(r, _)| r as u32)
            .collect();
        more.extend(extra);
        rescored = more.len();
        let (hits, second) = self.collate(self.rescore(more.into_iter(), p), k);
        Found {
            hits,
            second,
            rescored,
            stages: PrefilterStages::default(),
        }
    }

    /// The sign-code prefilter (see [`Gallery::identify_with`]); `None` means "fall back".
    ///
    /// Stages: the first code of every row (Hamming distance, with a histogram); the nearest
    /// rows scored in int8 with their error bound and the best of those re-scored in f32; then
    /// one pass over the rows the first code cannot exclude at the rule's critical level,
    /// checked on all four codes together, the survivors bounded in int8 and re-scored in f32
    /// when the bound reaches the level. A pass at level `l` excludes every row it leaves out
    /// at any level `>= l` too (the distance a row must exceed falls as the level rises), so
    /// the pass is repeated only when re-scoring lowers the level.
    fn prefiltered(&self, p: &[f32], k: usize, want: usize, rule: MatchRule) -> Option<Found> {
        let n = self.rows.len();
        let bits = self.rotation.bits();
        let w = self.code_words;
        let rotated = self.rotation.rotate(p);
        let code = sign_bits(&rotated);
        let asym = AsymProbe::new(&rotated);
        drop(rotated);
        let mut stages = PrefilterStages::default();
        let mut dist = vec![0u16; n];
        let mut hist = vec![0u32; bits + 1];
        hamming_scan(self.codes.as_slice(), w, &code, &mut dist, &mut hist, true);
        drop(code);
        let mut extra_code = zeroize::Zeroizing::new(Vec::with_capacity(w * EXTRA_CODES));
        for r in &self.extra_rotations {
            extra_code.extend_from_slice(&r.code(p));
        }
        // within[h]: rows at distance h or less.
        let within: Vec<usize> = hist
            .iter()
            .scan(0usize, |acc, c| {
                *acc += *c as usize;
                Some(*acc)
            })
            .collect();
        let target = FIRST_MIN.max(n / FIRST_SHARE);
        let widest = (n / PREFILTER_MAX_SHARE).max(PREFILTER_MIN);
        let cut = within.iter().position(|c| *c >= target).unwrap_or(bits) as u16;
        let mut marked = vec![false; n];
        // The rows at `cut` or nearer, without a branch per row.
        let mut set = vec![0u32; within[usize::from(cut)].min(n) + 1];
        let mut len = 0usize;
        for (r, d) in dist.iter().enumerate() {
            set[len] = r as u32;
            len += usize::from(*d <= cut);
            if len == set.len() {
                break;
            }
        }
        set.truncate(len);
        for &r in &set {
            marked[r as usize] = true;
        }
        let (q, sp, rp) = quantise_row(p);
        // (int8 score, upper bound) of row `r`.
        let approx = |r: u32| {
            let r = r as usize;
            let row = &self.quant.as_slice()[r * self.dim..(r + 1) * self.dim];
            let res = self.residual[r];
            let a = dot_i8(row, &q) as f32 * (self.inv_scale[r] * sp);
            (a, a + res + (1.0 + res) * rp + BOUND_SLACK)
        };
        // The nearest rows: the best `want` by int8 score are re-scored in f32, the others wait
        // in `bounded` (upper bound, row) until a level shows whether they can matter.
        let mut first: Vec<(f32, f32, u32)> = set
            .iter()
            .map(|&r| {
                let (a, ub) = approx(r);
                (a, ub, r)
            })
            .collect();
        first.sort_unstable_by(|x, y| y.0.total_cmp(&x.0).then(x.2.cmp(&y.2)));
        let split = want.min(first.len());
        let mut scored = self.rescore(first[..split].iter().map(|x| x.2), p);
        let mut bounded: Vec<(f32, u32)> = first[split..].iter().map(|x| (x.1, x.2)).collect();
        drop(first);
        let mut marked_count = set.len();
        drop(set);
        // The lowest level a pass has checked the left-out rows at.
        let mut checked = f32::INFINITY;
        for _ in 0..16 {
            let (hits, second) = self.collate(scored.clone(), k);
            let found = Found {
                hits,
                second,
                rescored: scored.len(),
                stages,
            };
            if scored.len() == n {
                return Some(Found { stages, ..found });
            }
            let level = rule.level(found.hits.first()?.score, found.second);
            // Bounded rows that could reach the level are scored exactly, and the result
            // collated again.
            let before = bounded.len();
            let mut promoted = Vec::new();
            bounded.retain(|&(ub, r)| {
                if ub >= level {
                    promoted.push(r);
                    false
                } else {
                    true
                }
            });
            if bounded.len() != before {
                scored.extend(self.rescore(promoted.into_iter(), p));
                continue;
            }
            if level >= checked {
                return Some(self.polish(Found { stages, ..found }, scored, &bounded, k, p));
            }
            // Rows that could score `level` or more: nearer than `need` by the first code and,
            // where that leaves too many, nearer than `need_all` by all the codes together.
            let need = sign_code_distance(level, bits)?;
            let near = within[need - 1];
            let mut missing: Vec<u32> = Vec::new();
            stages.passes += 1;
            {
                let need_all = sign_code_distance(level, bits * (1 + EXTRA_CODES))?;
                // The rotation term's scale at this level: `sqrt(1 - c^2)` is largest at the
                // smallest cosine that matters, the level itself (or 0 below it).
                let c = f64::from(level.clamp(0.0, 1.0));
                let spread = if bits >= 2 {
                    ASYM_T * (1.0 - c * c).sqrt() / ((bits - 1) as f64).sqrt()
                } else {
                    f64::INFINITY
                };
                let pass = Pass {
                    codes: self.codes.as_slice(),
                    extra: self.extra.as_slice(),
                    code_l1: &self.code_l1,
                    code_beta: &self.code_beta,
                    dist: &dist,
                    marked: &marked,
                    concentrated: &self.concentrated,
                    asym: &asym,
                    extra_q: &extra_code,
                    need: need as u16,
                    need_all: need_all as u16,
                    level: f64::from(level) - f64::from(BOUND_SLACK),
                    spread,
                    room: widest.saturating_sub(marked_count),
                };
                let fits = pass_candidates(
                    &pass,
                    w,
                    near + self.concentrated_rows(),
                    &mut missing,
                    &mut stages,
                );
                if !fits {
                    return None;
                }
            }
            checked = level;
            if missing.is_empty() {
                return Some(self.polish(Found { stages, ..found }, scored, &bounded, k, p));
            }
            if marked_count + missing.len() > widest {
                return None;
            }
            marked_count += missing.len();
            let mut exact_now = Vec::new();
            for r in missing {
                marked[r as usize] = true;
                let (_, ub) = approx(r);
                if ub >= level {
                    exact_now.push(r);
                } else {
                    bounded.push((ub, r));
                }
            }
            scored.extend(self.rescore(exact_now.into_iter(), p));
        }
        None
    }

    /// The prefilter's last step once the decision is settled: bounded rows whose int8 bound
    /// lies above the best score are scored in f32 too, so that a result below the threshold
    /// (or ambiguous) reports the best of every row the checks kept, as the f32 scoring of all
    /// the nearest rows did before. Such rows lie below the level, so the decision stays.
    fn polish(
        &self,
        found: Found,
        mut scored: Vec<(f32, u32)>,
        bounded: &[(f32, u32)],
        k: usize,
        p: &[f32],
    ) -> Found {
        let Some(best) = found.hits.first().map(|h| h.score) else {
            return found;
        };
        let better: Vec<u32> = bounded
            .iter()
            .filter(|(ub, _)| *ub > best)
            .map(|x| x.1)
            .collect();
        if better.is_empty() {
            return found;
        }
        scored.extend(self.rescore(better.into_iter(), p));
        let (hits, second) = self.collate(scored.clone(), k);
        Found {
            hits,
            second,
            rescored: scored.len(),
            stages: found.stages,
        }
    }

    /// Runs `kernel` over all rows (split over two threads when large) and merges the top lists.
    fn scan<F>(&self, keep: usize, kernel: F) -> Vec<(f32, u32)>
    where
        F: Fn(std::ops::Range<usize>, &mut TopN) + Sync,
    {
        let n = self.rows.len();
        if self.threads() == 1 {
            let mut top = TopN::new(keep);
            kernel(0..n, &mut top);
            return top.into_vec();
        }
        let split = n / 2;
        let mut a = TopN::new(keep);
        let mut b = TopN::new(keep);
        std::thread::scope(|s| {
            let kernel = &kernel;
            let b = &mut b;
            s.spawn(move || kernel(split..n, b));
            kernel(0..split, &mut a);
        });
        for (score, r) in b.into_vec() {
            a.offer(score, r);
        }
        a.into_vec()
    }

    /// Runs `kernel` writing one value per row into `out` (split over two threads when large).
    fn par_rows<F>(&self, out: &mut [f32], kernel: F)
    where
        F: Fn(std::ops::Range<usize>, &mut [f32]) + Sync,
    {
        let n = self.rows.len();
        if self.threads() == 1 {
            kernel(0..n, out);
            return;
        }
        let split = n / 2;
        let (lo, hi) = out.split_at_mut(split);
        std::thread::scope(|s| {
            let kernel = &kernel;
            s.spawn(move || kernel(split..n, hi));
            kernel(0..split, lo);
        });
    }

    /// Rows flagged as concentrated (none for templates of a real embedder).
    fn concentrated_rows(&self) -> usize {
        self.concentrated_count
    }

    fn threads(&self) -> usize {
        if self.rows.len() * self.dim >= PARALLEL_MIN_ELEMENTS {
            std::thread::available_parallelism()
                .map_or(1, |p| p.get())
                .clamp(1, SEARCH_THREADS)
        } else {
            1
        }
    }
}

/// Hits and second identity score of one scan, with the rows it re-scored.
struct Found {
    hits: Vec<Hit>,
    second: Option<f32>,
    rescored: usize,
    stages: PrefilterStages,
}

/// The Hamming distance (of `bits`) from which rows score below `level`, at [`PREFILTER_Z`]
/// standard deviations: a row of cosine `level` differs in a fraction `q = acos(level) / pi`
/// of the bits, `bits * q` on average with at most the binomial spread. `None` when no
/// distance is far enough.
fn sign_code_distance(level: f32, bits: usize) -> Option<usize> {
    if level.is_nan() || level <= -1.0 {
        return None;
    }
    let q = f64::from(level.min(1.0)).acos() / std::f64::consts::PI;
    let n = bits as f64;
    let sd = (n * q * (1.0 - q)).sqrt().max(0.5);
    let need = (n * q + PREFILTER_Z * sd).ceil().max(1.0) as usize;
    (need <= bits).then_some(need)
}

// ----- kernels -------------------------------------------------------------------------------

/// f32 dot product written for auto-vectorisation: 16 independent accumulators.
#[inline]
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; L];
    let ca = a.chunks_exact(L);
    let cb = b.chunks_exact(L);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..L {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// int8 dot product: each product is formed in i16 (|q| <= 127, so it fits) and widened into
/// 32 independent i32 accumulators, a shape LLVM turns into packed multiplies on SSE2 and NEON
/// (about 6x faster than widening to i32 before the multiply).
#[inline]
pub(crate) fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    const L: usize = 32;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0i32; L];
    let ca = a.chunks_exact(L);
    let cb = b.chunks_exact(L);
    let tail: i32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..L {
            acc[i] += i32::from(i16::from(x[i]) * i16::from(y[i]));
        }
    }
    acc.iter().sum::<i32>() + tail
}

fn scan_f32(m: &[f32], dim: usize, rows: std::ops::Range<usize>, p: &[f32], top: &mut TopN) {
    let block = &m[rows.start * dim..rows.end * dim];
    for (i, row) in block.chunks_exact(dim).enumerate() {
        top.offer(dot_f32(row, p), (rows.start + i) as u32);
    }
}

fn scan_i8(
    m: &[i8],
    inv_scale: &[f32],
    dim: usize,
    rows: std::ops::Range<usize>,
    q: &[i8],
    probe_scale: f32,
    out: &mut [f32],
) {
    let block = &m[rows.start * dim..rows.end * dim];
    let scales = &inv_scale[rows];
    for ((row, s), o) in block.chunks_exact(dim).zip(scales).zip(out.iter_mut()) {
        *o = dot_i8(row, q) as f32 * (s * probe_scale);
    }
}

/// Quantises a unit vector to int8 with one scale: returns the codes, `max|x| / 127`, and an
/// upper bound of the residual's L2 norm `|x - q * scale|` (computed in f64, rounded up).
fn quantise_row(v: &[f32]) -> (zeroize::Zeroizing<Vec<i8>>, f32, f32) {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { 127.0 / max } else { 0.0 };
    let inv = if max > 0.0 { max / 127.0 } else { 0.0 };
    let q: Vec<i8> = v
        .iter()
        .map(|x| (x * scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    let res2: f64 = v
        .iter()
        .zip(&q)
        .map(|(&x, &c)| {
            let d = f64::from(x) - f64::from(c) * f64::from(inv);
            d * d
        })
        .sum();
    let res = (res2.sqrt() as f32) * (1.0 + 1e-5) + 1e-7;
    (zeroize::Zeroizing::new(q), inv, res)
}

/// A fixed pseudo-random rotation of `R^dim` (zero-padded to a power of two): rounds of random
/// sign flips and the Walsh-Hadamard transform. The sign bits of rotated vectors behave like
/// random-hyperplane hashes: two vectors at angle `t` differ in about `t / pi` of the bits,
/// whatever the axes of the embedding favour.
#[derive(Debug)]
struct Rotation {
    dim: usize,
    padded: usize,
    /// `ROTATION_ROUNDS * padded` signs.
    signs: Vec<f32>,
}

impl Rotation {
    fn new(dim: usize, seed: u64) -> Self {
        let padded = dim.max(1).next_power_of_two();
        let mut rng = crate::bench::XorShift::new(seed);
        let signs = (0..ROTATION_ROUNDS * padded)
            .map(|_| if rng.next() >> 63 == 0 { 1.0 } else { -1.0 })
            .collect();
        Self { dim, padded, signs }
    }

    fn bits(&self) -> usize {
        self.padded
    }

    fn words(&self) -> usize {
        self.padded.div_ceil(64)
    }

    /// `v` rotated, scaled to unit length (left at zero when `v` is zero).
    fn rotate(&self, v: &[f32]) -> zeroize::Zeroizing<Vec<f32>> {
        let mut buf = zeroize::Zeroizing::new(vec![0.0f32; self.padded]);
        let n = v.len().min(self.dim);
        buf[..n].copy_from_slice(&v[..n]);
        for signs in self.signs.chunks_exact(self.padded) {
            for (x, s) in buf.iter_mut().zip(signs) {
                *x *= s;
            }
            fwht(&mut buf);
        }
        let norm = buf
            .iter()
            .map(|x| f64::from(*x).powi(2))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            buf.iter_mut()
                .for_each(|x| *x = (f64::from(*x) / norm) as f32);
        }
        buf
    }

    /// The sign code of `v`: bit `i` of word `i / 64` is set when rotated coordinate `i` > 0.
    fn code(&self, v: &[f32]) -> zeroize::Zeroizing<Vec<u64>> {
        let mut buf = zeroize::Zeroizing::new(vec![0.0f32; self.padded]);
        let n = v.len().min(self.dim);
        buf[..n].copy_from_slice(&v[..n]);
        for signs in self.signs.chunks_exact(self.padded) {
            for (x, s) in buf.iter_mut().zip(signs) {
                *x *= s;
            }
            fwht(&mut buf);
        }
        let mut code = zeroize::Zeroizing::new(vec![0u64; self.words()]);
        for (i, x) in buf.iter().enumerate() {
            if *x > 0.0 {
                code[i / 64] |= 1 << (i % 64);
            }
        }
        code
    }
}

/// The sign bits of a rotated vector (bit `i` of word `i / 64` set when coordinate `i` > 0).
fn sign_bits(rotated: &[f32]) -> zeroize::Zeroizing<Vec<u64>> {
    let mut code = zeroize::Zeroizing::new(vec![0u64; rotated.len().div_ceil(64)]);
    for (i, x) in rotated.iter().enumerate() {
        if *x > 0.0 {
            code[i / 64] |= 1 << (i % 64);
        }
    }
    code
}

/// `|y|_1 / sqrt(bits)` of a rotated unit vector `y`: 1 for a flat one, `sqrt(2 / pi)` for
/// Gaussian coordinates, `1 / sqrt(bits)` for a single spike.
fn spread_of(rotated: &[f32]) -> f64 {
    let l1: f64 = rotated.iter().map(|x| f64::from(x.abs())).sum();
    l1 / (rotated.len().max(1) as f64).sqrt()
}

/// The first code's L1 norm `|y|_1` of a rotated unit vector `y`, and `sqrt(1 - a^2) / a` with
/// `a = |y|_1 / sqrt(bits)` (the cosine between `y` and its sign vector), rounded up.
fn code_spread(rotated: &[f32]) -> (f32, f32) {
    let l1: f64 = rotated.iter().map(|x| f64::from(x.abs())).sum();
    let a = l1 / (rotated.len().max(1) as f64).sqrt();
    let beta = if a > 0.0 {
        (1.0 - a * a).max(0.0).sqrt() / a
    } else {
        f64::INFINITY
    };
    (l1 as f32, (beta * (1.0 + 1e-6) + 1e-7) as f32)
}

/// The probe's side of the asymmetric check of the first code (the estimator of RaBitQ, Gao
/// and Long, SIGMOD 2024). For a row `y` (rotated, unit) with sign vector `s` and a probe `z`
/// (rotated, unit), `est = <s, z> / |y|_1` estimates `c = <y, z>` with error
/// `est - c = sqrt(1 - c^2) * beta * v`, where `beta = sqrt(1 - a^2) / a` is the row's and `v`,
/// for a uniformly random rotation, is one coordinate of a uniform unit vector in `bits - 1`
/// dimensions: `P(v < -t / sqrt(bits - 1)) <= exp(-t^2 / 2)`. The probe is kept as its signs
/// and the magnitudes `|z_i|` rounded *down* to `ASYM_BITS` bits (step `delta`), so
/// `<s, z> = |z|_1 - 2 sum_{s_i != sign z_i} |z_i| <= |z|_1 - 2 delta U` with `U` the sum of
/// the rounded magnitudes where the signs differ: an upper bound of `est`, computed with
/// `ASYM_BITS` popcounts a row.
struct AsymProbe {
    /// The probe's sign bits, as [`sign_bits`].
    sign: zeroize::Zeroizing<Vec<u64>>,
    /// `ASYM_BITS` planes of the rounded magnitudes (plane `j` holds bit `j`), `words` each.
    planes: zeroize::Zeroizing<Vec<u64>>,
    delta: f64,
    l1: f64,
}

impl AsymProbe {
    fn new(rotated: &[f32]) -> Self {
        let words = rotated.len().div_ceil(64);
        let top = (1u32 << ASYM_BITS) - 1;
        let max = rotated
            .iter()
            .fold(0.0f64, |m, x| m.max(f64::from(x.abs())));
        let delta = if max > 0.0 { max / f64::from(top) } else { 0.0 };
        let mut planes = zeroize::Zeroizing::new(vec![0u64; ASYM_BITS * words]);
        let mut l1 = 0.0f64;
        for (i, x) in rotated.iter().enumerate() {
            let m = f64::from(x.abs());
            l1 += m;
            if delta == 0.0 {
                continue;
            }
            let mut u = ((m / delta).floor() as u32).min(top);
            // Rounded down in exact terms, whatever the division's rounding did.
            while u > 0 && f64::from(u) * delta > m {
                u -= 1;
            }
            for j in 0..ASYM_BITS {
                if u >> j & 1 == 1 {
                    planes[j * words + i / 64] |= 1 << (i % 64);
                }
            }
        }
        Self {
            sign: sign_bits(rotated),
            planes,
            delta,
            l1,
        }
    }

    /// The signs and planes as fixed arrays of `W` words (for the unrolled kernel).
    fn fixed<const W: usize>(&self) -> ([u64; W], [[u64; W]; ASYM_BITS]) {
        let mut sign = [0u64; W];
        let mut planes = [[0u64; W]; ASYM_BITS];
        let words = self.sign.len().min(W);
        sign[..words].copy_from_slice(&self.sign[..words]);
        for (j, plane) in planes.iter_mut().enumerate() {
            plane[..words].copy_from_slice(&self.planes[j * self.sign.len()..][..words]);
        }
        (sign, planes)
    }

    /// `U` of [`AsymProbe`] for the row code `code` (`W` words, unrolled).
    #[inline(always)]
    fn diff_sum<const W: usize>(
        code: &[u64; W],
        sign: &[u64; W],
        planes: &[[u64; W]; ASYM_BITS],
    ) -> u32 {
        let mut u = 0u32;
        for (j, plane) in planes.iter().enumerate() {
            let mut c = 0u32;
            for i in 0..W {
                c += ((code[i] ^ sign[i]) & plane[i]).count_ones();
            }
            u += c << j;
        }
        u
    }

    /// As [`AsymProbe::diff_sum`] for any code width.
    fn diff_sum_any(&self, code: &[u64]) -> u32 {
        let words = self.sign.len();
        let mut u = 0u32;
        for j in 0..ASYM_BITS {
            let plane = &self.planes[j * words..(j + 1) * words];
            let c: u32 = code
                .iter()
                .zip(self.sign.iter())
                .zip(plane)
                .map(|((a, b), m)| ((a ^ b) & m).count_ones())
                .sum();
            u += c << j;
        }
        u
    }
}

/// In-place unnormalised Walsh-Hadamard transform (length a power of two).
fn fwht(v: &mut [f32]) {
    let n = v.len();
    let mut h = 1;
    while h < n {
        for block in v.chunks_exact_mut(2 * h) {
            let (a, b) = block.split_at_mut(h);
            for (x, y) in a.iter_mut().zip(b.iter_mut()) {
                let (s, d) = (*x + *y, *x - *y);
                *x = s;
                *y = d;
            }
        }
        h *= 2;
    }
}

/// Hamming distances of every code to `q` into `dist`, counted into `hist` (by distance). On
/// x86-64 the loop is compiled a second time for CPUs with `popcnt` (the baseline target has
/// none, and its SSE2 emulation takes about twice as long), and, when `vector`, a third time
/// for AVX-512 VPOPCNTDQ with four histograms (see [`hamming_scan_lanes`]; the previous
/// prefilter passes `false`); aarch64's `cnt` is baseline.
fn hamming_scan(
    codes: &[u64],
    words: usize,
    q: &[u64],
    dist: &mut [u16],
    hist: &mut [u32],
    vector: bool,
) {
    // Only x86-64 has a vector build to choose.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = vector;
    #[cfg(target_arch = "x86_64")]
    if vector && has_vpopcnt() {
        // SAFETY: the CPU has the features `hamming_scan_avx512` is compiled for (checked just
        // above); the function is otherwise the safe code below.
        unsafe { hamming_scan_avx512(codes, words, q, dist, hist) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("popcnt") {
        // SAFETY: the CPU has the one feature `hamming_scan_popcnt` is compiled for (checked
        // just above); the function is otherwise the safe code below.
        unsafe { hamming_scan_popcnt(codes, words, q, dist, hist) };
        return;
    }
    hamming_scan_any(codes, words, q, dist, hist);
}

/// Whether the CPU counts bits in vector registers (AVX-512 VPOPCNTDQ): the scans are then
/// compiled a third time, and LLVM turns the per-row sums of `count_ones` into `vpopcntq`.
#[cfg(target_arch = "x86_64")]
fn has_vpopcnt() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vpopcntdq")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt,avx2,avx512f,avx512vpopcntdq")]
fn hamming_scan_avx512(codes: &[u64], words: usize, q: &[u64], dist: &mut [u16], hist: &mut [u32]) {
    if words == 8 {
        hamming_scan_lanes::<8>(codes, q, dist, hist);
    } else {
        hamming_scan_any(codes, words, q, dist, hist);
    }
}

/// [`hamming_scan_w`] counting into four histograms, by row modulo four, summed at the end:
/// consecutive rows at the same distance (the common case: distances gather near half the
/// bits) no longer wait on each other's increment of one counter.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn hamming_scan_lanes<const W: usize>(
    codes: &[u64],
    q: &[u64],
    dist: &mut [u16],
    hist: &mut [u32],
) {
    let mut qa = [0u64; W];
    qa.copy_from_slice(&q[..W]);
    let mut lanes = vec![[0u32; 4]; hist.len()];
    for (i, (c, d)) in codes.chunks_exact(W).zip(dist.iter_mut()).enumerate() {
        let mut h = 0u32;
        for k in 0..W {
            h += (c[k] ^ qa[k]).count_ones();
        }
        *d = h as u16;
        if let Some(bucket) = lanes.get_mut(h as usize) {
            bucket[i % 4] += 1;
        }
    }
    for (out, bucket) in hist.iter_mut().zip(&lanes) {
        *out += bucket.iter().sum::<u32>();
    }
    qa.zeroize();
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
fn hamming_scan_popcnt(codes: &[u64], words: usize, q: &[u64], dist: &mut [u16], hist: &mut [u32]) {
    hamming_scan_any(codes, words, q, dist, hist);
}

#[inline(always)]
fn hamming_scan_any(codes: &[u64], words: usize, q: &[u64], dist: &mut [u16], hist: &mut [u32]) {
    match words {
        8 => hamming_scan_w::<8>(codes, q, dist, hist),
        16 => hamming_scan_w::<16>(codes, q, dist, hist),
        4 => hamming_scan_w::<4>(codes, q, dist, hist),
        2 => hamming_scan_w::<2>(codes, q, dist, hist),
        _ => {
            for (c, d) in codes.chunks_exact(words.max(1)).zip(dist.iter_mut()) {
                let h: u32 = c.iter().zip(q).map(|(a, b)| (a ^ b).count_ones()).sum();
                *d = h as u16;
                hist[h as usize] += 1;
            }
        }
    }
}

/// One check of the left-out rows at one level (see [`Gallery::prefiltered`]).
struct Pass<'a> {
    codes: &'a [u64],
    extra: &'a [u64],
    code_l1: &'a [f32],
    code_beta: &'a [f32],
    dist: &'a [u16],
    marked: &'a [bool],
    concentrated: &'a [bool],
    asym: &'a AsymProbe,
    extra_q: &'a [u64],
    /// Rows at this first-code distance or more are out.
    need: u16,
    /// Rows at this distance by all the codes together or more are out.
    need_all: u16,
    /// Rows whose asymmetric upper bound plus `spread * beta` stays below `level` are out.
    level: f64,
    spread: f64,
    /// At most this many rows may qualify.
    room: usize,
}

/// Rows the pass leaves in, per check, for the bench (rows of the gallery, summed over passes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefilterStages {
    /// Rows not excluded by the first code's Hamming distance.
    pub first_code: usize,
    /// ... nor by the asymmetric estimate of the first code.
    pub asymmetric: usize,
    /// ... nor by all the codes together: these are scored in int8 with the error bound.
    pub all_codes: usize,
    /// Passes over the left-out rows.
    pub passes: usize,
}

/// The rows `pass` cannot exclude, in row order, into `out` (`near`: how many rows lie nearer
/// than `pass.need` by the first code, marked or not). Returns `false`, and stops, as soon as
/// more than `pass.room` rows qualify.
fn pass_candidates(
    pass: &Pass<'_>,
    words: usize,
    near_rows: usize,
    out: &mut Vec<u32>,
    stages: &mut PrefilterStages,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if has_vpopcnt() {
        if words == 8 && pass.asym.sign.len() == 8 {
            // SAFETY: as in `hamming_scan`: the CPU has the features, checked just above.
            return unsafe { pass_candidates_avx512_w8(pass, near_rows, out, stages) };
        }
        // SAFETY: as in `hamming_scan`: the CPU has the features, checked just above.
        return unsafe { pass_candidates_avx512(pass, words, near_rows, out, stages) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("popcnt") {
        // SAFETY: as in `hamming_scan`: the CPU has `popcnt`, checked just above.
        return unsafe { pass_candidates_popcnt(pass, words, near_rows, out, stages) };
    }
    pass_candidates_any(pass, words, near_rows, out, stages)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt,avx2,avx512f,avx512vpopcntdq")]
fn pass_candidates_avx512(
    pass: &Pass<'_>,
    words: usize,
    near_rows: usize,
    out: &mut Vec<u32>,
    stages: &mut PrefilterStages,
) -> bool {
    pass_candidates_any(pass, words, near_rows, out, stages)
}

/// Rows ahead whose codes the AVX-512 pass asks the cache for.
#[cfg(target_arch = "x86_64")]
const PREFETCH_AHEAD: usize = 16;

/// [`pass_candidates`] for 512-bit codes with AVX-512 (VPOPCNTDQ): a row's first code is one
/// register, its asymmetric sum six masked popcounts, and the codes of rows further on are
/// prefetched (the rows the first code leaves in are scattered over the gallery).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt,avx2,avx512f,avx512vpopcntdq")]
fn pass_candidates_avx512_w8(
    pass: &Pass<'_>,
    near_rows: usize,
    out: &mut Vec<u32>,
    stages: &mut PrefilterStages,
) -> bool {
    use std::arch::x86_64::{
        __m512i, _MM_HINT_T0, _mm_prefetch, _mm512_add_epi64, _mm512_and_si512, _mm512_loadu_si512,
        _mm512_popcnt_epi64, _mm512_reduce_add_epi64, _mm512_setzero_si512, _mm512_xor_si512,
    };
    const W: usize = 8;
    let rows = pass
        .dist
        .len()
        .min(pass.marked.len())
        .min(pass.concentrated.len());
    let load = |words: &[u64]| -> __m512i {
        let words = &words[..W];
        // SAFETY: `words` is 8 initialised u64 (64 bytes, checked by the slice above); the
        // load is unaligned.
        unsafe { _mm512_loadu_si512(words.as_ptr().cast()) }
    };
    let mut near = vec![0u32; near_rows.min(rows) + 1];
    let mut len = 0usize;
    for (r, ((d, m), c)) in pass.dist[..rows]
        .iter()
        .zip(&pass.marked[..rows])
        .zip(&pass.concentrated[..rows])
        .enumerate()
    {
        near[len] = r as u32;
        len += usize::from(((*d < pass.need) | *c) & !*m);
        // Only when `near_rows` undercounts (it cannot): stop rather than index out.
        if len == near.len() {
            break;
        }
    }
    near.truncate(len);
    stages.first_code += len;
    let sign = load(&pass.asym.sign);
    let mut planes = [_mm512_setzero_si512(); ASYM_BITS];
    for (j, plane) in planes.iter_mut().enumerate() {
        *plane = load(&pass.asym.planes[j * W..]);
    }
    let (l1, two_delta) = (pass.asym.l1, 2.0 * pass.asym.delta);
    let mut kept: Vec<u32> = Vec::with_capacity(len / 8 + 16);
    for (i, &r) in near.iter().enumerate() {
        if let Some(&f) = near.get(i + PREFETCH_AHEAD) {
            _mm_prefetch::<_MM_HINT_T0>(pass.codes[f as usize * W..].as_ptr().cast());
        }
        let r = r as usize;
        let diff = _mm512_xor_si512(load(&pass.codes[r * W..]), sign);
        // Sum over planes of popcount(diff & plane_j) * 2^j, by Horner's rule.
        let mut acc = _mm512_popcnt_epi64(_mm512_and_si512(diff, planes[ASYM_BITS - 1]));
        for plane in planes[..ASYM_BITS - 1].iter().rev() {
            acc = _mm512_add_epi64(acc, acc);
            acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_and_si512(diff, *plane)));
        }
        let u = _mm512_reduce_add_epi64(acc) as f64;
        let bar =
            (pass.level - pass.spread * f64::from(pass.code_beta[r])) * f64::from(pass.code_l1[r]);
        // Out only when the bound is below the bar (a NaN bar keeps the row, as in the
        // portable loop).
        if l1 - two_delta * u < bar {
            continue;
        }
        kept.push(r as u32);
    }
    drop(near);
    stages.asymmetric += kept.len();
    let ew = W * EXTRA_CODES;
    for (i, &r) in kept.iter().enumerate() {
        if let Some(&f) = kept.get(i + PREFETCH_AHEAD / 2) {
            let f = f as usize * ew;
            for line in 0..EXTRA_CODES {
                _mm_prefetch::<_MM_HINT_T0>(pass.extra[f + line * W..].as_ptr().cast());
            }
        }
        let r = r as usize;
        let e = &pass.extra[r * ew..(r + 1) * ew];
        let mut acc = _mm512_setzero_si512();
        for c in 0..EXTRA_CODES {
            let q = load(&pass.extra_q[c * W..]);
            acc = _mm512_add_epi64(
                acc,
                _mm512_popcnt_epi64(_mm512_xor_si512(load(&e[c * W..]), q)),
            );
        }
        let h = _mm512_reduce_add_epi64(acc) as u32;
        if u32::from(pass.dist[r]) + h < u32::from(pass.need_all) || pass.concentrated[r] {
            stages.all_codes += 1;
            out.push(r as u32);
            if out.len() > pass.room {
                return false;
            }
        }
    }
    true
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
fn pass_candidates_popcnt(
    pass: &Pass<'_>,
    words: usize,
    near_rows: usize,
    out: &mut Vec<u32>,
    stages: &mut PrefilterStages,
) -> bool {
    pass_candidates_any(pass, words, near_rows, out, stages)
}

#[inline(always)]
fn pass_candidates_any(
    pass: &Pass<'_>,
    words: usize,
    near_rows: usize,
    out: &mut Vec<u32>,
    stages: &mut PrefilterStages,
) -> bool {
    match words {
        8 => pass_candidates_w::<8>(pass, near_rows, out, stages),
        4 => pass_candidates_w::<4>(pass, near_rows, out, stages),
        2 => pass_candidates_w::<2>(pass, near_rows, out, stages),
        _ => pass_candidates_w::<0>(pass, near_rows, out, stages),
    }
}

/// [`pass_candidates`] for a fixed code width of `W` words (0: any width, not unrolled).
#[inline(always)]
fn pass_candidates_w<const W: usize>(
    pass: &Pass<'_>,
    near_rows: usize,
    out: &mut Vec<u32>,
    stages: &mut PrefilterStages,
) -> bool {
    let words = pass.asym.sign.len().max(1);
    let ew = words * EXTRA_CODES;
    let rows = pass
        .dist
        .len()
        .min(pass.marked.len())
        .min(pass.concentrated.len());
    // First the rows the first code leaves in, without a branch per row: the loop over them
    // then has no unpredictable branch, and the reads of their codes overlap.
    let mut near = vec![0u32; near_rows.min(rows) + 1];
    let mut len = 0usize;
    for (r, ((d, m), c)) in pass.dist[..rows]
        .iter()
        .zip(&pass.marked[..rows])
        .zip(&pass.concentrated[..rows])
        .enumerate()
    {
        near[len] = r as u32;
        len += usize::from(((*d < pass.need) | *c) & !*m);
        // Only when `near_rows` undercounts (it cannot): stop rather than index out.
        if len == near.len() {
            break;
        }
    }
    near.truncate(len);
    stages.first_code += len;
    let (mut sign, mut planes) = pass.asym.fixed::<W>();
    let (l1, two_delta) = (pass.asym.l1, 2.0 * pass.asym.delta);
    let mut ok = true;
    for &r in &near {
        let r = r as usize;
        let u = if W == 0 {
            pass.asym
                .diff_sum_any(&pass.codes[r * words..(r + 1) * words])
        } else {
            let mut code = [0u64; W];
            code.copy_from_slice(&pass.codes[r * W..(r + 1) * W]);
            AsymProbe::diff_sum::<W>(&code, &sign, &planes)
        };
        // Out when `(l1 - 2 delta U) / |y|_1 + spread * beta < level`.
        let bar =
            (pass.level - pass.spread * f64::from(pass.code_beta[r])) * f64::from(pass.code_l1[r]);
        if l1 - two_delta * f64::from(u) < bar {
            continue;
        }
        stages.asymmetric += 1;
        let e = &pass.extra[r * ew..(r + 1) * ew];
        let h: u32 = e
            .iter()
            .zip(pass.extra_q)
            .map(|(x, y)| (x ^ y).count_ones())
            .sum();
        if u32::from(pass.dist[r]) + h < u32::from(pass.need_all) || pass.concentrated[r] {
            stages.all_codes += 1;
            out.push(r as u32);
            if out.len() > pass.room {
                ok = false;
                break;
            }
        }
    }
    sign.zeroize();
    planes.iter_mut().for_each(Zeroize::zeroize);
    ok
}

/// [`hamming_scan`] for a fixed code width (the loop unrolls; `count_ones` is one `popcnt` or
/// `cnt` where the target has it).
#[inline(always)]
fn hamming_scan_w<const W: usize>(codes: &[u64], q: &[u64], dist: &mut [u16], hist: &mut [u32]) {
    let mut qa = [0u64; W];
    qa.copy_from_slice(&q[..W]);
    for (c, d) in codes.chunks_exact(W).zip(dist.iter_mut()) {
        let mut h = 0u32;
        for i in 0..W {
            h += (c[i] ^ qa[i]).count_ones();
        }
        *d = h as u16;
        hist[h as usize] += 1;
    }
    qa.zeroize();
}

/// The best `cap` (score, row) pairs seen, unordered until `into_vec`.
struct TopN {
    cap: usize,
    items: Vec<(f32, u32)>,
    /// The lowest score held once full (a cheap rejection test).
    floor: f32,
}

impl TopN {
    fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            items: Vec::with_capacity(cap.max(1) + 1),
            floor: f32::NEG_INFINITY,
        }
    }

    #[inline]
    fn offer(&mut self, score: f32, row: u32) {
        if self.items.len() < self.cap {
            self.items.push((score, row));
            if self.items.len() == self.cap {
                self.floor = self.min_score();
            }
        } else if score > self.floor {
            let mut worst = 0;
            for (i, it) in self.items.iter().enumerate() {
                if it.0 < self.items[worst].0 {
                    worst = i;
                }
            }
            self.items[worst] = (score, row);
            self.floor = self.min_score();
        }
    }

    fn min_score(&self) -> f32 {
        self.items.iter().map(|i| i.0).fold(f32::INFINITY, f32::min)
    }

    fn into_vec(self) -> Vec<(f32, u32)> {
        self.items
    }
}

/// A heap buffer of `T` that is `mlock`ed while alive and zeroised before it is freed.
struct SecretBuf<T: Copy + Default + zeroize::DefaultIsZeroes> {
    buf: Vec<T>,
    len: usize,
    locked: bool,
}

impl<T: Copy + Default + zeroize::DefaultIsZeroes> SecretBuf<T> {
    fn new(cap: usize) -> Self {
        let buf = vec![T::default(); cap.max(1)];
        let locked = lock(&buf);
        Self {
            buf,
            len: 0,
            locked,
        }
    }

    fn as_slice(&self) -> &[T] {
        &self.buf[..self.len]
    }

    fn push(&mut self, values: &[T]) {
        let need = self.len + values.len();
        if need > self.buf.len() {
            let new_cap = need.max(self.buf.len() * 2);
            let mut bigger = vec![T::default(); new_cap];
            let locked = lock(&bigger);
            bigger[..self.len].copy_from_slice(&self.buf[..self.len]);
            let mut old = std::mem::replace(&mut self.buf, bigger);
            old.as_mut_slice().zeroize();
            if self.locked {
                unlock(&old);
            }
            self.locked = locked;
        }
        self.buf[self.len..need].copy_from_slice(values);
        self.len = need;
    }

    /// Moves the last `width`-chunk into chunk `index` and zeroises the vacated tail.
    fn swap_remove_chunk(&mut self, index: usize, width: usize) {
        let last = self.len / width - 1;
        if index != last {
            self.buf
                .copy_within(last * width..(last + 1) * width, index * width);
        }
        self.buf[last * width..(last + 1) * width].zeroize();
        self.len -= width;
    }
}

impl<T: Copy + Default + zeroize::DefaultIsZeroes> Drop for SecretBuf<T> {
    fn drop(&mut self) {
        self.buf.as_mut_slice().zeroize();
        if self.locked {
            unlock(&self.buf);
        }
    }
}

fn lock<T>(buf: &[T]) -> bool {
    let bytes = std::mem::size_of_val(buf);
    // SAFETY: the range is one live allocation owned by the caller; mlock only pins pages.
    let rc = unsafe { libc::mlock(buf.as_ptr().cast(), bytes) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        tracing::warn!(
            bytes,
            error = %err,
            "could not lock the gallery in memory (templates may be swapped out); raise \
             RLIMIT_MEMLOCK (LimitMEMLOCK= in the unit) or grant CAP_IPC_LOCK"
        );
        return false;
    }
    true
}

fn unlock<T>(buf: &[T]) {
    // SAFETY: same range that was locked; munlock of a live allocation has no other effect.
    unsafe {
        libc::munlock(buf.as_ptr().cast(), std::mem::size_of_val(buf));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::bench::XorShift;

    fn emb(v: &[f32]) -> Embedding {
        Embedding::from_raw(v.to_vec()).unwrap()
    }

    fn sid(s: &str) -> SubjectId {
        SubjectId::new(s).unwrap()
    }

    #[test]
    fn kernels_match_naive() {
        let mut rng = XorShift::new(3);
        for len in [1usize, 7, 16, 33, 512, 515] {
            let a: Vec<f32> = (0..len).map(|_| rng.uniform()).collect();
            let b: Vec<f32> = (0..len).map(|_| rng.uniform()).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot_f32(&a, &b) - naive).abs() < 1e-4, "len {len}");
            let qa: Vec<i8> = a.iter().map(|x| (x * 127.0) as i8).collect();
            let qb: Vec<i8> = b.iter().map(|x| (x * 127.0) as i8).collect();
            let naive: i32 = qa
                .iter()
                .zip(&qb)
                .map(|(&x, &y)| i32::from(x) * i32::from(y))
                .sum();
            assert_eq!(dot_i8(&qa, &qb), naive, "len {len}");
        }
    }

    #[test]
    fn verify_and_identify_small() {
        let mut g = Gallery::new("m", 3, 0);
        g.insert(&sid("a"), TemplateId(1), &emb(&[1.0, 0.0, 0.0]))
            .unwrap();
        g.insert(&sid("a"), TemplateId(2), &emb(&[0.9, 0.1, 0.0]))
            .unwrap();
        g.insert(&sid("b"), TemplateId(3), &emb(&[0.0, 1.0, 0.0]))
            .unwrap();
        g.insert(&sid("c"), TemplateId(4), &emb(&[0.0, 0.0, 1.0]))
            .unwrap();
        let probe = emb(&[1.0, 0.2, 0.0]);
        let best_a = g.verify(&sid("a"), &probe).unwrap().unwrap();
        assert!((best_a - probe.cosine(&emb(&[0.9, 0.1, 0.0]))).abs() < 1e-6);
        assert_eq!(g.verify(&sid("zz"), &probe).unwrap(), None);
        let r = g.identify(&probe, 2, SearchMode::Exact).unwrap();
        assert_eq!(r.hits.len(), 2);
        assert_eq!(r.hits[0].subject, sid("a"));
        assert_eq!(r.hits[0].template, TemplateId(2));
        assert_eq!(r.hits[1].subject, sid("b"));
        assert_eq!(r.second_identity_score, Some(r.hits[1].score));
        // k = 1 still reports the second identity (the margin rule needs it).
        let r1 = g.identify(&probe, 1, SearchMode::Quantised).unwrap();
        assert_eq!(r1.hits.len(), 1);
        assert_eq!(r1.second_identity_score, r.second_identity_score);
        assert!(r1.margin().unwrap() > 0.5);
        // Wrong dimension is an error, not a panic.
        assert!(matches!(
            g.identify(&emb(&[1.0, 0.0]), 1, SearchMode::Exact),
            Err(StoreError::DimensionMismatch {
                expected: 3,
                got: 2
            })
        ));
    }

    #[test]
    fn swap_remove_keeps_index_in_step() {
        let mut g = Gallery::synthetic(50, 8, 1);
        let moved_probe = g.synthetic_probe(49, 0.0, 0).unwrap();
        assert!(g.remove_template(TemplateId(3)));
        assert!(!g.remove_template(TemplateId(3)));
        assert_eq!(g.len(), 49);
        // Row 2 now holds what was the last row (template 50).
        assert_eq!(g.rows()[2].template, TemplateId(50));
        let r = g.identify(&moved_probe, 1, SearchMode::Exact).unwrap();
        assert_eq!(r.hits[0].template, TemplateId(50));
        assert!((r.hits[0].score - 1.0).abs() < 1e-5);
        // The vacated tail is zeroised.
        assert!(g.exact.buf[49 * 8..50 * 8].iter().all(|x| *x == 0.0));
        assert!(g.quant.buf[49 * 8..50 * 8].iter().all(|x| *x == 0));
        assert_eq!(g.remove_subject(&sid("syn-0000050")), 1);
        assert_eq!(g.len(), 48);
        assert_eq!(g.subjects(), 48);
        for (row, rr) in g.rows().iter().enumerate() {
            assert_eq!(g.by_template[&rr.template], row);
        }
    }

    #[test]
    fn quantised_agrees_with_exact() {
        let g = Gallery::synthetic(5000, 64, 7);
        for i in 0..40 {
            let probe = g.synthetic_probe(i * 97, 0.1, i as u64).unwrap();
            let e = g.identify(&probe, 5, SearchMode::Exact).unwrap();
            let q = g.identify(&probe, 5, SearchMode::Quantised).unwrap();
            assert_eq!(e.hits[0].template, TemplateId(i as u64 * 97 + 1));
            assert_eq!(q.hits[0], e.hits[0], "probe {i}");
            assert_eq!(q.mode, SearchMode::Quantised);
            // Scores are exact in both modes.
            assert!(
                (q.second_identity_score.unwrap() - e.second_identity_score.unwrap()).abs() < 1e-6
            );
        }
    }

    #[test]
    fn two_threads_agree_with_one() {
        // Big enough to take the two-thread path.
        let g = Gallery::synthetic(PARALLEL_MIN_ELEMENTS / 32 + 10, 32, 11);
        let probe = g.synthetic_probe(g.len() - 1, 0.1, 5).unwrap();
        let r = g.identify(&probe, 3, SearchMode::Exact).unwrap();
        assert_eq!(r.hits[0].template, TemplateId(g.len() as u64));
        let naive = (0..g.len())
            .map(|i| dot_f32(g.row(i), probe.as_slice()))
            .fold(f32::MIN, f32::max);
        assert_eq!(r.hits[0].score, naive);
    }

    #[test]
    fn growth_keeps_rows() {
        let mut g = Gallery::new("m", 4, 1);
        for i in 0..100u64 {
            let t = i as f32 * 0.03;
            let v = [t.cos(), t.sin(), 0.0, 0.0];
            g.insert(&sid(&format!("s{i}")), TemplateId(i), &emb(&v))
                .unwrap();
        }
        assert_eq!(g.len(), 100);
        let t = 99.0f32 * 0.03;
        let r = g
            .identify(&emb(&[t.cos(), t.sin(), 0.0, 0.0]), 1, SearchMode::Exact)
            .unwrap();
        assert_eq!(r.hits[0].template, TemplateId(99));
        assert!(format!("{g:?}").contains("rows: 100"));
    }

    /// The full scan the modes are held to: every row scored exactly, then collated.
    fn reference(g: &Gallery, probe: &Embedding, k: usize) -> (Vec<Hit>, Option<f32>) {
        let all = g.rescore(0..g.len() as u32, probe.as_slice());
        g.collate(all, k)
    }

    fn decision(
        hits: &[Hit],
        second: Option<f32>,
        threshold: f32,
        margin: f32,
    ) -> Option<(facegate_policy::IdentifyOutcome, Option<SubjectId>)> {
        let b = hits.first()?;
        let o = facegate_policy::identification_outcome(b.score, second, threshold, margin);
        Some((
            o,
            (o == facegate_policy::IdentifyOutcome::Match).then(|| b.subject.clone()),
        ))
    }

    /// A face population plus adversarial near-ties: `dups` copies of row `target`, each moved
    /// by about `eps`, under other subjects (look-alikes) or the same one.
    fn tied_gallery(
        seed: u64,
        n: usize,
        dim: usize,
        target: usize,
        dups: usize,
        eps: f32,
    ) -> Gallery {
        let model = crate::FaceModel::new(dim, seed);
        let mut g = model.gallery(n);
        let mut rng = XorShift::new(seed ^ 0x71e5);
        let base = g.row(target).to_vec();
        for d in 0..dups {
            let mut v: Vec<f32> = base.iter().map(|x| x + eps * rng.uniform()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            let subject = if d % 3 == 2 {
                g.rows()[target].subject.clone()
            } else {
                sid(&format!("twin-{d}"))
            };
            g.push_row(subject, TemplateId(10_000_000 + d as u64), &v);
        }
        g
    }

    #[test]
    fn sign_codes_differ_in_the_angles_share_of_bits() {
        let dim = 512;
        let rot = Rotation::new(dim, ROTATION_SEED);
        let mut rng = XorShift::new(9);
        let mut worst_z = 0.0f64;
        for c in [0.0f32, 0.3, 0.5, 0.7, 0.9] {
            let mut sum = 0.0;
            let trials = 200;
            for _ in 0..trials {
                let mut a = vec![0.0f32; dim];
                let mut o = vec![0.0f32; dim];
                rng.unit_vector(&mut a);
                rng.unit_vector(&mut o);
                // b = c a + sqrt(1 - c^2) (o orthogonalised to a)
                let d: f32 = a.iter().zip(&o).map(|(x, y)| x * y).sum();
                o.iter_mut().zip(&a).for_each(|(y, x)| *y -= d * x);
                let on = o.iter().map(|x| x * x).sum::<f32>().sqrt();
                let s = (1.0 - c * c).sqrt();
                let b: Vec<f32> = a.iter().zip(&o).map(|(x, y)| c * x + s * y / on).collect();
                let (ca, cb) = (rot.code(&a), rot.code(&b));
                let h: u32 = ca
                    .iter()
                    .zip(cb.iter())
                    .map(|(x, y)| (x ^ y).count_ones())
                    .sum();
                let q = f64::from(c).acos() / std::f64::consts::PI;
                let z = (f64::from(h) - 512.0 * q) / (512.0 * q * (1.0 - q)).sqrt();
                worst_z = worst_z.max(z.abs());
                sum += f64::from(h);
            }
            let mean = sum / f64::from(trials) / 512.0;
            let q = f64::from(c).acos() / std::f64::consts::PI;
            assert!((mean - q).abs() < 0.01, "cos {c}: {mean} vs {q}");
        }
        // 1,000 pairs stay well inside the six standard deviations the prefilter relies on.
        assert!(worst_z < 4.5, "{worst_z}");
        // The required distance grows as the level falls, and none is past the code.
        let a = sign_code_distance(0.8, 512).unwrap();
        let b = sign_code_distance(0.6, 512).unwrap();
        assert!(a < b && b <= 512);
        assert_eq!(sign_code_distance(-1.0, 512), None);
        assert_eq!(sign_code_distance(f32::NAN, 512), None);
    }

    #[test]
    fn the_rules_critical_level() {
        let r = MatchRule {
            threshold: Some(0.5),
            margin: 0.05,
        };
        // Below the threshold: nothing may reach it.
        assert_eq!(r.level(0.4, Some(0.3)), 0.5);
        // A match: nothing may come within the margin of the best.
        assert!((r.level(0.8, Some(0.3)) - 0.75).abs() < 1e-6);
        // Ambiguous: nothing may beat the second by the margin.
        assert!((r.level(0.8, Some(0.78)) - 0.83).abs() < 1e-6);
        assert!((MatchRule::TOP1.level(0.8, None) - 0.7).abs() < 1e-6);
    }

    #[test]
    fn codes_follow_removal_and_bytes_are_counted() {
        let mut g = Gallery::synthetic(40, 512, 2);
        let probe = g.synthetic_probe(39, 0.0, 0).unwrap();
        assert!(g.remove_template(TemplateId(1)));
        assert!(g.codes.buf[39 * 8..40 * 8].iter().all(|w| *w == 0));
        assert_eq!(g.codes.as_slice().len(), 39 * 8);
        let r = g.identify(&probe, 1, SearchMode::Prefiltered).unwrap();
        assert_eq!(r.hits[0].template, TemplateId(40));
        assert_eq!(g.bytes_per_template(), 512 * 5 + 4 * 64 + 17);
        assert_eq!((g.code_l1.len(), g.code_beta.len()), (39, 39));
    }

    #[test]
    fn prefilter_answers_mated_probes_and_falls_back_for_doubtful_ones() {
        let model = crate::FaceModel::new(512, 5);
        let g = model.gallery(6000);
        let mut answered = 0;
        let mut fell_back = 0;
        for (i, (probe, _)) in model.probes(6000, 40).iter().enumerate() {
            let (hits, second) = reference(&g, probe, 3);
            let r = g.identify(probe, 3, SearchMode::Prefiltered).unwrap();
            match r.mode {
                SearchMode::Prefiltered => answered += 1,
                SearchMode::Quantised => fell_back += 1,
                m => panic!("{m:?}"),
            }
            assert_eq!(r.hits[0], hits[0], "probe {i}");
            if r.mode == SearchMode::Quantised {
                assert_eq!((&r.hits, r.second_identity_score), (&hits, second));
            }
            assert!(r.rescored < g.len(), "probe {i} re-scored everything");
        }
        assert!(
            answered >= 10 && fell_back >= 10,
            "{answered} / {fell_back}"
        );
        // Auto picks the prefilter at this size, exact below the size threshold.
        let probe = model.mated_probe(17, 1).unwrap();
        let auto = g.identify(&probe, 1, SearchMode::Auto).unwrap();
        assert_ne!(auto.mode, SearchMode::Exact);
        let small = model.gallery(100);
        let auto = small.identify(&probe, 1, SearchMode::Auto).unwrap();
        assert_eq!(auto.mode, SearchMode::Exact);
    }

    /// The inverse of `rot` (up to scale), for placing vectors at chosen rotated coordinates.
    fn unrotate(rot: &Rotation, rotated: &[f32]) -> Vec<f32> {
        let mut buf = rotated.to_vec();
        for signs in rot.signs.chunks_exact(rot.padded).rev() {
            fwht(&mut buf);
            buf.iter_mut().zip(signs).for_each(|(x, s)| *x *= s);
        }
        buf.truncate(rot.dim);
        let norm = buf.iter().map(|x| x * x).sum::<f32>().sqrt();
        buf.iter_mut().for_each(|x| *x /= norm);
        buf
    }

    #[test]
    fn the_asymmetric_estimate_is_bounded_above_and_spreads_as_stated() {
        let dim = 512;
        let rot = Rotation::new(dim, ROTATION_SEED);
        let mut rng = XorShift::new(21);
        let mut worst = 0.0f64;
        let (mut sum, mut sum2, mut count) = (0.0f64, 0.0f64, 0usize);
        for c in [0.0f32, 0.2, 0.4, 0.6, 0.8] {
            for _ in 0..300 {
                let mut a = vec![0.0f32; dim];
                let mut o = vec![0.0f32; dim];
                rng.unit_vector(&mut a);
                rng.unit_vector(&mut o);
                let d: f32 = a.iter().zip(&o).map(|(x, y)| x * y).sum();
                o.iter_mut().zip(&a).for_each(|(y, x)| *y -= d * x);
                let on = o.iter().map(|x| x * x).sum::<f32>().sqrt();
                let s = (1.0 - c * c).sqrt();
                let b: Vec<f32> = a.iter().zip(&o).map(|(x, y)| c * x + s * y / on).collect();
                let (y, z) = (rot.rotate(&a), rot.rotate(&b));
                let code = sign_bits(&y);
                let (l1, beta) = code_spread(&y);
                let probe = AsymProbe::new(&z);
                // The unrolled and the any-width sums agree, and the bound lies above <s, z>.
                let mut fixed = [0u64; 8];
                fixed.copy_from_slice(&code);
                let (sign, planes) = probe.fixed::<8>();
                let u = AsymProbe::diff_sum::<8>(&fixed, &sign, &planes);
                assert_eq!(u, probe.diff_sum_any(&code));
                let exact: f64 = y
                    .iter()
                    .zip(z.iter())
                    .map(|(yi, zi)| {
                        if *yi > 0.0 {
                            f64::from(*zi)
                        } else {
                            -f64::from(*zi)
                        }
                    })
                    .sum();
                let upper = probe.l1 - 2.0 * probe.delta * f64::from(u);
                assert!(upper >= exact - 1e-9, "{upper} < {exact}");
                // Normalised error of the estimate against the true cosine.
                let cos: f64 = y
                    .iter()
                    .zip(z.iter())
                    .map(|(p, q)| f64::from(*p) * f64::from(*q))
                    .sum();
                let est = exact / f64::from(l1);
                let scale = (1.0 - cos * cos).sqrt() * f64::from(beta) / ((dim - 1) as f64).sqrt();
                let t = (est - cos) / scale;
                worst = worst.max(t.abs());
                sum += t;
                sum2 += t * t;
                count += 1;
            }
        }
        let mean = sum / count as f64;
        let sd = (sum2 / count as f64 - mean * mean).sqrt();
        // Unbiased with unit spread, as for a uniformly random rotation; 1,500 pairs stay far
        // inside the 6.5 the check relies on.
        assert!(mean.abs() < 0.1, "mean {mean}");
        assert!((0.85..1.15).contains(&sd), "sd {sd}");
        assert!(worst < 4.8, "worst {worst}");
        // Probe rounding: the bound is at most a few hundredths above the estimate.
        let z = rot.rotate(&unrotate(&rot, &{
            let mut v = vec![0.0f32; dim];
            v[7] = 1.0;
            v
        }));
        assert!((z[7] - 1.0).abs() < 1e-4, "unrotate inverts rotate");
    }

    /// Runs the pass through the dispatching kernel and the portable ones: the same rows.
    #[test]
    fn the_pass_kernels_agree() {
        let model = crate::FaceModel::new(512, 8);
        let g = model.gallery(3000);
        // Natural templates are spread under every rotation; a crafted spike is not.
        assert_eq!(g.concentrated_rows(), 0);
        let (peaky, _) = peaky_gallery(3, 10, 6, 0.5);
        assert_eq!(peaky.concentrated_rows(), 6);
        for (i, (probe, _)) in model.probes(3000, 12).iter().enumerate() {
            let p = probe.as_slice();
            let rotated = g.rotation.rotate(p);
            let code = sign_bits(&rotated);
            let asym = AsymProbe::new(&rotated);
            let mut dist = vec![0u16; g.len()];
            let mut hist = vec![0u32; 513];
            hamming_scan(g.codes.as_slice(), 8, &code, &mut dist, &mut hist, true);
            let mut dist_old = vec![0u16; g.len()];
            let mut hist_old = vec![0u32; 513];
            hamming_scan(
                g.codes.as_slice(),
                8,
                &code,
                &mut dist_old,
                &mut hist_old,
                false,
            );
            assert_eq!((&dist, &hist), (&dist_old, &hist_old));
            let mut extra_q = Vec::new();
            for r in &g.extra_rotations {
                extra_q.extend_from_slice(&r.code(p));
            }
            let marked: Vec<bool> = (0..g.len()).map(|r| r % 13 == i % 13).collect();
            for level in [0.3f32, 0.45, 0.6] {
                let need = sign_code_distance(level, 512).unwrap();
                let near = dist.iter().filter(|d| usize::from(**d) < need).count();
                let c = f64::from(level);
                let pass = Pass {
                    codes: g.codes.as_slice(),
                    extra: g.extra.as_slice(),
                    code_l1: &g.code_l1,
                    code_beta: &g.code_beta,
                    dist: &dist,
                    marked: &marked,
                    concentrated: &g.concentrated,
                    asym: &asym,
                    extra_q: &extra_q,
                    need: need as u16,
                    need_all: sign_code_distance(level, 2048).unwrap() as u16,
                    level: c,
                    spread: ASYM_T * (1.0 - c * c).sqrt() / 511f64.sqrt(),
                    room: usize::MAX,
                };
                let run = |f: &dyn Fn(&mut Vec<u32>, &mut PrefilterStages) -> bool| {
                    let (mut out, mut st) = (Vec::new(), PrefilterStages::default());
                    assert!(f(&mut out, &mut st));
                    (out, st)
                };
                let best = run(&|o, st| pass_candidates(&pass, 8, near, o, st));
                let unrolled = run(&|o, st| pass_candidates_w::<8>(&pass, near, o, st));
                let any = run(&|o, st| pass_candidates_w::<0>(&pass, near, o, st));
                assert_eq!(best, unrolled, "probe {i} level {level}");
                assert_eq!(best, any, "probe {i} level {level}");
                assert!(best.1.first_code >= best.1.asymmetric);
                assert!(best.1.asymmetric >= best.1.all_codes);
                // No row the full scan puts at the level or above is left out.
                for (r, m) in marked.iter().enumerate() {
                    if !m && dot_f32(g.row(r), p) >= level {
                        assert!(best.0.contains(&(r as u32)), "probe {i} row {r}");
                    }
                }
            }
        }
    }

    /// A face population plus rows placed where the checks are weakest: templates whose
    /// rotation is concentrated on a few coordinates (their sign code says little, `beta` is
    /// large), and a probe mixed from one of them at a cosine near `level`.
    fn peaky_gallery(seed: u64, n: usize, spikes: usize, mix: f32) -> (Gallery, Embedding) {
        let dim = 512;
        let model = crate::FaceModel::new(dim, seed);
        let mut g = model.gallery(n);
        let rot = Rotation::new(dim, ROTATION_SEED);
        let mut rng = XorShift::new(seed ^ 0x5b1e);
        let mut first = Vec::new();
        for d in 0..spikes {
            let mut v = vec![0.0f32; dim];
            for _ in 0..(1 + d % 4) {
                v[(rng.next() % dim as u64) as usize] += 1.0 + 0.5 * rng.uniform();
            }
            for x in v.iter_mut() {
                *x += 0.02 * rng.uniform();
            }
            // Concentrated under the first rotation, or under the second code's.
            let row = if d % 3 == 1 {
                unrotate(&g.extra_rotations[0], &v)
            } else {
                unrotate(&rot, &v)
            };
            if d == 0 {
                first = row.clone();
            }
            g.push_row(
                SubjectId::new(format!("spike-{d}")).unwrap(),
                TemplateId(20_000_000 + d as u64),
                &row,
            );
        }
        let stranger = model.stranger(seed).unwrap();
        let s = stranger.as_slice();
        let p: Vec<f32> = first
            .iter()
            .zip(s)
            .map(|(a, b)| mix * a + (1.0 - mix * mix).max(0.0).sqrt() * b)
            .collect();
        (g, Embedding::from_raw(p).unwrap())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// The bounded int8 scan returns the full scan's hits and second score exactly, also
        /// with near-duplicate rows whose int8 scores collide.
        #[test]
        fn quantised_is_the_full_scan(
            seed in proptest::prelude::any::<u64>(),
            n in 1usize..400,
            dim in 8usize..96,
            dups in 0usize..8,
            eps_exp in 2i32..7,
            k in 1usize..5,
            mated in proptest::prelude::any::<bool>(),
        ) {
            let target = (seed as usize) % n;
            let g = tied_gallery(seed, n, dim, target, dups, 10f32.powi(-eps_exp));
            let model = crate::FaceModel::new(dim, seed);
            let probe = if mated { model.mated_probe(target, seed) } else { model.stranger(seed) };
            let probe = probe.unwrap();
            let (hits, second) = reference(&g, &probe, k);
            let r = g.identify(&probe, k, SearchMode::Quantised).unwrap();
            proptest::prop_assert_eq!(&r.hits, &hits);
            proptest::prop_assert_eq!(r.second_identity_score, second);
        }

        /// The prefilter keeps the full scan's decision under the rule it is told (and the
        /// top-1 whenever that is a match or no threshold is told), with near-ties placed at
        /// the threshold and margin.
        #[test]
        fn prefiltered_keeps_the_decision(
            seed in proptest::prelude::any::<u64>(),
            n in 600usize..2500,
            dups in 0usize..6,
            eps_exp in 2i32..7,
            threshold in proptest::option::of(0.2f32..0.9),
            margin in 0.0f32..0.15,
            k in 1usize..4,
            mated in proptest::prelude::any::<bool>(),
        ) {
            let dim = 256;
            let target = (seed as usize) % n;
            let g = tied_gallery(seed, n, dim, target, dups, 10f32.powi(-eps_exp));
            let model = crate::FaceModel::new(dim, seed);
            let probe = if mated { model.mated_probe(target, seed) } else { model.stranger(seed) };
            let probe = probe.unwrap();
            // Put the threshold right at the best score now and then (a tie with the rule).
            let (hits, second) = reference(&g, &probe, k);
            let threshold = threshold.map(|t| if seed % 4 == 0 { hits[0].score } else { t });
            let rule = MatchRule { threshold, margin };
            let r = g.identify_with(&probe, k, SearchMode::Prefiltered, rule).unwrap();
            let t = threshold.unwrap_or(0.35);
            proptest::prop_assert_eq!(
                decision(&r.hits, r.second_identity_score, t, margin),
                decision(&hits, second, t, margin)
            );
            let matched = decision(&hits, second, t, margin)
                .is_some_and(|d| d.0 == facegate_policy::IdentifyOutcome::Match);
            if threshold.is_none() || matched {
                proptest::prop_assert_eq!(&r.hits[0], &hits[0]);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]

        /// The prefilter keeps the decision with 512-d codes (the vector kernels) and rows
        /// whose sign codes say little, a probe placed near one of them.
        #[test]
        fn prefiltered_keeps_the_decision_for_peaky_rows(
            seed in proptest::prelude::any::<u64>(),
            n in 1200usize..3000,
            spikes in 1usize..24,
            mix in 0.2f32..0.8,
            threshold in proptest::option::of(0.2f32..0.8),
            margin in 0.0f32..0.12,
            k in 1usize..4,
        ) {
            let (g, probe) = peaky_gallery(seed, n, spikes, mix);
            let (hits, second) = reference(&g, &probe, k);
            let threshold = threshold.map(|t| if seed % 4 == 0 { hits[0].score } else { t });
            let rule = MatchRule { threshold, margin };
            let r = g.identify_with(&probe, k, SearchMode::Prefiltered, rule).unwrap();
            let t = threshold.unwrap_or(0.35);
            proptest::prop_assert_eq!(
                decision(&r.hits, r.second_identity_score, t, margin),
                decision(&hits, second, t, margin)
            );
            let matched = decision(&hits, second, t, margin)
                .is_some_and(|d| d.0 == facegate_policy::IdentifyOutcome::Match);
            if threshold.is_none() || matched {
                proptest::prop_assert_eq!(&r.hits[0], &hits[0]);
            }
        }
    }
}
