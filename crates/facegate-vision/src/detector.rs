//! UltraFace RFB-320 face detection: whole-frame resize to the model input, score filtering
//! and greedy non-maximum suppression. The model's boxes come already decoded as corners
//! normalised to [0, 1].

use facegate_types::{BBox, Frame};
use serde::Serialize;

use crate::VisionError;
use crate::manifest::ModelSpec;
use crate::preprocess::{Normalise, PixelRect, ResizeScratch, resize_to_planar};
use crate::runtime::ModelSession;

/// One detected face.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Detection {
    pub bbox: BBox,
    pub score: f32,
}

/// Finds faces in a frame.
pub trait FaceDetector: Send {
    /// Replaces `out` with the faces found, best first.
    fn detect(&mut self, frame: &Frame, out: &mut Vec<Detection>) -> Result<(), VisionError>;
}

/// Greedy NMS: keeps the best-scoring box, drops every box overlapping it by more than `iou`,
/// repeats. `dets` is sorted by descending score in place and truncated to the survivors.
pub fn nms(dets: &mut Vec<Detection>, iou: f32) {
    dets.sort_unstable_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept = 0;
    for i in 0..dets.len() {
        let cand = dets[i];
        if dets[..kept].iter().all(|k| k.bbox.iou(&cand.bbox) <= iou) {
            dets[kept] = cand;
            kept += 1;
        }
    }
    dets.truncate(kept);
}

/// Turns raw outputs into detections in frame pixels: `scores` holds (background, face) pairs,
/// `boxes` normalised corner quadruples.
pub fn decode(
    scores: &[f32],
    boxes: &[f32],
    threshold: f32,
    width: u32,
    height: u32,
    out: &mut Vec<Detection>,
) {
    out.clear();
    let (w, h) = (width as f32, height as f32);
    for (s, b) in scores.chunks_exact(2).zip(boxes.chunks_exact(4)) {
        let score = s[1];
        if score > threshold {
            let bbox = BBox::new(b[0] * w, b[1] * h, b[2] * w, b[3] * h).clamp_to(width, height);
            if bbox.width() >= 1.0 && bbox.height() >= 1.0 {
                out.push(Detection { bbox, score });
            }
        }
    }
}

/// The UltraFace detector on ONNX Runtime, with its reused buffers.
#[derive(Debug)]
pub struct UltraFace {
    session: ModelSession,
    norm: Normalise,
    input_w: u32,
    input_h: u32,
    threshold: f32,
    nms_iou: f32,
    input: Vec<f32>,
    scores: Vec<f32>,
    boxes: Vec<f32>,
    scratch: ResizeScratch,
}

impl UltraFace {
    pub fn new(session: ModelSession) -> Self {
        let spec: &ModelSpec = session.spec();
        let shape = &spec.inputs[0].shape;
        let (input_h, input_w) = (shape[2] as u32, shape[3] as u32);
        let norm = Normalise::from(&spec.preprocess);
        let threshold = spec.param("score_threshold", 0.65) as f32;
        let nms_iou = spec.param("nms_iou", 0.4) as f32;
        let input = vec![0.0; spec.inputs[0].len()];
        let scores = vec![0.0; spec.outputs[0].len()];
        let boxes = vec![0.0; spec.outputs[1].len()];
        Self {
            session,
            norm,
            input_w,
            input_h,
            threshold,
            nms_iou,
            input,
            scores,
            boxes,
            scratch: ResizeScratch::default(),
        }
    }

    /// Overrides the score threshold (e.g. lower for recall measurements).
    pub fn set_threshold(&mut self, threshold: f32) {
        self.threshold = threshold;
    }

    pub fn session(&self) -> &ModelSession {
        &self.session
    }

    /// The model input of the last [`FaceDetector::detect`], as the model saw it. Face
    /// information: it exists for `facegate eval calibration-inputs`, which pipes it to the
    /// quantiser (`deploy/quantise.py`), never to a file.
    pub fn last_input(&self) -> &[f32] {
        &self.input
    }

    /// Width over height of the model input (the whole frame is resized to it).
    pub fn input_aspect(&self) -> f32 {
        self.input_w as f32 / self.input_h as f32
    }
}

impl FaceDetector for UltraFace {
    fn detect(&mut self, frame: &Frame, out: &mut Vec<Detection>) -> Result<(), VisionError> {
        resize_to_planar(
            frame,
            PixelRect::full(frame),
            self.input_w,
            self.input_h,
            self.norm,
            &mut self.scratch,
            &mut self.input,
        );
        self.session.run(
            "detect",
            &self.input,
            &mut [&mut self.scores, &mut self.boxes],
        )?;
        decode(
            &self.scores,
            &self.boxes,
            self.threshold,
            frame.width(),
            frame.height(),
            out,
        );
        nms(out, self.nms_iou);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32, score: f32) -> Detection {
        Detection {
            bbox: BBox::new(x, 0.0, x + 10.0, 10.0),
            score,
        }
    }

    #[test]
    fn nms_keeps_best_of_overlapping_and_all_disjoint() {
        let mut d = vec![det(0.0, 0.7), det(1.0, 0.9), det(50.0, 0.8), det(2.0, 0.75)];
        nms(&mut d, 0.4);
        let xs: Vec<f32> = d.iter().map(|d| d.bbox.x1).collect();
        assert_eq!(xs, vec![1.0, 50.0]);
    }

    #[test]
    fn nms_keeps_boxes_overlapping_less_than_the_threshold() {
        let mut d = vec![det(0.0, 0.9), det(7.0, 0.8)]; // IoU = 30/170
        nms(&mut d, 0.4);
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn decode_filters_scales_and_clamps() {
        let scores = [0.9, 0.1, 0.2, 0.8, 0.3, 0.7];
        let boxes = [
            0.0, 0.0, 0.5, 0.5, 0.25, 0.5, 0.75, 1.2, -0.1, 0.0, 0.5, 0.5,
        ];
        let mut out = Vec::new();
        decode(&scores, &boxes, 0.65, 200, 100, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].bbox, BBox::new(50.0, 50.0, 150.0, 100.0));
        assert_eq!(out[1].bbox.x1, 0.0);
    }
}
