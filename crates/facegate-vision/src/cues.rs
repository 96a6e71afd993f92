//! Cues a still picture or a screen cannot fake across frames: per-frame face samples (68
//! landmarks, head turn, eye opening, a tiny grey thumbnail) and what a window of them shows:
//! a frozen face (nothing changes beyond sensor noise), a face whose landmark motion one planar
//! homography explains (a photo or a phone moved by hand), or motion with depth (a head).
//!
//! Samples hold landmarks and pixels of a person: they live in memory for a few seconds, their
//! `Debug` is redacted, and nothing here logs or stores them.

use std::collections::VecDeque;
use std::time::Duration;

use facegate_types::{BBox, Frame, Landmarks5, Point};

/// Side of the grey thumbnail of the face box kept per sample.
pub const THUMB: usize = 16;

/// The 68 points of the landmark model in frame coordinates (iBUG 300-W order). `Debug` is
/// redacted.
#[derive(Clone, Copy, PartialEq)]
pub struct Landmarks68(pub [Point; 68]);

impl std::fmt::Debug for Landmarks68 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Landmarks68(redacted)")
    }
}

impl Landmarks68 {
    /// Distance between the eye centres (the scale every cue is measured in).
    pub fn interocular(&self) -> f32 {
        let (l, r) = (self.eye_centre(36), self.eye_centre(42));
        ((l.x - r.x).powi(2) + (l.y - r.y).powi(2)).sqrt()
    }

    fn eye_centre(&self, first: usize) -> Point {
        let (sx, sy) = self.0[first..first + 6]
            .iter()
            .fold((0.0, 0.0), |(ax, ay), p| (ax + p.x, ay + p.y));
        Point::new(sx / 6.0, sy / 6.0)
    }

    /// Head turn from the nose tip's place between the two ends of the jaw line: 0 when the
    /// nose sits midway, +1 when it reaches the end on the image's right, -1 the left. Depends
    /// on the person and the camera; challenges compare it with the same person's baseline.
    pub fn turn(&self) -> f32 {
        let (l, r, n) = (self.0[0].x, self.0[16].x, self.0[30].x);
        let span = r - l;
        if span.abs() < 1e-3 {
            return 0.0;
        }
        (((n - l) / span - 0.5) * 2.0).clamp(-1.5, 1.5)
    }

    /// Mean eye aspect ratio (lid opening over eye width) of both eyes.
    pub fn eye_opening(&self) -> f32 {
        let d = |a: Point, b: Point| ((a.x - b.x).powi(2) + (a.y - b.y).powi(2)).sqrt();
        let ear = |e: &[Point]| {
            let w = d(e[0], e[3]);
            if w < 1e-3 {
                0.0
            } else {
                (d(e[1], e[5]) + d(e[2], e[4])) / (2.0 * w)
            }
        };
        (ear(&self.0[36..42]) + ear(&self.0[42..48])) / 2.0
    }

    /// Face height (brow centre to chin) over width (jaw ends): a photo tilted or squashed
    /// changes it exactly as it changes the eyes' aspect, a blink does not.
    pub fn face_aspect(&self) -> f32 {
        let d = |a: Point, b: Point| ((a.x - b.x).powi(2) + (a.y - b.y).powi(2)).sqrt();
        let w = d(self.0[0], self.0[16]);
        if w < 1e-3 {
            0.0
        } else {
            d(self.0[27], self.0[8]) / w
        }
    }

    /// The five alignment points: eye contour means, nose tip, mouth corners.
    pub fn five(&self) -> Landmarks5 {
        let mean = |idx: [usize; 4]| {
            let (sx, sy) = idx.iter().fold((0.0, 0.0), |(ax, ay), &i| {
                (ax + self.0[i].x, ay + self.0[i].y)
            });
            Point::new(sx / 4.0, sy / 4.0)
        };
        Landmarks5([
            mean([37, 38, 40, 41]),
            mean([43, 44, 46, 47]),
            self.0[30],
            self.0[48],
            self.0[54],
        ])
    }
}

