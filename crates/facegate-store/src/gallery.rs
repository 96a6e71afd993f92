//! The in-memory gallery: every live template of one model, decrypted once into one contiguous,
//! row-major `n x dim` matrix of L2-normalised f32, for 1:1 **verification** and 1:N
//! **identification** (the two modes of Art. 19 of the Measures).
//!
//! Memory: the matrix (and its int8 copy) live in buffers that are `mlock`ed where the OS allows
//! (a warning is logged when it does not, e.g. under a small `RLIMIT_MEMLOCK`; the unit sets
//! `LimitMEMLOCK=`), so templates are not written to swap, and are zeroised when the gallery is
//! dropped, when a buffer grows (the old buffer), and row by row when a template is removed.
//!
//! Search: identification scans either the exact f32 matrix ([`SearchMode::Exact`]) or an int8
//! copy with one scale per row ([`SearchMode::Quantised`], the default for large galleries),
//! keeping the best candidates, then re-scores those candidates exactly in f32. Scores returned
//! are always exact cosines. The int8 scan reads a quarter of the bytes, and the scan is memory
//! bandwidth bound, so it is about four times faster; the candidate list is wide enough (at least
//! 64 rows) that the quantisation error (well under 0.01 in cosine for 512-d unit vectors) does
//! not change which identities come out on top in practice. Galleries above a size threshold are
//! scanned by two threads (`std::thread::scope`).
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

/// Which scan identification uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchMode {
    /// Quantised for large galleries, exact for small ones.
    #[default]
    Auto,
    /// Scan every row in f32.
    Exact,
    /// Scan the int8 copy, then re-score the best candidates in f32.
    Quantised,
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
    /// The scan that was used (never `Auto`).
    pub mode: SearchMode,
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
            .field("locked", &(self.exact.locked && self.quant.locked))
            .finish_non_exhaustive()
    }
}

impl Gallery {
    /// An empty gallery for `dim`-dimensional templates of `model_id`, with room for `capacity`
    /// rows before it first grows.
    pub fn new(model_id: impl Into<String>, dim: usize, capacity: usize) -> Self {
        let cap = capacity.max(16);
        Self {
            model_id: model_id.into(),
            dim,
            exact: SecretBuf::new(cap * dim),
            quant: SecretBuf::new(cap * dim),
            inv_scale: Vec::with_capacity(cap),
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
        self.exact.locked && self.quant.locked
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
        let (q, inv) = quantise_row(values);
        self.exact.push(values);
        self.quant.push(&q);
        drop(q);
        self.inv_scale.push(inv);
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
    /// score. Scores are exact cosines whatever the mode.
    pub fn identify(
        &self,
        probe: &Embedding,
        k: usize,
        mode: SearchMode,
    ) -> Result<Identification, StoreError> {
        self.check_dim(probe.dim())?;
        let n = self.rows.len();
        let mode = match mode {
            SearchMode::Auto if n >= QUANT_MIN_ROWS => SearchMode::Quantised,
            SearchMode::Auto => SearchMode::Exact,
            m => m,
        };
        let k = k.max(1);
        let p = probe.as_slice();
        // Enough rows to find k + 1 distinct identities even when several templates per person
        // crowd the top.
        let want = (4 * (k + 1)).max(16);
        let mut candidates = match mode {
            SearchMode::Quantised => {
                let (q, _) = quantise_row(p);
                let found = self.scan(want.max(QUANT_CANDIDATES), |rows, top| {
                    scan_i8(
                        self.quant.as_slice(),
                        &self.inv_scale,
                        self.dim,
                        rows,
                        &q,
                        top,
                    );
                });
                // Exact re-score.
                let mut c: Vec<(f32, u32)> = found
                    .into_iter()
                    .map(|(_, r)| (dot_f32(self.row(r as usize), p), r))
                    .collect();
                c.sort_by(|a, b| b.0.total_cmp(&a.0));
                c
            }
            _ => self.scan(want, |rows, top| {
                scan_f32(self.exact.as_slice(), self.dim, rows, p, top);
            }),
        };
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0));

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
        Ok(Identification {
            hits,
            second_identity_score: second,
            scanned: n,
            mode,
        })
    }

    /// Runs `kernel` over all rows (split over two threads when large) and merges the top lists.
    fn scan<F>(&self, keep: usize, kernel: F) -> Vec<(f32, u32)>
    where
        F: Fn(std::ops::Range<usize>, &mut TopN) + Sync,
    {
        let n = self.rows.len();
        let threads = if n * self.dim >= PARALLEL_MIN_ELEMENTS {
            std::thread::available_parallelism()
                .map_or(1, |p| p.get())
                .clamp(1, SEARCH_THREADS)
        } else {
            1
        };
        if threads == 1 {
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
    top: &mut TopN,
) {
    // Rows are ranked on the integer dot times the row's own scale; the probe's scale is common
    // to all rows and does not change the order.
    let block = &m[rows.start * dim..rows.end * dim];
    let scales = &inv_scale[rows.clone()];
    for (i, (row, s)) in block.chunks_exact(dim).zip(scales).enumerate() {
        top.offer(dot_i8(row, q) as f32 * s, (rows.start + i) as u32);
    }
}

/// Quantises a unit vector to int8 with one scale: returns the codes and `max|x| / 127`.
fn quantise_row(v: &[f32]) -> (zeroize::Zeroizing<Vec<i8>>, f32) {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { 127.0 / max } else { 0.0 };
    let q = v
        .iter()
        .map(|x| (x * scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (
        zeroize::Zeroizing::new(q),
        if max > 0.0 { max / 127.0 } else { 0.0 },
    )
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
}
