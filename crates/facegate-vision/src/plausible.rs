//! Whether a detector box holds a plausible whole face: pure checks on the box and the five
//! landmarks, run before a face may become a template. A box on one eye, on the nose and mouth
//! only, or on a patch of texture still gets five landmarks from the landmark model (it always
//! answers), but they do not sit like a face's: eyes above the nose above the mouth, the eye
//! distance a sane fraction of the box, the mouth centred under the eyes, everything inside the
//! box.
//!
//! The limits were set on LFW: UltraFace boxes on the deep-funneled images put the eye distance
//! at 0.33-0.50 of the box width and the mouth 0.9-1.4 eye distances below the eye line (the
//! ArcFace template has 0.83 and 1.16). Each limit leaves a wide margin around those ranges;
//! turned or tilted faces are quality's business, not this module's.

use facegate_types::{BBox, Frame, Landmarks5, Point};
use serde::Serialize;

/// Why a box does not hold a plausible whole face. The names say which check failed, never
/// where the landmarks were.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Implausible {
    /// A landmark lies outside the detector box.
    LandmarkOutsideBox,
    /// The eyes coincide or are too close for the box (a fragment, or a box far too large).
    EyesTooClose,
    /// The eyes are too far apart for the box (a box on part of a face).
    EyesTooFarApart,
    /// The nose is not below the eye line.
    NoseNotBelowEyes,
    /// The mouth is not below the nose.
    MouthNotBelowNose,
    /// The mouth is too near or too far from the eye line for this eye distance.
    MouthOutOfPlace,
    /// The mouth is too narrow or too wide for this eye distance.
    MouthWidth,
    /// The mouth, nose or eyes are not centred on one vertical axis, or not in the box's middle.
    Asymmetric,
    /// The landmarks move when the landmark model sees the box's surroundings too: the box holds
    /// part of a face (the model draws a whole face into whatever box it is given).
    Fragment,
    /// A face found only once the photo had a margin, which the second detector does not find
    /// with the same eyes, nose and mouth (a part of a face on a grey margin looks like a tight
    /// ID photo to one model; two independent models agree on a real one).
    DetectorsDisagree,
}

impl Implausible {
    /// What an operator is told.
    pub fn describe(self) -> &'static str {
        match self {
            Self::LandmarkOutsideBox => "facial landmarks fall outside the detected box",
            Self::EyesTooClose => "the eyes are too close together for the box (not a whole face)",
            Self::EyesTooFarApart => {
                "the eyes are too far apart for the box (the box holds part of a face)"
            }
            Self::NoseNotBelowEyes => "the nose is not below the eyes",
            Self::MouthNotBelowNose => "the mouth is not below the nose",
            Self::MouthOutOfPlace => "the mouth is not where a face's mouth is",
            Self::MouthWidth => "the mouth is too narrow or too wide for the eyes",
            Self::Asymmetric => "eyes, nose and mouth are not arranged like a face",
            Self::Fragment => {
                "the box holds part of a face only (the landmarks move when the surroundings are seen)"
            }
            Self::DetectorsDisagree => {
                "the face fills the photo and the second detector does not confirm it (part of a face?)"
            }
        }
    }
}

impl std::fmt::Display for Implausible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// Limits of [`whole_face`], ratios of the eye distance or the box width.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceGeometryLimits {
    /// Landmarks may lie this fraction of the box size outside it (the landmark model's crop is
    /// a little larger than the box).
    pub box_tolerance: f32,
    /// Eye distance over box width.
    pub min_eye_ratio: f32,
    pub max_eye_ratio: f32,
    /// Distance from the eye line to the mouth centre, over the eye distance.
    pub min_mouth_drop: f32,
    pub max_mouth_drop: f32,
    /// Mouth width over the eye distance.
    pub min_mouth_width: f32,
    pub max_mouth_width: f32,
    /// Horizontal offset of the mouth centre from the eye midpoint, over the eye distance.
    pub max_axis_offset: f32,
    /// Horizontal offset of the landmarks' centre from the box centre, over the box width.
    pub max_box_offset: f32,
    /// The context check: the landmarks are located again in the box enlarged this much (on a
    /// grey canvas, so the frame's edge does not matter) ...
    pub context_scale: f32,
    /// ... and may move on average at most this fraction of the eye distance. On 200 LFW
    /// people, 1.6 and 0.35 keep 172 of 179 good faces and refuse all 129 lower-half crops
    /// that a face was detected on (the rest of them had none).
    pub max_context_shift: f32,
}

