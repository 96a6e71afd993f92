//! One module per subcommand.

pub mod bench;
pub mod calibration_inputs;
pub mod cameras;
pub mod compare;
pub mod consent;
pub mod credential;
pub mod demo;
pub mod detect;
pub mod doctor;
pub mod enroll;
pub mod eval;
pub mod flip_eval;
pub mod gate;
pub mod keys;
pub mod liveness_eval;
pub mod records;
pub mod relay;
pub mod run;
pub mod store;
pub mod subjects;
pub mod transfer;
pub mod validate;
pub mod verify;

use std::path::Path;

use anyhow::{Context, Result};
use facegate_types::{Embedding, Frame};
use facegate_vision::{Manifest, Pipeline, VisionConfig};

use crate::cli::Cli;
use crate::config::Config;

/// Config, manifest and a loaded pipeline.
pub struct Loaded {
    pub config: Config,
    pub manifest: Manifest,
    pub pipeline: Pipeline,
}

/// Loads the config and the pipeline, letting `adjust` change the vision settings first.
pub fn load(cli: &Cli, adjust: impl FnOnce(&mut VisionConfig)) -> Result<Loaded> {
    let mut config = Config::load(cli.config.as_deref())?;
    adjust(&mut config.vision);
    let manifest = config.manifest()?;
    let pipeline =
        Pipeline::load(&manifest, &config.vision).context("loading the vision pipeline")?;
    Ok(Loaded {
        config,
        manifest,
        pipeline,
    })
}

/// Decodes an image with the configured pixel limit.
pub fn read_image(path: &Path, max_pixels: u64) -> Result<Frame> {
    facegate_capture::decode_image_file(path, max_pixels)
        .with_context(|| format!("reading {}", path.display()))
}

/// The template of the largest face in `frame`.
pub fn embed_largest(pipeline: &mut Pipeline, frame: &Frame, what: &str) -> Result<Embedding> {
    let face = pipeline
        .embed_largest(frame)
        .with_context(|| format!("{what}: no usable face"))?;
    face.embedding
        .with_context(|| format!("{what}: no embedding"))
}
