use std::path::PathBuf;

/// Everything the relay can refuse or fail at, worded for the operator (no `{source}` in the
/// messages: the chain prints each cause once).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The config file could not be read.
    #[error("relay config {path}: cannot be read")]
    ConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown keys.
    #[error("relay config {path}: {reason}")]
    ConfigParse { path: PathBuf, reason: String },
    /// A value is out of bounds or malformed.
    #[error("relay config: {key} {reason}")]
    Setting { key: String, reason: String },
    /// The password file named by `mqtt.password_file`.
    #[error("relay config: mqtt.password_file {path}: cannot be read")]
    PasswordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A spool file or directory operation failed.
    #[error("spool {path}: {op} failed")]
    Spool {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
}

impl RelayError {
    pub(crate) fn setting(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Setting {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Every cause of `e`, joined with `: ` (for log lines).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