impl Default for FaceGeometryLimits {
    fn default() -> Self {
        Self {
            box_tolerance: 0.05,
            min_eye_ratio: 0.22,
            max_eye_ratio: 0.70,
            min_mouth_drop: 0.65,
            max_mouth_drop: 1.9,
            min_mouth_width: 0.45,
            max_mouth_width: 1.35,
            max_axis_offset: 0.35,
            max_box_offset: 0.2,
            context_scale: 1.6,
            max_context_shift: 0.35,
        }
    }
}

/// Checks that `lm` sit in `bbox` as a whole face's landmarks do. Pure; the first failed check
/// is returned.
pub fn whole_face(
    bbox: &BBox,
    lm: &Landmarks5,
    limits: &FaceGeometryLimits,
) -> Result<(), Implausible> {
    let (w, h) = (bbox.width(), bbox.height());
    if !(w > 0.0 && h > 0.0) {
        return Err(Implausible::LandmarkOutsideBox);
    }
    let (tx, ty) = (w * limits.box_tolerance, h * limits.box_tolerance);
    let grown = BBox::new(bbox.x1 - tx, bbox.y1 - ty, bbox.x2 + tx, bbox.y2 + ty);
    if lm
        .points()
        .iter()
        .any(|p| !(p.x.is_finite() && p.y.is_finite() && grown.contains(*p)))
    {
        return Err(Implausible::LandmarkOutsideBox);
    }
    let (le, re) = (lm.left_eye(), lm.right_eye());
    let (dx, dy) = (re.x - le.x, re.y - le.y);
    let io = (dx * dx + dy * dy).sqrt();
    if io < limits.min_eye_ratio * w || dx <= 0.0 {
        return Err(Implausible::EyesTooClose);
    }
    if io > limits.max_eye_ratio * w {
        return Err(Implausible::EyesTooFarApart);
    }
    // Nose and mouth in the eye-aligned frame, origin between the eyes, unit = eye distance.
    let (c, s) = (dx / io, dy / io);
    let mid = Point::new((le.x + re.x) / 2.0, (le.y + re.y) / 2.0);
    let local = |p: Point| {
        let (x, y) = (p.x - mid.x, p.y - mid.y);
        ((x * c + y * s) / io, (-x * s + y * c) / io)
    };
    let nose = local(lm.nose());
    let ml = local(lm.mouth_left());
    let mr = local(lm.mouth_right());
    let mouth = ((ml.0 + mr.0) / 2.0, (ml.1 + mr.1) / 2.0);
    if nose.1 <= 0.0 {
        return Err(Implausible::NoseNotBelowEyes);
    }
    if mouth.1 <= nose.1 {
        return Err(Implausible::MouthNotBelowNose);
    }
    if !(limits.min_mouth_drop..=limits.max_mouth_drop).contains(&mouth.1) {
        return Err(Implausible::MouthOutOfPlace);
    }
    let mouth_width = mr.0 - ml.0;
    if !(limits.min_mouth_width..=limits.max_mouth_width).contains(&mouth_width) {
        return Err(Implausible::MouthWidth);
    }
    let centre_x = lm.points().iter().map(|p| p.x).sum::<f32>() / 5.0;
    if mouth.0.abs() > limits.max_axis_offset
        || (centre_x - bbox.center().x).abs() > limits.max_box_offset * w
    {
        return Err(Implausible::Asymmetric);
    }
    Ok(())
}

