//! 68-point landmarks on a grey 64x64 crop of the detector box, reduced to the five points the
//! aligner uses.

use facegate_types::{BBox, Frame, Landmarks5, Point};

use crate::VisionError;
use crate::crop::CropModel;
pub use crate::crop::crop_rect;
use crate::cues::Landmarks68;
use crate::preprocess::PixelRect;
use crate::runtime::ModelSession;

/// Locates the five alignment landmarks of a detected face.
pub trait LandmarkLocator: Send {
    fn locate(&mut self, frame: &Frame, face: &BBox) -> Result<Landmarks5, VisionError>;
}

/// Indices (x of each pair) into the 136-value output: the four contour points of each eye,
/// the nose tip and the two mouth corners of the 68-point scheme.
const LEFT_EYE: [usize; 4] = [74, 76, 80, 82];
const RIGHT_EYE: [usize; 4] = [86, 88, 92, 94];
const NOSE: usize = 60;
const MOUTH_LEFT: usize = 96;
const MOUTH_RIGHT: usize = 108;

/// Reduces 68 box-normalised points to five frame points.
pub fn five_points(raw: &[f32], rect: PixelRect) -> Landmarks5 {
    let (x0, y0, w, h) = (rect.x as f32, rect.y as f32, rect.w as f32, rect.h as f32);
    let at = |i: usize| Point::new(raw[i] * w + x0, raw[i + 1] * h + y0);
    let mean = |idx: &[usize]| {
        let (sx, sy) = idx
            .iter()
            .map(|&i| at(i))
            .fold((0.0, 0.0), |(ax, ay), p| (ax + p.x, ay + p.y));
        Point::new(sx / idx.len() as f32, sy / idx.len() as f32)
    };
    Landmarks5([
        mean(&LEFT_EYE),
        mean(&RIGHT_EYE),
        at(NOSE),
        at(MOUTH_LEFT),
        at(MOUTH_RIGHT),
    ])
}

/// The 68-point landmark model on ONNX Runtime.
#[derive(Debug)]
pub struct Pfld68(CropModel);

impl Pfld68 {
    pub fn new(session: ModelSession) -> Self {
        Self(CropModel::new(session))
    }

    pub fn session(&self) -> &ModelSession {
        self.0.session()
    }
}

impl Pfld68 {
    /// All 68 points in frame coordinates (the liveness cues use them).
    pub fn locate68(&mut self, frame: &Frame, face: &BBox) -> Result<Landmarks68, VisionError> {
        let (rect, out) = self.run_checked(frame, face)?;
        let (x0, y0, w, h) = (rect.x as f32, rect.y as f32, rect.w as f32, rect.h as f32);
        let mut points = [Point::new(0.0, 0.0); 68];
        for (i, p) in points.iter_mut().enumerate() {
            *p = Point::new(out[2 * i] * w + x0, out[2 * i + 1] * h + y0);
        }
        Ok(Landmarks68(points))
    }

    fn run_checked(
        &mut self,
        frame: &Frame,
        face: &BBox,
    ) -> Result<(PixelRect, &[f32]), VisionError> {
        let (rect, out) = self.0.run("landmarks", frame, face, 1.0)?;
        if out.len() < 136 {
            return Err(VisionError::Output {
                stage: "landmarks",
                output: "output".into(),
                expected: 136,
                found: out.len(),
            });
        }
        Ok((rect, out))
    }
}

impl LandmarkLocator for Pfld68 {
    fn locate(&mut self, frame: &Frame, face: &BBox) -> Result<Landmarks5, VisionError> {
        let (rect, out) = self.run_checked(frame, face)?;
        Ok(five_points(out, rect))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: u32, h: u32) -> Frame {
        Frame::from_rgb8(w, h, vec![0; (w * h * 3) as usize]).unwrap()
    }

    #[test]
    fn crop_of_a_box_inside_is_the_box() {
        let f = frame(100, 100);
        let r = crop_rect(&f, &BBox::new(10.0, 20.0, 40.0, 60.0), 1.0);
        assert_eq!(
            r,
            PixelRect {
                x: 10,
                y: 20,
                w: 30,
                h: 40
            }
        );
    }

    #[test]
    fn enlarged_crop_is_shifted_inside_the_frame() {
        let f = frame(100, 100);
        let r = crop_rect(&f, &BBox::new(0.0, 0.0, 20.0, 20.0), 2.7);
        assert_eq!((r.x, r.y), (0, 0));
        assert_eq!((r.w, r.h), (54, 54));
        let r = crop_rect(&f, &BBox::new(50.0, 50.0, 90.0, 90.0), 2.7);
        assert!(r.x + r.w <= 100 && r.y + r.h <= 100 && r.w >= 98, "{r:?}");
    }

    #[test]
    fn five_points_average_eye_contours() {
        let mut raw = vec![0.0f32; 136];
        for &i in &LEFT_EYE {
            raw[i] = 0.25;
            raw[i + 1] = 0.5;
        }
        raw[LEFT_EYE[0]] = 0.15;
        raw[LEFT_EYE[1]] = 0.35;
        raw[NOSE] = 0.5;
        raw[NOSE + 1] = 0.75;
        let lm = five_points(
            &raw,
            PixelRect {
                x: 10,
                y: 20,
                w: 100,
                h: 40,
            },
        );
        assert!((lm.left_eye().x - 35.0).abs() < 1e-4);
        assert!((lm.left_eye().y - 40.0).abs() < 1e-4);
        assert!((lm.nose().x - 60.0).abs() < 1e-4 && (lm.nose().y - 50.0).abs() < 1e-4);
    }
}
