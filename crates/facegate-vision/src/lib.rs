//! facegate's vision pipeline: the only crate that touches ONNX Runtime (through `ort`).
//!
//! It owns the model manifest (hashes, shapes, preprocessing, calibrated thresholds), the ONNX
//! Runtime environment with one global thread pool, and the stages that turn a [`Frame`] into
//! face templates: UltraFace detection with NMS (CenterFace as the fallback for photos), 68-point landmarks reduced to five, the 4-DoF
//! similarity alignment to the ArcFace template, the 512-d embedder, passive liveness, quality
//! (size, blur, exposure, rough pose) and an IoU tracker, composed in [`Pipeline`]. Models are
//! checked once when loaded; the per-frame path reuses its buffers.
//!
//! It must never log, print or persist pixels, landmarks or embeddings: its outputs carry them
//! only in types whose `Debug` is redacted.
//!
//! [`Frame`]: facegate_types::Frame

pub mod affine;
pub mod align;
pub mod centerface;
pub mod challenge;
mod crop;
pub mod cues;
pub mod detector;
pub mod embedder;
mod error;
pub mod eval;
pub mod footage;
pub mod landmarks;
pub mod liveness;
pub mod manifest;
pub mod photo;
pub mod pipeline;
pub mod plausible;
pub mod preprocess;
pub mod quality;
pub mod runtime;
pub mod tracker;

pub use challenge::{Action, Challenge, ChallengeConfig, ChallengeFailure, ChallengeStatus};
pub use cues::{FaceSample, Landmarks68, MotionLimits, MotionReport};
pub use detector::{Detection, FaceDetector};
pub use embedder::FaceEmbedder;
pub use error::VisionError;
pub use landmarks::LandmarkLocator;
pub use liveness::{
    ChallengeMode, LiveStatus, LivenessConfig, LivenessDetector, LivenessSession, SpoofReason,
};
pub use manifest::{CalibrationPoint, Manifest, ModelSpec, Precision, Role};
pub use photo::PhotoPass;
pub use pipeline::{
    AnalyseOptions, FaceAnalysis, PhotoAnalysis, Pipeline, PreparedFace, StageTimings, VisionConfig,
};
pub use plausible::{FaceGeometryLimits, Implausible, whole_face};
pub use quality::{QualityConfig, QualityIssue, QualityReport};
pub use runtime::{DISABLE_TELEMETRY_VAR, MAX_INTRA_THREADS, RuntimeConfig};
pub use tracker::{Track, TrackId, Tracker};