/// Mean distance between corresponding landmarks of `a` and `b`, over `a`'s eye distance
/// (`f32::INFINITY` when `a`'s eyes coincide).
pub fn landmark_shift(a: &Landmarks5, b: &Landmarks5) -> f32 {
    let io = (a.right_eye().x - a.left_eye().x).hypot(a.right_eye().y - a.left_eye().y);
    if io.partial_cmp(&1e-3) != Some(std::cmp::Ordering::Greater) {
        return f32::INFINITY;
    }
    let sum: f32 = a
        .points()
        .iter()
        .zip(b.points())
        .map(|(p, q)| (p.x - q.x).hypot(p.y - q.y))
        .sum();
    sum / 5.0 / io
}

/// A grey canvas `3 x` the box around it with the frame's pixels copied in, and where the box
/// lies on it. Landmarks located on it in a box enlarged up to 3x see the real surroundings
/// where the frame has them and grey beyond its edge, never a crop shifted back inside.
pub fn context_canvas(frame: &Frame, bbox: &BBox) -> Option<(Frame, BBox, Point)> {
    let (bw, bh) = (bbox.width().ceil(), bbox.height().ceil());
    if !(bw >= 1.0 && bh >= 1.0) {
        return None;
    }
    let (cw, ch) = ((3.0 * bw) as u32, (3.0 * bh) as u32);
    let (ox, oy) = ((bbox.x1 - bw).floor(), (bbox.y1 - bh).floor());
    let mut data = vec![128u8; cw as usize * ch as usize * 3];
    let (fw, fh) = (i64::from(frame.width()), i64::from(frame.height()));
    let (ox_i, oy_i) = (ox as i64, oy as i64);
    // Columns of the canvas that the frame covers.
    let x_from = (-ox_i).clamp(0, i64::from(cw));
    let x_to = (fw - ox_i).clamp(0, i64::from(cw));
    if x_from < x_to {
        for cy in 0..i64::from(ch) {
            let fy = oy_i + cy;
            if !(0..fh).contains(&fy) {
                continue;
            }
            let src = frame.row(fy as u32);
            let (sx0, sx1) = (((ox_i + x_from) * 3) as usize, ((ox_i + x_to) * 3) as usize);
            let d0 = ((cy * i64::from(cw) + x_from) * 3) as usize;
            let len = sx1 - sx0;
            if let (Some(dst), Some(s)) = (data.get_mut(d0..d0 + len), src.get(sx0..sx1)) {
                dst.copy_from_slice(s);
            }
        }
    }
    let canvas = Frame::from_rgb8(cw, ch, data).ok()?;
    let offset = Point::new(ox, oy);
    let moved = BBox::new(bbox.x1 - ox, bbox.y1 - oy, bbox.x2 - ox, bbox.y2 - oy);
    Some((canvas, moved, offset))
}

