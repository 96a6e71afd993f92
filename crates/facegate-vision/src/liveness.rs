//! Passive liveness (anti-spoofing) on a crop 2.7 times the detector box: the probability that
//! the face is a live person rather than a replayed screen or print.

use facegate_types::{BBox, Frame};

use crate::VisionError;
use crate::landmarks::crop_rect;
use crate::preprocess::{Normalise, ResizeScratch, resize_to_planar};
use crate::runtime::ModelSession;

/// Scores how likely a detected face is a live person.
pub trait LivenessDetector: Send {
    /// Probability in [0, 1] that the face is live.
    fn live_probability(&mut self, frame: &Frame, face: &BBox) -> Result<f32, VisionError>;
}

/// Numerically stable softmax of `logits`, returning the probability of class `index`.
pub fn softmax_at(logits: &[f32], index: usize) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|v| (v - max).exp()).sum();
    logits.get(index).map_or(0.0, |v| (v - max).exp() / sum)
}

/// The passive liveness model on ONNX Runtime.
#[derive(Debug)]
pub struct PassiveLiveness {
    session: ModelSession,
    norm: Normalise,
    side: u32,
    crop_scale: f32,
    input: Vec<f32>,
    output: Vec<f32>,
    scratch: ResizeScratch,
}

impl PassiveLiveness {
    pub fn new(session: ModelSession) -> Self {
        let spec = session.spec();
        let side = spec.inputs[0].shape[3] as u32;
        let norm = Normalise::from(&spec.preprocess);
        let crop_scale = spec.param("crop_scale", 2.7) as f32;
        let input = vec![0.0; spec.inputs[0].len()];
        let output = vec![0.0; spec.outputs[0].len()];
        Self {
            session,
            norm,
            side,
            crop_scale,
            input,
            output,
            scratch: ResizeScratch::default(),
        }
    }

    pub fn session(&self) -> &ModelSession {
        &self.session
    }
}

impl LivenessDetector for PassiveLiveness {
    fn live_probability(&mut self, frame: &Frame, face: &BBox) -> Result<f32, VisionError> {
        let rect = crop_rect(frame, face, self.crop_scale);
        resize_to_planar(
            frame,
            rect,
            self.side,
            self.side,
            self.norm,
            &mut self.scratch,
            &mut self.input,
        );
        self.session
            .run("liveness", &self.input, &mut [&mut self.output])?;
        Ok(softmax_at(&self.output, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_stable_and_normalised() {
        assert!((softmax_at(&[0.0, 0.0], 0) - 0.5).abs() < 1e-6);
        let p = softmax_at(&[1000.0, 0.0, 0.0], 0);
        assert!((p - 1.0).abs() < 1e-6);
        let total: f32 = (0..3).map(|i| softmax_at(&[1.0, 2.0, 3.0], i)).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
}