/// One observation of a tracked face. `Debug` is redacted.
#[derive(Clone, PartialEq)]
pub struct FaceSample {
    /// Media time of the frame.
    pub at: Duration,
    pub bbox: BBox,
    pub points: Landmarks68,
    /// [`Landmarks68::turn`].
    pub turn: f32,
    /// [`Landmarks68::eye_opening`] over [`Landmarks68::face_aspect`]: eye opening that a
    /// tilted or squashed picture does not change.
    pub eyes: f32,
    /// Grey thumbnail of the box, `THUMB` x `THUMB`, row-major.
    thumb: [u8; THUMB * THUMB],
}

impl std::fmt::Debug for FaceSample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaceSample")
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

impl FaceSample {
    /// A sample of `bbox` in `frame` with the landmarks found in it.
    pub fn new(frame: &Frame, bbox: BBox, points: Landmarks68) -> Self {
        Self {
            at: frame.timestamp,
            bbox,
            turn: points.turn(),
            eyes: {
                let aspect = points.face_aspect();
                if aspect > 1e-3 {
                    points.eye_opening() / aspect
                } else {
                    0.0
                }
            },
            thumb: thumbnail(frame, &bbox),
            points,
        }
    }

    /// Mean absolute grey difference (0-255) between two samples' thumbnails averaged over
    /// 4 x 4 blocks: sensor noise, uncorrelated from pixel to pixel, averages away; a change
    /// of the picture does not.
    pub fn pixel_change(&self, other: &FaceSample) -> f32 {
        const B: usize = THUMB / 4;
        let block = |t: &[u8; THUMB * THUMB], by: usize, bx: usize| {
            let mut acc = 0u32;
            for y in by * 4..by * 4 + 4 {
                for x in bx * 4..bx * 4 + 4 {
                    acc += u32::from(t[y * THUMB + x]);
                }
            }
            acc as f32 / 16.0
        };
        let mut sum = 0.0;
        for by in 0..B {
            for bx in 0..B {
                sum += (block(&self.thumb, by, bx) - block(&other.thumb, by, bx)).abs();
            }
        }
        sum / (B * B) as f32
    }
}

/// Grey box average of `bbox` on a `THUMB` x `THUMB` grid (4 x 4 taps per cell).
fn thumbnail(frame: &Frame, bbox: &BBox) -> [u8; THUMB * THUMB] {
    let mut out = [0u8; THUMB * THUMB];
    let (w, h) = (frame.width() as f32, frame.height() as f32);
    if w < 1.0 || h < 1.0 {
        return out;
    }
    let b = bbox.clamp_to(frame.width(), frame.height());
    let (cw, ch) = (b.width() / THUMB as f32, b.height() / THUMB as f32);
    let data = frame.data();
    let stride = frame.stride();
    for cy in 0..THUMB {
        for cx in 0..THUMB {
            let mut acc = 0u32;
            for ty in 0..4 {
                for tx in 0..4 {
                    let x = (b.x1 + (cx as f32 + (tx as f32 + 0.5) / 4.0) * cw).clamp(0.0, w - 1.0);
                    let y = (b.y1 + (cy as f32 + (ty as f32 + 0.5) / 4.0) * ch).clamp(0.0, h - 1.0);
                    let i = y as usize * stride + x as usize * 3;
                    let (r, g, bl) = (
                        u32::from(data[i]),
                        u32::from(data[i + 1]),
                        u32::from(data[i + 2]),
                    );
                    acc += (r * 77 + g * 150 + bl * 29) >> 8;
                }
            }
            out[cy * THUMB + cx] = (acc / 16) as u8;
        }
    }
    out
}

/// Limits of the motion cues, in interocular distances (and grey levels for pixels).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MotionLimits {
    /// Frozen: every sample differs from the window's first by at most this mean grey level
    /// (4 x 4 block averages of the box, which jitters by a few pixels on a still picture)...
    pub frozen_pixels: f32,
    /// ...and no landmark moved more than this. Measured: a still photo under sensor noise
    /// moves its landmarks by at most 0.023 interocular distances; live people holding still
    /// 0.11-0.43 over 0.7 s.
    pub frozen_points: f32,
    /// A pair shows "shape" motion when a 2-D similarity leaves more residual than this.
    pub min_shape_motion: f32,
    /// Shape motion that one homography explains to within this is planar...
    pub planar_residual: f32,
    /// ...and shape motion the homography leaves above this shows depth.
    pub depth_residual: f32,
    /// Planar pairs needed (with no pair showing depth) to call the face planar.
    pub planar_pairs: usize,
}

