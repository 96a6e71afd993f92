//! Models fed a square crop around a detector box (the landmark model and the passive liveness
//! model): where the crop lies ([`crop_rect`]) and the session with the buffers it reuses
//! ([`CropModel`]). Shared by `landmarks` and `liveness`, owned by neither.

use facegate_types::{BBox, Frame};

use crate::VisionError;
use crate::preprocess::{Normalise, PixelRect, ResizeScratch, resize_to_planar};
use crate::runtime::ModelSession;

/// The crop a box-relative model sees: the box scaled by `scale` about its centre (capped so it
/// fits the frame), shifted back inside the frame where it sticks out.
pub fn crop_rect(frame: &Frame, face: &BBox, scale: f32) -> PixelRect {
    // Integer box corners, as the reference pipeline used.
    let (x, y) = (face.x1.trunc(), face.y1.trunc());
    let (bw, bh) = (
        (face.x2.trunc() - x).max(1.0),
        (face.y2.trunc() - y).max(1.0),
    );
    let (fw, fh) = (frame.width() as f32, frame.height() as f32);
    let s = scale.min((fh - 1.0) / bh).min((fw - 1.0) / bw).max(0.0);
    let (nw, nh) = (bw * s, bh * s);
    let (cx, cy) = (x + bw / 2.0, y + bh / 2.0);
    let (mut l, mut t, mut r, mut b) = (cx - nw / 2.0, cy - nh / 2.0, cx + nw / 2.0, cy + nh / 2.0);
    if l < 0.0 {
        r -= l;
        l = 0.0;
    }
    if t < 0.0 {
        b -= t;
        t = 0.0;
    }
    if r > fw - 1.0 {
        l -= r - fw + 1.0;
        r = fw - 1.0;
    }
    if b > fh - 1.0 {
        t -= b - fh + 1.0;
        b = fh - 1.0;
    }
    PixelRect::clamped(l, t, r - l, b - t, frame)
}

/// A model fed a square crop around a detector box (landmarks, liveness): its session, its
/// normalisation and the buffers it reuses every call.
#[derive(Debug)]
pub(crate) struct CropModel {
    session: ModelSession,
    norm: Normalise,
    side: u32,
    input: Vec<f32>,
    output: Vec<f32>,
    scratch: ResizeScratch,
}

impl CropModel {
    pub(crate) fn new(session: ModelSession) -> Self {
        let spec = session.spec();
        let side = spec.inputs[0].shape[3] as u32;
        let norm = Normalise::from(&spec.preprocess);
        let input = vec![0.0; spec.inputs[0].len()];
        let output = vec![0.0; spec.outputs[0].len()];
        Self {
            session,
            norm,
            side,
            input,
            output,
            scratch: ResizeScratch::default(),
        }
    }

    pub(crate) fn session(&self) -> &ModelSession {
        &self.session
    }

    /// Crops `face` enlarged by `scale`, runs the model, and returns the crop and the output.
    pub(crate) fn run(
        &mut self,
        stage: &'static str,
        frame: &Frame,
        face: &BBox,
        scale: f32,
    ) -> Result<(PixelRect, &[f32]), VisionError> {
        let rect = crop_rect(frame, face, scale);
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
            .run(stage, &self.input, &mut [&mut self.output])?;
        Ok((rect, &self.output))
    }
}
