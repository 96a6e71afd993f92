use std::fmt;

use serde::{Deserialize, Serialize};

/// A point in image pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Point {
    pub x: f32,
    pub y: f32,
}

impl Point {
    pub const fn new(x: f32, y: f32) -> Self {
        Self { x, y }
    }
}

/// An axis-aligned box in pixel coordinates, corners `(x1, y1)` (inclusive) to `(x2, y2)`.
///
/// A box locates a face in a frame; it does not describe the face, so it may be logged and
/// serialised.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BBox {
    pub const fn new(x1: f32, y1: f32, x2: f32, y2: f32) -> Self {
        Self { x1, y1, x2, y2 }
    }

    pub fn width(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }

    pub fn height(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }

    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }

    pub fn center(&self) -> Point {
        Point::new((self.x1 + self.x2) * 0.5, (self.y1 + self.y2) * 0.5)
    }

    /// Intersection over union with `other`; 0 when either box is empty.
    pub fn iou(&self, other: &BBox) -> f32 {
        let iw = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let ih = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let inter = iw * ih;
        let union = self.area() + other.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }

    /// The box clipped to a `width` x `height` image.
    #[must_use]
    pub fn clamp_to(&self, width: u32, height: u32) -> BBox {
        let (w, h) = (width as f32, height as f32);
        BBox::new(
            self.x1.clamp(0.0, w),
            self.y1.clamp(0.0, h),
            self.x2.clamp(0.0, w),
            self.y2.clamp(0.0, h),
        )
    }

    /// Whether `p` lies inside the box (edges included).
    pub fn contains(&self, p: Point) -> bool {
        p.x >= self.x1 && p.x <= self.x2 && p.y >= self.y1 && p.y <= self.y2
    }
}

/// Five facial landmarks in pixel coordinates, in the ArcFace order: left eye, right eye, nose
/// tip, left mouth corner, right mouth corner ("left" as seen in the image).
///
/// Landmarks are face information: `Debug` is redacted, and there is no `Display` or `Serialize`.
#[derive(Clone, Copy, PartialEq, Default)]
pub struct Landmarks5(pub [Point; 5]);

impl Landmarks5 {
    pub fn points(&self) -> &[Point; 5] {
        &self.0
    }

    pub fn left_eye(&self) -> Point {
        self.0[0]
    }

    pub fn right_eye(&self) -> Point {
        self.0[1]
    }

    pub fn nose(&self) -> Point {
        self.0[2]
    }

    pub fn mouth_left(&self) -> Point {
        self.0[3]
    }

    pub fn mouth_right(&self) -> Point {
        self.0[4]
    }
}

impl fmt::Debug for Landmarks5 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Landmarks5(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_identical_disjoint_and_half_overlapping_boxes() {
        let a = BBox::new(0.0, 0.0, 10.0, 10.0);
        assert!((a.iou(&a) - 1.0).abs() < 1e-6);
        assert_eq!(a.iou(&BBox::new(20.0, 20.0, 30.0, 30.0)), 0.0);
        let b = BBox::new(5.0, 0.0, 15.0, 10.0);
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-6);
        assert_eq!(BBox::default().iou(&BBox::default()), 0.0);
    }

    #[test]
    fn landmarks_debug_is_redacted() {
        let lm = Landmarks5([Point::new(12.5, 33.25); 5]);
        assert_eq!(format!("{lm:?}"), "Landmarks5(<redacted>)");
    }
}
