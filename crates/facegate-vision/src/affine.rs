//! The 2x3 affine map shared by alignment (which estimates it) and pre-processing (which warps
//! with it). It sits below both so neither module depends on the other for it.

use facegate_types::Point;

/// A 2x3 affine map `(x, y) -> (a x + b y + c, d x + e y + f)`, stored `[a, b, c, d, e, f]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine(pub [f32; 6]);

impl Affine {
    pub fn apply(&self, p: Point) -> Point {
        let m = self.0;
        Point::new(
            m[0] * p.x + m[1] * p.y + m[2],
            m[3] * p.x + m[4] * p.y + m[5],
        )
    }

    /// The inverse map, or `None` when the linear part is singular.
    pub fn inverse(&self) -> Option<Affine> {
        let [a, b, c, d, e, f] = self.0;
        let det = a * e - b * d;
        if det.abs() < 1e-12 || !det.is_finite() {
            return None;
        }
        let (ia, ib, id, ie) = (e / det, -b / det, -d / det, a / det);
        Some(Affine([
            ia,
            ib,
            -(ia * c + ib * f),
            id,
            ie,
            -(id * c + ie * f),
        ]))
    }

    /// Uniform scale of a similarity transform.
    pub fn scale(&self) -> f32 {
        (self.0[0] * self.0[0] + self.0[3] * self.0[3]).sqrt()
    }
}
