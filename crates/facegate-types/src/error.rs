use thiserror::Error;

/// Errors raised when constructing the shared types from untrusted values.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TypesError {
    /// A frame's buffer does not match the declared geometry.
    #[error(
        "frame {width}x{height} with stride {stride} needs {needed} bytes, buffer has {actual}"
    )]
    FrameBuffer {
        width: u32,
        height: u32,
        stride: usize,
        needed: usize,
        actual: usize,
    },
    /// A frame with zero width or height, or a stride shorter than a row.
    #[error("invalid frame geometry {width}x{height} with stride {stride}")]
    FrameGeometry {
        width: u32,
        height: u32,
        stride: usize,
    },
    /// An embedding that is empty, not finite, or has (near) zero norm.
    #[error("invalid embedding of dimension {dim}: {reason}")]
    Embedding { dim: usize, reason: &'static str },
    /// A subject id that is empty, too long or holds characters outside `[A-Za-z0-9._:-]`.
    #[error("invalid subject id: {reason} (use 1 to 64 characters from A-Z a-z 0-9 . _ : -)")]
    SubjectId { reason: &'static str },
}
