//! Face embedding (ArcFace-style, 512-d) of an aligned crop, with optional flip test-time
//! augmentation (the crop and its mirror image are embedded and their features summed).

use facegate_types::Embedding;

use crate::VisionError;
use crate::align::{ALIGNED_SIZE, AlignedFace};
use crate::preprocess::mirror_planes;
use crate::runtime::ModelSession;

/// Turns an aligned face into a template.
pub trait FaceEmbedder: Send {
    fn embed(&mut self, face: &AlignedFace) -> Result<Embedding, VisionError>;
    /// Identifier stored with every template this embedder makes.
    fn model_id(&self) -> &str;
    /// Template dimension.
    fn dim(&self) -> usize;
}

/// The ArcFace embedder on ONNX Runtime. The shipped graph has a fixed batch of 1, so faces go
/// through one at a time, on the threads its manifest entry names (the shared pool for fp32,
/// the caller's thread for int8).
#[derive(Debug)]
pub struct ArcFace {
    session: ModelSession,
    model_id: String,
    flip: bool,
    output: Vec<f32>,
    flipped_in: Vec<f32>,
    flipped_out: Vec<f32>,
    flip_inference: std::time::Duration,
    /// A measurement, not the product: with flip on, also keep the template of the unmirrored
    /// crop alone (`facegate eval flip` compares both in one pass).
    keep_plain: bool,
    plain: Option<Embedding>,
}

impl ArcFace {
    pub fn new(session: ModelSession, flip: bool) -> Self {
        let spec = session.spec();
        let model_id = spec.model_id();
        let out_len = spec.outputs[0].len();
        let in_len = spec.inputs[0].len();
        Self {
            session,
            model_id,
            flip,
            output: vec![0.0; out_len],
            flipped_in: vec![0.0; in_len],
            flipped_out: vec![0.0; out_len],
            flip_inference: std::time::Duration::ZERO,
            keep_plain: false,
            plain: None,
        }
    }

    /// With flip on, keep the unmirrored crop's own template of every `embed` too, for
    /// [`ArcFace::take_plain`]. Off by default; the gate never turns it on.
    pub fn set_keep_plain(&mut self, on: bool) {
        self.keep_plain = on;
        self.plain = None;
    }

    /// The unmirrored crop's template from the last `embed`, when [`ArcFace::set_keep_plain`]
    /// is on and flip is on.
    pub fn take_plain(&mut self) -> Option<Embedding> {
        self.plain.take()
    }

    pub fn session(&self) -> &ModelSession {
        &self.session
    }

    /// Raw inference time of the last `embed` (both passes with flip augmentation).
    pub fn last_inference(&self) -> std::time::Duration {
        self.session.last_inference() + self.flip_inference
    }
}

impl FaceEmbedder for ArcFace {
    fn embed(&mut self, face: &AlignedFace) -> Result<Embedding, VisionError> {
        self.flip_inference = std::time::Duration::ZERO;
        self.session
            .run("embed", &face.tensor, &mut [&mut self.output])?;
        self.plain = None;
        if self.flip {
            if self.keep_plain {
                self.plain = Some(Embedding::from_raw(self.output.clone())?);
            }
            let first = self.session.last_inference();
            mirror_planes(&face.tensor, ALIGNED_SIZE as usize, &mut self.flipped_in);
            self.session
                .run("embed", &self.flipped_in, &mut [&mut self.flipped_out])?;
            // Report both passes: the session remembers only the last one.
            self.flip_inference = first;
            for (o, f) in self.output.iter_mut().zip(&self.flipped_out) {
                *o += f;
            }
            zeroize::Zeroize::zeroize(&mut self.flipped_out[..]);
        }
        let embedding = Embedding::from_raw(self.output.clone());
        zeroize::Zeroize::zeroize(&mut self.output[..]);
        Ok(embedding?)
    }

    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dim(&self) -> usize {
        self.output.len()
    }
}
