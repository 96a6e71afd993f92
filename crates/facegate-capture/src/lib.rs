//! Frame sources for facegate: a V4L2 camera through nokhwa, a still image, a folder of images
//! and a YUV4MPEG2 stream, all behind [`FrameSource`], all delivering RGB8 [`Frame`]s with a
//! sequence number and a timestamp. This crate owns every byte of pixel input: decoding with a
//! pixel limit (a corrupt, truncated or enormous image is an error for that frame, never a panic
//! or a huge allocation), colour conversion, and camera mode negotiation; it is the only crate
//! that touches nokhwa.
//!
//! It must never write pixels anywhere (no files, no debug dumps) nor put them in logs, errors or
//! `Debug` output: events and errors carry paths, device names, sequence numbers, sizes and
//! counts only. It never installs a tracing subscriber.
//!
//! Decisions:
//! - Errors are per frame ([`CaptureError::is_frame_error`]: corrupt, truncated or oversized
//!   frame; drop it and call again) or fatal (cannot open, device absent, stream out of sync).
//!   Sequence numbers advance for failed frames too, so a gap means a dropped frame.
//! - Images are decoded with `image` under [`image::Limits`] and an explicit width x height check
//!   against [`CaptureOptions::max_pixels`] before any pixel buffer exists; decoder panics are
//!   caught and reported as frame errors.
//! - YUV is converted with BT.601 integer maths, limited range unless a Y4M stream says
//!   `XCOLORRANGE=FULL`; subsampled chroma is replicated, not interpolated (agrees with ffmpeg
//!   within 1 level for 4:4:4; see the integration tests).
//! - A camera mode is chosen by nearest resolution, then nearest frame rate, then the preferred
//!   pixel format ([`choose_mode`]); nokhwa's own "closest" request is not used because it fails
//!   when the exact resolution is not offered.
//! - Consumers may hand frames back with [`FrameSource::recycle`] so the Y4M and camera paths
//!   allocate nothing per frame after warm-up.

mod camera;
mod error;
mod spec;
mod still;
mod y4m;
mod yuv;

use std::fmt;
use std::time::Duration;

pub use camera::{
    CameraConfig, CameraDevice, CameraInfo, CameraMode, CameraPixelFormat, CameraSource,
    choose_mode, list_cameras,
};
pub use error::CaptureError;
pub use facegate_types::Frame;
pub use spec::SourceSpec;
pub use still::{
    FolderSource, IMAGE_EXTENSIONS, ImageSource, decode_image_bytes, decode_image_file,
    has_image_extension,
};
pub use y4m::Y4mSource;

/// The default pixel limit: 40 megapixels.
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

/// The highest `max_pixels` a configuration may set (a 10,000 x 10,000 image); the decoder's
/// allocation limit is derived from it, so an unbounded value would remove that limit.
pub const MAX_MAX_PIXELS: u64 = 100_000_000;

/// A stream of frames.
///
/// `Ok(None)` means end of stream (and stays so). After an error for which
/// [`CaptureError::is_frame_error`] is true the source is still usable: the next call returns the
/// next frame. After a fatal error the source should be dropped.
pub trait FrameSource: Send {
    /// The next frame, `Ok(None)` at end of stream.
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError>;

    /// What this source is and what it delivers.
    fn info(&self) -> SourceInfo;

    /// Hands a frame's buffer back for reuse by a later frame (optional; sources that cannot
    /// reuse buffers ignore it). Lets a consumer run without per-frame allocation.
    fn recycle(&mut self, frame: Frame) {
        drop(frame);
    }
}

impl fmt::Debug for dyn FrameSource {
    /// The source's [`SourceInfo`] (no pixel content).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FrameSource").field(&self.info()).finish()
    }
}

impl<S: FrameSource + ?Sized> FrameSource for Box<S> {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        (**self).next_frame()
    }

    fn info(&self) -> SourceInfo {
        (**self).info()
    }

    fn recycle(&mut self, frame: Frame) {
        (**self).recycle(frame);
    }
}

/// The kind of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SourceKind {
    Camera,
    Y4m,
    Image,
    Folder,
}