/// `b` enlarged `scale` times about its centre.
pub fn enlarged(b: &BBox, scale: f32) -> BBox {
    let c = b.center();
    let (hw, hh) = (b.width() * scale / 2.0, b.height() * scale / 2.0);
    BBox::new(c.x - hw, c.y - hh, c.x + hw, c.y + hh)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::align::ARCFACE_TEMPLATE;

    /// The ArcFace template's landmarks in a box like UltraFace draws around them.
    fn template(scale: f32, dx: f32, dy: f32) -> Landmarks5 {
        Landmarks5(ARCFACE_TEMPLATE.map(|p| Point::new(p.x * scale + dx, p.y * scale + dy)))
    }

    fn template_box(scale: f32, dx: f32, dy: f32) -> BBox {
        BBox::new(
            10.0 * scale + dx,
            8.0 * scale + dy,
            102.0 * scale + dx,
            118.0 * scale + dy,
        )
    }

    #[test]
    fn the_template_face_is_plausible_at_any_scale_and_place() {
        let l = FaceGeometryLimits::default();
        for (s, dx, dy) in [(1.0, 0.0, 0.0), (3.0, 200.0, 50.0), (0.5, 7.0, 900.0)] {
            assert_eq!(
                whole_face(&template_box(s, dx, dy), &template(s, dx, dy), &l),
                Ok(())
            );
        }
    }

    #[test]
    fn the_context_canvas_copies_the_frame_and_pads_with_grey() {
        let frame = Frame::from_rgb8(4, 2, (0..24).collect()).unwrap();
        let (canvas, moved, offset) =
            context_canvas(&frame, &BBox::new(1.0, 0.0, 3.0, 2.0)).unwrap();
        assert_eq!((canvas.width(), canvas.height()), (6, 6));
        assert_eq!((offset.x, offset.y), (-1.0, -2.0));
        assert_eq!(moved, BBox::new(2.0, 2.0, 4.0, 4.0));
        assert_eq!(canvas.row(0), &[128; 18]);
        // Row 2 of the canvas is frame row 0 shifted right by one pixel; the last pixel is grey.
        assert_eq!(&canvas.row(2)[..3], &[128; 3]);
        assert_eq!(&canvas.row(2)[3..15], &frame.row(0)[..12]);
        assert_eq!(&canvas.row(2)[15..], &[128; 3]);
        assert!(context_canvas(&frame, &BBox::new(1.0, 1.0, 1.0, 2.0)).is_none());
    }

    #[test]
    fn landmark_shift_is_in_eye_distances() {
        let a = template(1.0, 0.0, 0.0);
        assert_eq!(landmark_shift(&a, &a), 0.0);
        let b = template(1.0, 3.52, 0.0);
        assert!((landmark_shift(&a, &b) - 0.1).abs() < 1e-3);
        assert_eq!(landmark_shift(&Landmarks5::default(), &a), f32::INFINITY);
    }

    #[test]
    fn each_broken_arrangement_names_its_check() {
        let l = FaceGeometryLimits::default();
        let b = template_box(1.0, 0.0, 0.0);
        let face = template(1.0, 0.0, 0.0);
        let with = |i: usize, p: Point| {
            let mut f = face;
            f.0[i] = p;
            f
        };
        // A box on one eye: the eyes are tiny against it, or the box is a fraction of the face.
        let narrow = BBox::new(30.0, 40.0, 50.0, 60.0);
        assert_eq!(
            whole_face(&narrow, &face, &l),
            Err(Implausible::LandmarkOutsideBox)
        );
        let mut squeezed = face;
        squeezed.0[1] = Point::new(face.0[0].x + 10.0, face.0[0].y);
        assert_eq!(
            whole_face(&b, &squeezed, &l),
            Err(Implausible::EyesTooClose)
        );
        let wide = BBox::new(38.0, 8.0, 74.0, 118.0);
        assert_eq!(
            whole_face(&wide, &face, &l),
            Err(Implausible::EyesTooFarApart)
        );
        assert_eq!(
            whole_face(&b, &with(2, Point::new(56.0, 45.0)), &l),
            Err(Implausible::NoseNotBelowEyes)
        );
        let mut mouth_up = face;
        mouth_up.0[3].y = 65.0;
        mouth_up.0[4].y = 65.0;
        assert_eq!(
            whole_face(&b, &mouth_up, &l),
            Err(Implausible::MouthNotBelowNose)
        );
        let mut mouth_low = face;
        mouth_low.0[3].y = 125.0;
        mouth_low.0[4].y = 125.0;
        assert_eq!(
            whole_face(&BBox::new(10.0, 8.0, 102.0, 140.0), &mouth_low, &l),
            Err(Implausible::MouthOutOfPlace)
        );
        let mut pinched = face;
        pinched.0[3].x = 54.0;
        pinched.0[4].x = 58.0;
        assert_eq!(whole_face(&b, &pinched, &l), Err(Implausible::MouthWidth));
        let mut shifted = face;
        shifted.0[3].x += 18.0;
        shifted.0[4].x += 18.0;
        assert_eq!(whole_face(&b, &shifted, &l), Err(Implausible::Asymmetric));
        let mut swapped = face;
        swapped.0.swap(0, 1);
        assert_eq!(whole_face(&b, &swapped, &l), Err(Implausible::EyesTooClose));
        let mut nan = face;
        nan.0[2].x = f32::NAN;
        assert_eq!(
            whole_face(&b, &nan, &l),
            Err(Implausible::LandmarkOutsideBox)
        );
    }
}
