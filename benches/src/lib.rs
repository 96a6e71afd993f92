//! Shared helpers of facegate's benchmarks and evaluation harness: locating the evaluation data
//! beside the repository and summarising latency samples. Benchmarks live in `benches/benches/`.

pub mod preprocess_old;

use std::path::PathBuf;

/// The evaluation data folder: `$FACEGATE_EVAL_DIR`, else `../shared/eval` beside the workspace.
pub fn eval_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FACEGATE_EVAL_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/eval")
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}
