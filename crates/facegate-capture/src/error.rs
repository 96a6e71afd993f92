use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong while opening or reading a frame source.
///
/// Messages carry paths, device names, frame indices, sizes and counts, never pixel values.
/// [`CaptureError::is_frame_error`] tells a survivable per-frame failure (drop the frame and call
/// [`FrameSource::next_frame`](crate::FrameSource::next_frame) again) from a fatal one (the source
/// is unusable; stop or reopen it).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CaptureError {
    // ---- fatal: the source cannot be opened or cannot go on --------------------------------
    /// A source string that names nothing this crate can read.
    #[error("invalid source {spec:?}: {reason}")]
    InvalidSpec { spec: String, reason: String },

    /// A file or folder that cannot be opened or listed.
    #[error("cannot open {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A path that exists but is not what the source needs (e.g. a directory given as an image).
    #[error("{}: {reason}", path.display())]
    NotSupported { path: PathBuf, reason: String },

    /// A folder without any file named `*.jpg`, `*.jpeg`, `*.png`, `*.bmp`, `*.ppm` or `*.pgm`.
    #[error("{}: no image files (jpg, jpeg, png, bmp, ppm, pgm) in this folder", path.display())]
    EmptyFolder { path: PathBuf },

    /// The YUV4MPEG2 stream header is missing, malformed, unsupported or over the pixel limit.
    #[error("{}: invalid Y4M header: {reason}", path.display())]
    Y4mHeader { path: PathBuf, reason: String },

    /// The stream lost frame sync (no `FRAME` marker where one must be); nothing after it can be
    /// trusted.
    #[error("{}: frame {index}: Y4M stream out of sync: {reason}", path.display())]
    Y4mSync {
        path: PathBuf,
        index: u64,
        reason: String,
    },

    /// An I/O error (other than a short read) while reading a stream.
    #[error("{}: read error at frame {index}", path.display())]
    Read {
        path: PathBuf,
        index: u64,
        #[source]
        source: io::Error,
    },

    /// The camera device does not exist.
    #[error(
        "camera {device}: no such device (is the camera connected? see `v4l2-ctl --list-devices`)"
    )]
    CameraNotFound { device: String },

    /// The camera exists but cannot be opened, configured or started.
    #[error("camera {device}: cannot open: {reason}")]
    CameraOpen { device: String, reason: String },

    /// The camera offers no mode in a pixel format this crate decodes, within the pixel limit.
    #[error("camera {device}: no usable capture mode (offered: {offered})")]
    CameraNoMode { device: String, offered: String },

    /// The camera stopped delivering frames (unplugged, stream error).
    #[error("camera {device}: read failed at frame {index}: {reason}")]
    CameraRead {
        device: String,
        index: u64,
        reason: String,
    },

    /// The list of cameras could not be read.
    #[error("cannot list cameras: {reason}")]
    CameraQuery { reason: String },

    // ---- per frame: drop this frame, the next call goes on ---------------------------------
    /// An image that is corrupt, truncated or in an unsupported format.
    #[error("{}: frame {index}: cannot decode image", path.display())]
    Decode {
        path: PathBuf,
        index: u64,
        #[source]
        source: image::ImageError,
    },

    /// An image whose declared size exceeds the pixel limit (refused before any allocation).
    #[error(
        "{}: frame {index}: {width}x{height} exceeds the limit of {max_pixels} pixels",
        path.display()
    )]
    TooLarge {
        path: PathBuf,
        index: u64,
        width: u32,
        height: u32,
        max_pixels: u64,
    },

    /// A Y4M frame cut short by the end of the stream; the stream ends after it.
    #[error("{}: frame {index}: truncated, {got} of {expected} bytes", path.display())]
    Truncated {
        path: PathBuf,
        index: u64,
        got: usize,
        expected: usize,
    },

    /// A frame whose content cannot form an image (zero size, inconsistent geometry).
    #[error("{}: frame {index}: corrupt frame: {reason}", path.display())]
    CorruptFrame {
        path: PathBuf,
        index: u64,
        reason: String,
    },

    /// An image decoder panicked on this input (a decoder bug caught at the boundary). `reason`
    /// is the panic's message and place in the decoder (never pixel data); the panic itself
    /// printed nothing.
    #[error("{}: frame {index}: image decoder panicked on this input ({reason})", path.display())]
    DecoderPanicked {
        path: PathBuf,
        index: u64,
        reason: String,
    },

    /// One camera frame could not be decoded (corrupt MJPEG, short buffer).
    #[error("camera {device}: frame {index}: {reason}")]
    CameraFrame {
        device: String,
        index: u64,
        reason: String,
    },
}

impl CaptureError {
    /// `true` for a per-frame error: the caller drops this frame and calls `next_frame` again.
    /// `false` for a fatal error: the source cannot be opened or cannot go on.
    pub fn is_frame_error(&self) -> bool {
        match self {
            Self::Decode { .. }
            | Self::TooLarge { .. }
            | Self::Truncated { .. }
            | Self::CorruptFrame { .. }
            | Self::DecoderPanicked { .. }
            | Self::CameraFrame { .. } => true,
            Self::InvalidSpec { .. }
            | Self::Open { .. }
            | Self::NotSupported { .. }
            | Self::EmptyFolder { .. }
            | Self::Y4mHeader { .. }
            | Self::Y4mSync { .. }
            | Self::Read { .. }
            | Self::CameraNotFound { .. }
            | Self::CameraOpen { .. }
            | Self::CameraNoMode { .. }
            | Self::CameraRead { .. }
            | Self::CameraQuery { .. } => false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn classifies_frame_and_fatal_errors() {
        let frame = CaptureError::Truncated {
            path: "a.y4m".into(),
            index: 3,
            got: 10,
            expected: 20,
        };
        assert!(frame.is_frame_error());
        let fatal = CaptureError::CameraNotFound {
            device: "/dev/video99".into(),
        };
        assert!(!fatal.is_frame_error());
        assert!(fatal.to_string().contains("/dev/video99"));
    }

    #[test]
    fn messages_name_path_and_index() {
        let e = CaptureError::TooLarge {
            path: "big.png".into(),
            index: 7,
            width: 100_000,
            height: 100_000,
            max_pixels: 40_000_000,
        };
        let text = e.to_string();
        assert!(
            text.contains("big.png") && text.contains("frame 7"),
            "{text}"
        );
        assert!(text.contains("100000x100000"), "{text}");
    }
}