impl Default for MotionLimits {
    fn default() -> Self {
        Self {
            frozen_pixels: 3.0,
            frozen_points: 0.04,
            min_shape_motion: 0.06,
            planar_residual: 0.035,
            depth_residual: 0.07,
            planar_pairs: 6,
        }
    }
}

/// What a window of samples shows.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MotionReport {
    /// Every sample is the same picture (no change beyond sensor noise).
    pub frozen: bool,
    /// Pairs whose shape motion a homography explains.
    pub planar_pairs: usize,
    /// Pairs whose shape motion shows depth.
    pub depth_pairs: usize,
    /// Pairs compared.
    pub pairs: usize,
    /// Pairs with shape motion (beyond a similarity).
    pub shape_pairs: usize,
    /// The largest residual a homography left (interocular distances).
    pub max_depth_residual: f32,
}

impl MotionReport {
    /// A held photo or a screen moved by hand: most shape motion planar, never any depth.
    /// Conservative on purpose: the landmark model's noise (measured: a homography leaves a
    /// median 0.03-0.05 interocular distances on photos moved by hand, 0.12-0.14 on turning
    /// heads, 0.05 on a still face that blinks) keeps small motions from telling a plane from
    /// a head, so only clear planar motion counts.
    pub fn planar(&self, limits: &MotionLimits) -> bool {
        self.depth_pairs == 0
            && self.planar_pairs >= limits.planar_pairs
            && self.planar_pairs * 2 >= self.shape_pairs
    }
}

/// Compares the samples of a window: consecutive pairs for the frozen test, and each sample
/// against the samples up to `span` before it for the planar/depth test.
pub fn analyse_motion(samples: &VecDeque<FaceSample>, limits: &MotionLimits) -> MotionReport {
    let mut report = MotionReport {
        frozen: samples.len() >= 2,
        ..MotionReport::default()
    };
    let first = samples.front();
    for (a, b) in first.into_iter().cycle().zip(samples.iter().skip(1)) {
        let scale = a.points.interocular().max(1.0);
        let moved = a
            .points
            .0
            .iter()
            .zip(b.points.0.iter())
            .map(|(p, q)| ((p.x - q.x).powi(2) + (p.y - q.y).powi(2)).sqrt())
            .fold(0.0f32, f32::max)
            / scale;
        if a.pixel_change(b) > limits.frozen_pixels || moved > limits.frozen_points {
            report.frozen = false;
        }
    }
    // Shape motion is compared against a few reference samples spread over the window.
    let n = samples.len();
    if n < 2 {
        return report;
    }
    let refs = [0, n / 3, 2 * n / 3];
    for (k, &r) in refs.iter().enumerate() {
        if k > 0 && r == refs[k - 1] {
            continue;
        }
        for s in samples.iter().skip(r + 1) {
            let a = &samples[r].points;
            let scale = a.interocular().max(1.0);
            let Some(sim) = similarity_residual(&a.0, &s.points.0) else {
                continue;
            };
            let sim = sim / scale;
            report.pairs += 1;
            if sim < limits.min_shape_motion {
                continue;
            }
            report.shape_pairs += 1;
            let Some(hom) = homography_residual(&a.0, &s.points.0) else {
                continue;
            };
            let hom = hom / scale;
            report.max_depth_residual = report.max_depth_residual.max(hom);
            if hom <= limits.planar_residual {
                report.planar_pairs += 1;
            } else if hom >= limits.depth_residual {
                report.depth_pairs += 1;
            }
        }
    }
    report
}

