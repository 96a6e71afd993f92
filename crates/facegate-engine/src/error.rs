use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong in the engine. Messages carry stages, paths, ids, counts and
/// durations, never pixels, landmarks or embedding values.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A configuration value outside its valid range.
    #[error("invalid engine config: {field}: {reason}")]
    Config { field: &'static str, reason: String },

    /// A value of the config file's `[service]` or `[gate]` section outside its bounds; `key`
    /// is the config key.
    #[error("{key} {reason}")]
    Setting { key: &'static str, reason: String },

    /// The frame source could not be opened and is not retried (a replayed file).
    #[error(transparent)]
    Capture(#[from] facegate_capture::CaptureError),

    /// The capture thread ended abnormally.
    #[error("capture thread: {reason}")]
    CaptureThread { reason: String },

    /// A vision stage failed at start-up (a per-frame failure is counted, not returned).
    #[error(transparent)]
    Vision(#[from] facegate_vision::VisionError),

    /// The store failed (start-up, gallery load, sweep).
    #[error(transparent)]
    Store(#[from] facegate_store::StoreError),

    /// A credential directory file that cannot be read or parsed.
    #[error("credential directory {}: {reason}", path.display())]
    Directory { path: PathBuf, reason: String },

    /// A credential or store job the engine cannot take now (queue full, engine stopped, not
    /// run in time).
    #[error("{what} not accepted: {reason}")]
    Rejected {
        what: &'static str,
        reason: &'static str,
    },

    /// A Unix socket could not be bound or set up.
    #[error("event socket {}", path.display())]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A gate output failed (GPIO chip absent, command failed or timed out).
    #[error("gate output {output}: {reason}")]
    Gate { output: String, reason: String },

    /// An event sink could not write.
    #[error("event sink {sink}")]
    Sink {
        sink: &'static str,
        #[source]
        source: io::Error,
    },
}
