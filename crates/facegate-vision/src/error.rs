use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong in the vision crate. Messages name the model, file, stage or
/// shape involved, never anything about a face.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum VisionError {
    /// A vision or runtime setting outside its bounds; `key` is the config key.
    #[error("{key}: {reason}")]
    Setting { key: &'static str, reason: String },
    #[error("model manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error(
        "model {role} ({path}): file missing; run deploy/dev.sh setup (or deploy/fetch-assets.py) to fetch it"
    )]
    ModelMissing { role: String, path: PathBuf },
    #[error("model {role} ({path}): sha256 mismatch, expected {expected}, found {found}")]
    ModelHash {
        role: String,
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("model {role} ({path}): {what} is {found}, the manifest says {expected}")]
    ModelShape {
        role: String,
        path: PathBuf,
        what: String,
        expected: String,
        found: String,
    },
    #[error("ONNX Runtime library {path}: {reason}")]
    Runtime { path: PathBuf, reason: String },
    #[error(
        "ONNX Runtime library not found: set ORT_DYLIB_PATH or the config's runtime.onnxruntime, or run deploy/dev.sh setup (looked in: {looked})"
    )]
    RuntimeMissing { looked: String },
    #[error("{stage}: ONNX Runtime failed")]
    Ort {
        stage: &'static str,
        #[source]
        source: ort::Error,
    },
    #[error("{stage}: model output {output} has {found} values, expected {expected}")]
    Output {
        stage: &'static str,
        output: String,
        expected: usize,
        found: usize,
    },
    #[error("{stage}: {reason}")]
    Input { stage: &'static str, reason: String },
    #[error(transparent)]
    Embedding(#[from] facegate_types::TypesError),
    #[error("reading {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl VisionError {
    pub(crate) fn ort(stage: &'static str) -> impl FnOnce(ort::Error) -> VisionError {
        move |source| VisionError::Ort { stage, source }
    }
}