/// RMS residual (pixels) of the best 2-D similarity (rotation, scale, translation) mapping `a`
/// onto `b`.
pub fn similarity_residual(a: &[Point], b: &[Point]) -> Option<f32> {
    let n = a.len().min(b.len());
    if n < 2 {
        return None;
    }
    let nf = n as f64;
    let (mut ax, mut ay, mut bx, mut by) = (0.0, 0.0, 0.0, 0.0);
    for i in 0..n {
        ax += f64::from(a[i].x);
        ay += f64::from(a[i].y);
        bx += f64::from(b[i].x);
        by += f64::from(b[i].y);
    }
    let (ax, ay, bx, by) = (ax / nf, ay / nf, bx / nf, by / nf);
    let (mut sxx, mut sab, mut sanb) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (px, py) = (f64::from(a[i].x) - ax, f64::from(a[i].y) - ay);
        let (qx, qy) = (f64::from(b[i].x) - bx, f64::from(b[i].y) - by);
        sxx += px * px + py * py;
        sab += px * qx + py * qy;
        sanb += px * qy - py * qx;
    }
    if sxx < 1e-9 {
        return None;
    }
    let (c, s) = (sab / sxx, sanb / sxx);
    let mut err = 0.0;
    for i in 0..n {
        let (px, py) = (f64::from(a[i].x) - ax, f64::from(a[i].y) - ay);
        let (qx, qy) = (f64::from(b[i].x) - bx, f64::from(b[i].y) - by);
        let (ex, ey) = (c * px - s * py - qx, s * px + c * py - qy);
        err += ex * ex + ey * ey;
    }
    Some((err / nf).sqrt() as f32)
}

/// RMS residual (pixels) of the least-squares homography mapping `a` onto `b` (normalised
/// coordinates, `h33 = 1`), measured in `b`.
pub fn homography_residual(a: &[Point], b: &[Point]) -> Option<f32> {
    let n = a.len().min(b.len());
    if n < 5 {
        return None;
    }
    let (na, ta) = normaliser(&a[..n])?;
    let (nb, tb) = normaliser(&b[..n])?;
    // Normal equations of the 8-unknown linear system (two rows per point).
    let mut m = [[0.0f64; 9]; 8];
    for i in 0..n {
        let (x, y) = ta(a[i]);
        let (u, v) = tb(b[i]);
        let rows = [
            ([x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y], u),
            ([0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y], v),
        ];
        for (r, rhs) in rows {
            for j in 0..8 {
                for k in 0..8 {
                    m[j][k] += r[j] * r[k];
                }
                m[j][8] += r[j] * rhs;
            }
        }
    }
    let h = solve8(m)?;
    let mut err = 0.0;
    for i in 0..n {
        let (x, y) = ta(a[i]);
        let w = h[6] * x + h[7] * y + 1.0;
        if w.abs() < 1e-9 {
            return None;
        }
        let (u, v) = (
            (h[0] * x + h[1] * y + h[2]) / w,
            (h[3] * x + h[4] * y + h[5]) / w,
        );
        let (bu, bv) = tb(b[i]);
        err += (u - bu).powi(2) + (v - bv).powi(2);
    }
    // Back to pixels of `b`: the normalisation scaled by `nb`.
    Some(((err / n as f64).sqrt() / nb) as f32).filter(|_| na > 0.0)
}

/// Hartley normalisation: centroid to the origin, mean distance sqrt(2). Returns the scale and
/// the mapping.
#[allow(clippy::type_complexity)]
fn normaliser(p: &[Point]) -> Option<(f64, Box<dyn Fn(Point) -> (f64, f64)>)> {
    let n = p.len() as f64;
    let cx = p.iter().map(|q| f64::from(q.x)).sum::<f64>() / n;
    let cy = p.iter().map(|q| f64::from(q.y)).sum::<f64>() / n;
    let d = p
        .iter()
        .map(|q| ((f64::from(q.x) - cx).powi(2) + (f64::from(q.y) - cy).powi(2)).sqrt())
        .sum::<f64>()
        / n;
    if d < 1e-9 {
        return None;
    }
    let s = std::f64::consts::SQRT_2 / d;
    Some((
        s,
        Box::new(move |q: Point| ((f64::from(q.x) - cx) * s, (f64::from(q.y) - cy) * s)),
    ))
}

