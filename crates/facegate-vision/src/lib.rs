//! facegate's vision pipeline: the only crate that touches ONNX Runtime (through `ort`).
//!
//! It owns the model manifest (hashes, shapes, preprocessing, calibrated thresholds), the ONNX
//! Runtime environment with one global thread pool, and the stages that turn a [`Frame`] into
//! face templates: UltraFace detection with NMS, 68-point landmarks reduced to five, the 4-DoF
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
mod crop;
pub mod detector;
pub mod embedder;
mod error;
pub mod eval;
pub mod landmarks;
pub mod liveness;
pub mod manifest;
pub mod pipeline;
pub mod plausible;
pub mod preprocess;
pub mod quality;
pub mod runtime;
pub mod tracker;

pub use detector::{Detection, FaceDetector};
pub use embedder::FaceEmbedder;
pub use error::VisionError;
pub use landmarks::LandmarkLocator;
pub use liveness::LivenessDetector;
pub use manifest::{CalibrationPoint, Manifest, ModelSpec, Role};
pub use pipeline::{AnalyseOptions, FaceAnalysis, Pipeline, StageTimings, VisionConfig};
pub use plausible::{FaceGeometryLimits, Implausible, whole_face};
pub use quality::{QualityConfig, QualityIssue, QualityReport};
pub use runtime::{DISABLE_TELEMETRY_VAR, MAX_INTRA_THREADS, RuntimeConfig};
pub use tracker::{Track, TrackId, Tracker};
