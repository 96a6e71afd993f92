//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "facegate",
    version,
    about = "On-device face recognition for gate terminals"
)]
pub struct Cli {
    /// Configuration file (default: /etc/facegate/facegate.toml if present, else built-in).
    #[arg(long, global = true, env = "FACEGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// More log output (-v info, -vv debug); logs go to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Logs as JSON lines.
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The default job: verify the bundled astronaut portrait against altered copies of itself
    /// and reject other faces, printing each decision. Needs no camera.
    Demo(DemoArgs),
    /// Detect faces in images: boxes, scores, quality.
    Detect(DetectArgs),
    /// Compare the largest face of two images (1:1 verification).
    Compare(CompareArgs),
    /// Measure accuracy on labelled data.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Measure speed.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Check the configuration and the models it names, then exit.
    Validate,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DetectArgs {
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[arg(long)]
    pub json: bool,
    /// Also print the five landmarks (face information: refused in production mode).
    #[arg(long)]
    pub landmarks: bool,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    pub a: PathBuf,
    pub b: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// LFW View 2 (10-fold accuracy, TAR at FAR) or any LFW-format pair list.
    Lfw(LfwArgs),
    /// Detection on the WIDER FACE validation sample (easy/medium/hard).
    Wider(WiderArgs),
    /// The deepface pair lists (master.csv, pivot.csv).
    Pairs(PairsArgs),
    /// Estimate cosine thresholds at FMR 1e-2, 1e-3, 1e-4 from impostor scores.
    Calibrate(CalibrateArgs),
}

#[derive(Debug, Args)]
pub struct LfwArgs {
    /// The pair list (header `folds per_class` or `per_class`).
    #[arg(long, default_value = "../shared/eval/lfw/pairs.txt")]
    pub pairs: PathBuf,
    /// The image folder (default: `images` beside the pair list).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Only the first N pairs of each fold (quick runs).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Embed without flip test-time augmentation, whatever the config says.
    #[arg(long)]
    pub no_flip: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WiderArgs {
    #[arg(long, default_value = "../shared/eval/wider")]
    pub dir: PathBuf,
    /// Detector score threshold for the evaluation (AP wants a low one).
    #[arg(long, default_value_t = 0.3)]
    pub threshold: f32,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PairsArgs {
    #[arg(long, default_value = "../shared/eval/deepface")]
    pub dir: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// LFW pair lists whose images give the impostor scores (all cross-identity pairs).
    #[arg(long, default_value = "../shared/eval/lfw/pairsDevTrain.txt")]
    pub pairs: PathBuf,
    #[arg(long)]
    pub images: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Per-stage latency over a folder of images or a Y4M stream.
    Pipeline(PipelineBenchArgs),
}

#[derive(Debug, Args)]
pub struct PipelineBenchArgs {
    /// A folder of images, a Y4M file or an image.
    pub path: PathBuf,
    /// Stop after this many frames.
    #[arg(long, default_value_t = 300)]
    pub frames: usize,
    /// Frames run first and not measured.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Run liveness on every face too.
    #[arg(long)]
    pub liveness: bool,
    #[arg(long)]
    pub json: bool,
}