/// A description of a source, for logs and reports (no pixel content).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SourceInfo {
    pub kind: SourceKind,
    /// The path or device.
    pub name: String,
    /// Frame width, when all frames share it and it is known.
    pub width: Option<u32>,
    /// Frame height, when all frames share it and it is known.
    pub height: Option<u32>,
    /// Nominal frames per second, when known.
    pub fps: Option<f64>,
    /// Number of frames, when known in advance (a folder without looping, one image).
    pub frame_count: Option<u64>,
    /// The source pixel format, e.g. `MJPG` or `C420jpeg`.
    pub pixel_format: Option<String>,
}

impl SourceInfo {
    /// What a source built outside this crate says about itself (the other fields unknown).
    pub fn new(kind: SourceKind, name: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.into(),
            width: None,
            height: None,
            fps: None,
            frame_count: None,
            pixel_format: None,
        }
    }

    /// The same, with a nominal frame rate.
    pub fn with_fps(mut self, fps: f64) -> Self {
        self.fps = Some(fps);
        self
    }
}

/// How to open sources.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CaptureOptions {
    /// Largest frame accepted, in pixels (width x height). Default [`DEFAULT_MAX_PIXELS`].
    pub max_pixels: u64,
    /// The camera mode to ask for.
    pub camera: CameraConfig,
    /// Whether image and folder sources start again at the end instead of ending.
    pub loop_stills: bool,
    /// Timestamp step between frames of image and folder sources (frame `n` is at
    /// `n * still_frame_interval`). Default 1/30 s.
    pub still_frame_interval: Duration,
}

impl CaptureOptions {
    /// Sets the pixel limit.
    #[must_use]
    pub fn with_max_pixels(mut self, max_pixels: u64) -> Self {
        self.max_pixels = max_pixels;
        self
    }

    /// Sets the camera request.
    #[must_use]
    pub fn with_camera(mut self, camera: CameraConfig) -> Self {
        self.camera = camera;
        self
    }

    /// Sets whether image and folder sources loop.
    #[must_use]
    pub fn with_loop_stills(mut self, loop_stills: bool) -> Self {
        self.loop_stills = loop_stills;
        self
    }

    /// Sets the timestamp step of image and folder sources.
    #[must_use]
    pub fn with_still_frame_interval(mut self, interval: Duration) -> Self {
        self.still_frame_interval = interval;
        self
    }
}

impl Default for CaptureOptions {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
            camera: CameraConfig::default(),
            loop_stills: false,
            still_frame_interval: Duration::from_nanos(1_000_000_000 / 30),
        }
    }
}

/// Opens the source `spec` names.
pub fn open(
    spec: &SourceSpec,
    opts: &CaptureOptions,
) -> Result<Box<dyn FrameSource>, CaptureError> {
    Ok(match spec {
        SourceSpec::Camera(device) => {
            Box::new(CameraSource::open(device, &opts.camera, opts.max_pixels)?)
        }
        SourceSpec::Folder(dir) => Box::new(FolderSource::open(dir, opts)?),
        SourceSpec::Y4m(path) => Box::new(Y4mSource::open(path, opts.max_pixels)?),
        SourceSpec::Image(path) => Box::new(ImageSource::open(path, opts)?),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn default_options() {
        let o = CaptureOptions::default();
        assert_eq!(o.max_pixels, 40_000_000);
        assert!(!o.loop_stills);
        assert_eq!(
            (o.camera.width, o.camera.height, o.camera.fps),
            (1280, 720, 30)
        );
        let o = o
            .with_max_pixels(5)
            .with_loop_stills(true)
            .with_still_frame_interval(Duration::from_millis(40));
        assert_eq!((o.max_pixels, o.loop_stills), (5, true));
        assert_eq!(o.still_frame_interval, Duration::from_millis(40));
    }

    #[test]
    fn sources_are_send_and_boxes_are_sources() {
        fn assert_source<S: FrameSource>() {}
        assert_source::<Y4mSource>();
        assert_source::<FolderSource>();
        assert_source::<ImageSource>();
        assert_source::<CameraSource>();
        assert_source::<Box<dyn FrameSource>>();
    }
}