/// Gaussian elimination with partial pivoting on an 8 x 9 augmented matrix.
#[allow(clippy::needless_range_loop)]
fn solve8(mut m: [[f64; 9]; 8]) -> Option<[f64; 8]> {
    for col in 0..8 {
        let pivot = (col..8).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[pivot][col].abs() < 1e-12 {
            return None;
        }
        m.swap(col, pivot);
        for row in 0..8 {
            if row != col {
                let f = m[row][col] / m[col][col];
                for k in col..9 {
                    m[row][k] -= f * m[col][k];
                }
            }
        }
    }
    let mut x = [0.0; 8];
    for i in 0..8 {
        x[i] = m[i][8] / m[i][i];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rough 3-D face: 68 points with depth (nose forward, jaw back).
    fn face3d() -> Vec<[f32; 3]> {
        (0..68)
            .map(|i| {
                let a = i as f32 * 0.37;
                let (x, y) = (a.cos() * (30.0 + (i % 7) as f32 * 4.0), a.sin() * 40.0);
                let z = match i {
                    27..=35 => 25.0,
                    0..=16 => -20.0,
                    _ => (i % 5) as f32 * 3.0,
                };
                [x, y, z]
            })
            .collect()
    }

    fn project(p: &[[f32; 3]], yaw: f32, tx: f32) -> Vec<Point> {
        p.iter()
            .map(|&[x, y, z]| {
                let (c, s) = (yaw.cos(), yaw.sin());
                let (xr, zr) = (c * x + s * z, -s * x + c * z);
                let f = 400.0 / (400.0 + zr);
                Point::new(xr * f + 200.0 + tx, y * f + 200.0)
            })
            .collect()
    }

    fn homography(p: &[Point], h: [f32; 8]) -> Vec<Point> {
        p.iter()
            .map(|q| {
                let w = h[6] * q.x + h[7] * q.y + 1.0;
                Point::new(
                    (h[0] * q.x + h[1] * q.y + h[2]) / w,
                    (h[3] * q.x + h[4] * q.y + h[5]) / w,
                )
            })
            .collect()
    }

    #[test]
    fn a_homography_is_recovered_exactly_and_depth_is_not() {
        let flat = project(&face3d(), 0.0, 0.0);
        let tilted = homography(&flat, [1.05, 0.08, -12.0, -0.03, 0.97, 9.0, 4e-4, -2e-4]);
        let hom = homography_residual(&flat, &tilted).unwrap();
        assert!(hom < 1e-2, "{hom}");
        let sim = similarity_residual(&flat, &tilted).unwrap();
        assert!(sim > 0.5, "a tilt is not a similarity: {sim}");
        let turned = project(&face3d(), 0.5, 5.0);
        let hom = homography_residual(&flat, &turned).unwrap();
        assert!(hom > 1.0, "a turned 3-D face is not a homography: {hom}");
    }

    #[test]
    fn a_similarity_leaves_no_residual() {
        let a = project(&face3d(), 0.0, 0.0);
        let (c, s) = (0.2f32.cos() * 1.3, 0.2f32.sin() * 1.3);
        let b: Vec<Point> = a
            .iter()
            .map(|p| Point::new(c * p.x - s * p.y + 7.0, s * p.x + c * p.y - 3.0))
            .collect();
        assert!(similarity_residual(&a, &b).unwrap() < 1e-3);
        assert!(homography_residual(&a, &b).unwrap() < 1e-3);
    }

    #[test]
    fn degenerate_points_give_none() {
        let p = vec![Point::new(1.0, 1.0); 68];
        assert!(homography_residual(&p, &p).is_none());
        assert!(similarity_residual(&p, &p).is_none());
    }

    #[test]
    fn turn_and_eye_opening_follow_the_points() {
        let mut p = [Point::new(0.0, 0.0); 68];
        p[0] = Point::new(0.0, 50.0);
        p[16] = Point::new(100.0, 50.0);
        p[30] = Point::new(50.0, 50.0);
        // Eyes 20 wide, lids 6 apart.
        for (first, x0) in [(36usize, 20.0f32), (42, 60.0)] {
            let e = [
                (0.0, 0.0),
                (6.0, -3.0),
                (14.0, -3.0),
                (20.0, 0.0),
                (14.0, 3.0),
                (6.0, 3.0),
            ];
            for (k, (dx, dy)) in e.into_iter().enumerate() {
                p[first + k] = Point::new(x0 + dx, 30.0 + dy);
            }
        }
        let lm = Landmarks68(p);
        assert!(lm.turn().abs() < 1e-6);
        assert!((lm.eye_opening() - 0.3).abs() < 1e-5);
        p[30] = Point::new(90.0, 50.0);
        assert!((Landmarks68(p).turn() - 0.8).abs() < 1e-5);
        assert!((lm.interocular() - 40.0).abs() < 1e-4);
        assert_eq!(format!("{lm:?}"), "Landmarks68(redacted)");
    }
}
