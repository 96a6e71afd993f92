//! Five-point alignment: the least-squares 4-DoF similarity transform (scale, rotation,
//! translation; Umeyama's method without reflection) from detected landmarks to the ArcFace
//! 112x112 template, and the warp that produces the embedder's input.

use facegate_types::{Frame, Landmarks5, Point};

pub use crate::affine::Affine;
use crate::preprocess::{Border, Normalise, warp_to_planar_with};

/// The ArcFace reference positions of the five landmarks in a 112x112 crop.
pub const ARCFACE_TEMPLATE: [Point; 5] = [
    Point::new(38.2946, 51.6963),
    Point::new(73.5318, 51.5014),
    Point::new(56.0252, 71.7366),
    Point::new(41.5493, 92.3655),
    Point::new(70.7299, 92.2041),
];

/// Side of the aligned crop.
pub const ALIGNED_SIZE: u32 = 112;

/// The similarity transform minimising the squared distance from `src` mapped to `dst`.
/// `None` when the source points coincide (no scale can be estimated).
pub fn similarity(src: &[Point], dst: &[Point]) -> Option<Affine> {
    let n = src.len().min(dst.len());
    if n < 2 {
        return None;
    }
    let nf = n as f64;
    let mean = |pts: &[Point]| {
        let (sx, sy) = pts[..n].iter().fold((0.0f64, 0.0f64), |(ax, ay), p| {
            (ax + f64::from(p.x), ay + f64::from(p.y))
        });
        (sx / nf, sy / nf)
    };
    let (mx, my) = mean(src);
    let (ux, uy) = mean(dst);
    let (mut sxx, mut num_a, mut num_b) = (0.0f64, 0.0f64, 0.0f64);
    for (s, d) in src[..n].iter().zip(&dst[..n]) {
        let (x, y) = (f64::from(s.x) - mx, f64::from(s.y) - my);
        let (u, v) = (f64::from(d.x) - ux, f64::from(d.y) - uy);
        sxx += x * x + y * y;
        num_a += x * u + y * v;
        num_b += x * v - y * u;
    }
    if sxx < 1e-9 {
        return None;
    }
    let a = num_a / sxx;
    let b = num_b / sxx;
    let tx = ux - (a * mx - b * my);
    let ty = uy - (b * mx + a * my);
    Some(Affine([
        a as f32, -b as f32, tx as f32, b as f32, a as f32, ty as f32,
    ]))
}

/// A face warped to the 112x112 template, as the embedder's normalised planar tensor.
#[derive(Clone)]
pub struct AlignedFace {
    /// Planar `3 x 112 x 112` values in the embedder's channel order and normalisation.
    pub tensor: Vec<f32>,
    /// Frame -> crop transform used.
    pub transform: Affine,
}

impl std::fmt::Debug for AlignedFace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlignedFace(<redacted>)")
    }
}

impl Drop for AlignedFace {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.tensor);
    }
}

impl AlignedFace {
    pub fn new() -> Self {
        Self {
            tensor: vec![0.0; (3 * ALIGNED_SIZE * ALIGNED_SIZE) as usize],
            transform: Affine([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
        }
    }
}

impl Default for AlignedFace {
    fn default() -> Self {
        Self::new()
    }
}

/// Aligns the face with `landmarks` into `out` (reusing its buffer). `None` when the landmarks
/// are degenerate.
pub fn align_into(
    frame: &Frame,
    landmarks: &Landmarks5,
    norm: Normalise,
    out: &mut AlignedFace,
) -> Option<()> {
    align_into_with(frame, landmarks, norm, Border::Zero, out)
}

/// [`align_into`] with the given [`Border`] where the crop reaches beyond the frame.
pub fn align_into_with(
    frame: &Frame,
    landmarks: &Landmarks5,
    norm: Normalise,
    border: Border,
    out: &mut AlignedFace,
) -> Option<()> {
    let to_crop = similarity(landmarks.points(), &ARCFACE_TEMPLATE)?;
    let to_src = to_crop.inverse()?;
    warp_to_planar_with(frame, &to_src, ALIGNED_SIZE, norm, border, &mut out.tensor);
    out.transform = to_crop;
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: Point, b: Point, tol: f32) -> bool {
        (a.x - b.x).abs() < tol && (a.y - b.y).abs() < tol
    }

    proptest! {
        #[test]
        fn recovers_a_known_similarity(scale in 0.2f32..5.0, angle in -3.0f32..3.0, tx in -200f32..200.0, ty in -200f32..200.0) {
            let (c, s) = (angle.cos() * scale, angle.sin() * scale);
            let truth = Affine([c, -s, tx, s, c, ty]);
            let dst: Vec<Point> = ARCFACE_TEMPLATE.iter().map(|p| truth.apply(*p)).collect();
            let est = similarity(&ARCFACE_TEMPLATE, &dst).unwrap();
            for (e, t) in est.0.iter().zip(truth.0.iter()) {
                prop_assert!((e - t).abs() < 1e-2 * (1.0 + t.abs()), "{:?} vs {:?}", est, truth);
            }
            let inv = est.inverse().unwrap();
            for p in ARCFACE_TEMPLATE {
                prop_assert!(close(inv.apply(est.apply(p)), p, 1e-2));
            }
        }
    }

    #[test]
    fn identity_for_identical_points_and_none_for_degenerate() {
        let est = similarity(&ARCFACE_TEMPLATE, &ARCFACE_TEMPLATE).unwrap();
        assert!((est.scale() - 1.0).abs() < 1e-5);
        assert!(est.0[2].abs() < 1e-3 && est.0[5].abs() < 1e-3);
        assert!(similarity(&[Point::new(1.0, 1.0); 5], &ARCFACE_TEMPLATE).is_none());
    }

    #[test]
    fn least_squares_is_not_thrown_by_one_noisy_point() {
        let mut dst: Vec<Point> = ARCFACE_TEMPLATE
            .iter()
            .map(|p| Point::new(p.x * 2.0 + 10.0, p.y * 2.0 + 5.0))
            .collect();
        dst[2].x += 3.0;
        let est = similarity(&ARCFACE_TEMPLATE, &dst).unwrap();
        assert!((est.scale() - 2.0).abs() < 0.05, "{}", est.scale());
    }
}
