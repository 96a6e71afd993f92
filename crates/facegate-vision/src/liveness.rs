//! Passive liveness (anti-spoofing) on a crop 2.7 times the detector box: the probability that
//! the face is a live person rather than a replayed screen or print.

use facegate_types::{BBox, Frame};

use crate::VisionError;
use crate::crop::CropModel;
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
    model: CropModel,
    crop_scale: f32,
}

impl PassiveLiveness {
    pub fn new(session: ModelSession) -> Self {
        let crop_scale = session.spec().param("crop_scale", 2.7) as f32;
        Self {
            model: CropModel::new(session),
            crop_scale,
        }
    }

    pub fn session(&self) -> &ModelSession {
        self.model.session()
    }
}

impl LivenessDetector for PassiveLiveness {
    fn live_probability(&mut self, frame: &Frame, face: &BBox) -> Result<f32, VisionError> {
        let (_, out) = self.model.run("liveness", frame, face, self.crop_scale)?;
        Ok(softmax_at(out, 0))
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
