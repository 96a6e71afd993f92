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

/// Displays an error and every error in its `source()` chain, separated by `": "`, as anyhow's
/// `{:#}` does: the one way a library error reaches a log line or a reply with its causes.
///
/// Every error enum of facegate follows one convention so that each cause is printed once:
/// a variant is either `#[error(transparent)]`, or its message does not interpolate the source
/// it marks `#[source]`/`#[from]` (the chain adds it). Use it as
/// `tracing::warn!(error = %ErrorChain(&e), ...)`.
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer {n}")]
    struct Outer {
        n: u32,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn the_chain_prints_each_cause_once_in_order() {
        let e = Outer {
            n: 7,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        };
        assert_eq!(ErrorChain(&e).to_string(), "outer 7: gone");
        let plain = TypesError::SubjectId { reason: "empty" };
        assert_eq!(ErrorChain(&plain).to_string(), plain.to_string());
    }
}
