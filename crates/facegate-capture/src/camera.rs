//! V4L2 cameras through nokhwa: device resolution, mode negotiation, frame conversion to RGB8.

use std::fmt;
use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

use facegate_types::Frame;
use nokhwa::Camera;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
};
use tracing::{debug, info, instrument, trace};

use crate::still::decode_reader;
use crate::{CaptureError, FrameSource, SourceInfo, SourceKind, yuv};

/// A V4L2 camera: an index (`/dev/video<N>`) or a device path (symlinks such as
/// `/dev/v4l/by-id/...` are resolved to their `/dev/video<N>` node).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CameraDevice {
    Index(u32),
    Path(PathBuf),
}

impl fmt::Display for CameraDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Index(i) => write!(f, "/dev/video{i}"),
            Self::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

impl CameraDevice {
    /// The V4L2 index of the device node, or a fatal error naming the device when it is absent.
    pub fn resolve(&self) -> Result<u32, CaptureError> {
        let device = self.to_string();
        let node = match self {
            Self::Index(i) => PathBuf::from(format!("/dev/video{i}")),
            Self::Path(p) => p.clone(),
        };
        let real = match node.canonicalize() {
            Ok(real) => real,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CaptureError::CameraNotFound { device });
            }
            Err(e) => {
                return Err(CaptureError::CameraOpen {
                    device,
                    reason: e.to_string(),
                });
            }
        };
        video_node_index(&real).ok_or_else(|| CaptureError::CameraOpen {
            device,
            reason: format!("{} is not a V4L2 video node (/dev/videoN)", real.display()),
        })
    }
}

/// `N` of a `/dev/videoN` path (nokhwa opens devices by index, so anything outside `/dev` is
/// refused rather than mapped to an unrelated `/dev/videoN`).
fn video_node_index(path: &Path) -> Option<u32> {
    if path.parent() != Some(Path::new("/dev")) {
        return None;
    }
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_prefix("video")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Why nokhwa could not open a camera, as this crate reports it.
fn open_error(device: &str, error: nokhwa::NokhwaError) -> CaptureError {
    use nokhwa::NokhwaError as E;
    match error {
        // Raised when no offered mode is in a format we asked for (e.g. a UVC metadata node).
        E::GetPropertyError { property, .. } if property == "CameraFormat" => {
            CaptureError::CameraNoMode {
                device: device.to_owned(),
                offered: "no mode in MJPG, YUYV, NV12, GREY, RGB3 or BGR3 (a metadata node?)"
                    .into(),
            }
        }
        E::OpenDeviceError(_, reason) => {
            let hint = if reason.contains("ermission denied") {
                " (is the service user in the `video` group?)"
            } else if reason.contains("busy") {
                " (another process is using the camera)"
            } else {
                ""
            };
            CaptureError::CameraOpen {
                device: device.to_owned(),
                reason: format!("{reason}{hint}"),
            }
        }
        other => CaptureError::CameraOpen {
            device: device.to_owned(),
            reason: other.to_string(),
        },
    }
}

/// Pixel formats a camera may deliver that this crate converts to RGB8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CameraPixelFormat {
    /// Motion JPEG (decoded with the pixel limit applied).
    Mjpeg,
    /// Packed 4:2:2 `Y0 U Y1 V`, BT.601 limited range.
    Yuyv,
    /// 4:2:0 with interleaved chroma, BT.601 limited range.
    Nv12,
    /// 8-bit full-range grey.
    Grey,
    /// Packed RGB24.
    Rgb24,
    /// Packed BGR24.
    Bgr24,
}

impl CameraPixelFormat {
    /// All formats, in the order used to break ties when none is preferred.
    pub const ALL: [Self; 6] = [
        Self::Mjpeg,
        Self::Yuyv,
        Self::Nv12,
        Self::Grey,
        Self::Rgb24,
        Self::Bgr24,
    ];

    fn to_nokhwa(self) -> FrameFormat {
        match self {
            Self::Mjpeg => FrameFormat::MJPEG,
            Self::Yuyv => FrameFormat::YUYV,
            Self::Nv12 => FrameFormat::NV12,
            Self::Grey => FrameFormat::GRAY,
            Self::Rgb24 => FrameFormat::RAWRGB,
            Self::Bgr24 => FrameFormat::RAWBGR,
        }
    }

    fn from_nokhwa(f: FrameFormat) -> Self {
        match f {
            FrameFormat::MJPEG => Self::Mjpeg,
            FrameFormat::YUYV => Self::Yuyv,
            FrameFormat::NV12 => Self::Nv12,
            FrameFormat::GRAY => Self::Grey,
            FrameFormat::RAWRGB => Self::Rgb24,
            FrameFormat::RAWBGR => Self::Bgr24,
        }
    }

    /// The V4L2 FourCC name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mjpeg => "MJPG",
            Self::Yuyv => "YUYV",
            Self::Nv12 => "NV12",
            Self::Grey => "GREY",
            Self::Rgb24 => "RGB3",
            Self::Bgr24 => "BGR3",
        }
    }
}

impl fmt::Display for CameraPixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One capture mode a camera offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CameraMode {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub format: CameraPixelFormat,
}

impl fmt::Display for CameraMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}x{}@{} {}",
            self.width, self.height, self.fps, self.format
        )
    }
}

/// What to ask the camera for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraConfig {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Pixel formats in order of preference; other formats the camera offers are a fallback.
    pub formats: Vec<CameraPixelFormat>,
}

impl Default for CameraConfig {
    /// 1280x720 at 30 fps, MJPEG preferred over YUYV.
    fn default() -> Self {
        Self {
            width: 1280,
            height: 720,
            fps: 30,
            formats: vec![CameraPixelFormat::Mjpeg, CameraPixelFormat::Yuyv],
        }
    }
}

/// Picks the offered mode closest to `want`: nearest resolution (squared distance), then nearest
/// frame rate, then the earliest preferred format (formats not listed come after, in
/// [`CameraPixelFormat::ALL`] order). Modes over `max_pixels` are never chosen.
pub fn choose_mode(
    offered: &[CameraMode],
    want: &CameraConfig,
    max_pixels: u64,
) -> Option<CameraMode> {
    let rank = |f: CameraPixelFormat| {
        want.formats
            .iter()
            .position(|&p| p == f)
            .unwrap_or_else(|| {
                want.formats.len()
                    + CameraPixelFormat::ALL
                        .iter()
                        .position(|&p| p == f)
                        .unwrap_or(0)
            })
    };
    offered
        .iter()
        .filter(|m| m.width > 0 && m.height > 0 && m.fps > 0)
        .filter(|m| u64::from(m.width) * u64::from(m.height) <= max_pixels)
        .min_by_key(|m| {
            let dx = i64::from(m.width) - i64::from(want.width);
            let dy = i64::from(m.height) - i64::from(want.height);
            let dfps = i64::from(m.fps) - i64::from(want.fps);
            (dx * dx + dy * dy, dfps.abs(), rank(m.format))
        })
        .copied()
}

/// A camera found on the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraInfo {
    pub index: u32,
    /// The driver's card name, e.g. `HD Webcam: HD Webcam`.
    pub name: String,
    /// The device node, `/dev/video<index>`.
    pub path: PathBuf,
}

/// Lists the V4L2 video nodes. An empty list is not an error. (UVC cameras often expose a second
/// node for metadata, which is listed but cannot be opened for capture.)
pub fn list_cameras() -> Result<Vec<CameraInfo>, CaptureError> {
    let found = catch_unwind(|| nokhwa::query(ApiBackend::Video4Linux))
        .map_err(|_| CaptureError::CameraQuery {
            reason: "camera backend panicked".into(),
        })?
        .map_err(|e| CaptureError::CameraQuery {
            reason: e.to_string(),
        })?;
    let mut cameras: Vec<CameraInfo> = found
        .into_iter()
        .filter_map(|c| match c.index() {
            CameraIndex::Index(i) => Some(CameraInfo {
                index: *i,
                name: c.human_name(),
                path: PathBuf::from(format!("/dev/video{i}")),
            }),
            CameraIndex::String(_) => None,
        })
        .collect();
    cameras.sort_by_key(|c| c.index);
    debug!(cameras = cameras.len(), "listed cameras");
    Ok(cameras)
}

/// Frames from a V4L2 camera, converted to RGB8.
///
/// Timestamps are the time since the stream was opened, taken when each frame is dequeued;
/// sequence numbers count dequeued frames from 0, so a frame that fails to decode leaves a gap.
pub struct CameraSource {
    camera: Camera,
    device: String,
    mode: CameraMode,
    opened: Instant,
    next_sequence: u64,
    max_pixels: u64,
    spare: Option<Vec<u8>>,
}

impl fmt::Debug for CameraSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CameraSource")
            .field("device", &self.device)
            .field("mode", &self.mode)
            .field("next_sequence", &self.next_sequence)
            .finish_non_exhaustive()
    }
}

/// Runs a nokhwa call, turning both its error and a panic inside it into a message.
fn guarded<T>(f: impl FnOnce() -> Result<T, nokhwa::NokhwaError>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("camera backend panicked".into()),
    }
}

impl CameraSource {
    /// Opens `device`, negotiates the mode closest to `config` (see [`choose_mode`]) and starts
    /// streaming. An absent device gives [`CaptureError::CameraNotFound`] naming it.
    #[instrument(skip_all, fields(device = %device))]
    pub fn open(
        device: &CameraDevice,
        config: &CameraConfig,
        max_pixels: u64,
    ) -> Result<Self, CaptureError> {
        let index = device.resolve()?;
        let name = device.to_string();
        let open_err = |reason: String| CaptureError::CameraOpen {
            device: name.clone(),
            reason,
        };
        let all = CameraPixelFormat::ALL.map(CameraPixelFormat::to_nokhwa);
        let opened = catch_unwind(AssertUnwindSafe(|| {
            Camera::with_backend(
                CameraIndex::Index(index),
                RequestedFormat::with_formats(RequestedFormatType::None, &all),
                ApiBackend::Video4Linux,
            )
        }));
        let mut camera = match opened {
            Ok(Ok(camera)) => camera,
            Ok(Err(e)) => return Err(open_error(&name, e)),
            Err(_) => return Err(open_err("camera backend panicked".into())),
        };
        let offered: Vec<CameraMode> = guarded(|| camera.compatible_camera_formats())
            .map_err(open_err)?
            .into_iter()
            .map(|f| CameraMode {
                width: f.width(),
                height: f.height(),
                fps: f.frame_rate(),
                format: CameraPixelFormat::from_nokhwa(f.format()),
            })
            .collect();
        let mode = choose_mode(&offered, config, max_pixels).ok_or_else(|| {
            let mut list: Vec<String> = offered.iter().take(12).map(ToString::to_string).collect();
            if offered.len() > list.len() {
                list.push(format!("and {} more", offered.len() - list.len()));
            }
            if list.is_empty() {
                list.push("nothing".into());
            }
            CaptureError::CameraNoMode {
                device: name.clone(),
                offered: list.join(", "),
            }
        })?;
        let format =
            CameraFormat::new_from(mode.width, mode.height, mode.format.to_nokhwa(), mode.fps);
        if camera.camera_format() != format {
            let wanted = [format.format()];
            guarded(|| {
                camera.set_camera_requset(RequestedFormat::with_formats(
                    RequestedFormatType::Exact(format),
                    &wanted,
                ))
            })
            .map_err(|e| open_err(format!("cannot set mode {mode}: {e}")))?;
        }
        guarded(|| camera.open_stream()).map_err(open_err)?;
        info!(
            device = %name,
            width = mode.width,
            height = mode.height,
            fps = mode.fps,
            format = mode.format.as_str(),
            "camera opened"
        );
        Ok(Self {
            camera,
            device: name,
            mode,
            opened: Instant::now(),
            next_sequence: 0,
            max_pixels,
            spare: None,
        })
    }

    /// The negotiated capture mode.
    pub fn mode(&self) -> CameraMode {
        self.mode
    }
}

impl FrameSource for CameraSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        let sequence = self.next_sequence;
        let buffer =
            guarded(|| self.camera.frame()).map_err(|reason| CaptureError::CameraRead {
                device: self.device.clone(),
                index: sequence,
                reason,
            })?;
        let timestamp = self.opened.elapsed();
        self.next_sequence += 1;
        let resolution = buffer.resolution();
        let frame = decode_camera_frame(
            &RawCameraFrame {
                format: CameraPixelFormat::from_nokhwa(buffer.source_frame_format()),
                width: resolution.width(),
                height: resolution.height(),
                data: buffer.buffer(),
            },
            self.max_pixels,
            &self.device,
            sequence,
            self.spare.take(),
        )?;
        trace!(sequence, "camera frame");
        Ok(Some(frame.with_time(timestamp, sequence)))
    }

    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: SourceKind::Camera,
            name: self.device.clone(),
            width: Some(self.mode.width),
            height: Some(self.mode.height),
            fps: Some(f64::from(self.mode.fps)),
            frame_count: None,
            pixel_format: Some(self.mode.format.as_str().to_owned()),
        }
    }

    fn recycle(&mut self, frame: Frame) {
        self.spare = Some(frame.into_data());
    }
}

/// One frame as the camera delivered it.
pub(crate) struct RawCameraFrame<'a> {
    pub(crate) format: CameraPixelFormat,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) data: &'a [u8],
}

/// Converts one camera frame to RGB8. Every failure is a per-frame [`CaptureError::CameraFrame`].
pub(crate) fn decode_camera_frame(
    raw: &RawCameraFrame<'_>,
    max_pixels: u64,
    device: &str,
    index: u64,
    spare: Option<Vec<u8>>,
) -> Result<Frame, CaptureError> {
    let frame_err = |reason: String| CaptureError::CameraFrame {
        device: device.to_owned(),
        index,
        reason,
    };
    if raw.format == CameraPixelFormat::Mjpeg {
        return decode_reader(Cursor::new(raw.data), Path::new(device), index, max_pixels).map_err(
            |e| match e {
                CaptureError::Decode { source, .. } => {
                    frame_err(format!("corrupt MJPEG: {source}"))
                }
                CaptureError::CorruptFrame { reason, .. } => {
                    frame_err(format!("corrupt MJPEG: {reason}"))
                }
                CaptureError::TooLarge {
                    width,
                    height,
                    max_pixels,
                    ..
                } => frame_err(format!(
                    "MJPEG frame {width}x{height} exceeds the limit of {max_pixels} pixels"
                )),
                other => frame_err(other.to_string()),
            },
        );
    }
    let (w, h) = (raw.width as usize, raw.height as usize);
    if w == 0 || h == 0 || u64::from(raw.width) * u64::from(raw.height) > max_pixels {
        return Err(frame_err(format!(
            "frame size {}x{} is empty or exceeds the limit of {max_pixels} pixels",
            raw.width, raw.height
        )));
    }
    let needed = match raw.format {
        CameraPixelFormat::Yuyv => 2 * w * h,
        CameraPixelFormat::Nv12 => w * h + 2 * w.div_ceil(2) * h.div_ceil(2),
        CameraPixelFormat::Grey => w * h,
        CameraPixelFormat::Rgb24 | CameraPixelFormat::Bgr24 | CameraPixelFormat::Mjpeg => 3 * w * h,
    };
    if raw.data.len() < needed {
        return Err(frame_err(format!(
            "short {} buffer: {} of {needed} bytes",
            raw.format,
            raw.data.len()
        )));
    }
    let row = 3 * w;
    let mut out = match spare {
        Some(mut buf) if buf.capacity() >= row * h => {
            buf.resize(row * h, 0);
            buf
        }
        _ => vec![0; row * h],
    };
    let src = &raw.data[..needed];
    let rows = out.chunks_exact_mut(row);
    match raw.format {
        CameraPixelFormat::Yuyv => {
            for (s, o) in src.chunks_exact(2 * w).zip(rows) {
                yuv::row_yuyv(&yuv::BT601_LIMITED, s, o);
            }
        }
        CameraPixelFormat::Nv12 => {
            let (luma, uv) = src.split_at(w * h);
            let uv_row = 2 * w.div_ceil(2);
            for (i, (y, o)) in luma.chunks_exact(w).zip(rows).enumerate() {
                let start = (i / 2) * uv_row;
                yuv::row_h2_interleaved(&yuv::BT601_LIMITED, y, &uv[start..start + uv_row], o);
            }
        }
        CameraPixelFormat::Grey => {
            for (s, o) in src.chunks_exact(w).zip(rows) {
                yuv::row_grey_full(s, o);
            }
        }
        CameraPixelFormat::Bgr24 => {
            for (s, o) in src.chunks_exact(row).zip(rows) {
                yuv::row_bgr(s, o);
            }
        }
        CameraPixelFormat::Rgb24 | CameraPixelFormat::Mjpeg => out.copy_from_slice(src),
    }
    Frame::from_rgb8(raw.width, raw.height, out).map_err(|e| frame_err(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn mode(width: u32, height: u32, fps: u32, format: CameraPixelFormat) -> CameraMode {
        CameraMode {
            width,
            height,
            fps,
            format,
        }
    }

    use CameraPixelFormat::{Bgr24, Grey, Mjpeg, Nv12, Rgb24, Yuyv};

    #[test]
    fn prefers_exact_mode_in_preferred_format() {
        let offered = [
            mode(1280, 720, 30, Yuyv),
            mode(1280, 720, 30, Mjpeg),
            mode(640, 480, 30, Yuyv),
        ];
        let want = CameraConfig::default();
        assert_eq!(choose_mode(&offered, &want, u64::MAX), Some(offered[1]));
        let want = CameraConfig {
            formats: vec![Yuyv],
            ..CameraConfig::default()
        };
        assert_eq!(choose_mode(&offered, &want, u64::MAX), Some(offered[0]));
    }

    #[test]
    fn falls_back_to_closest_mode_and_other_formats() {
        // YUYV only at 10 fps for 720p: MJPEG at 30 fps is closer to what was asked.
        let offered = [mode(1280, 720, 10, Yuyv), mode(1280, 720, 30, Mjpeg)];
        let want = CameraConfig {
            formats: vec![Yuyv],
            ..CameraConfig::default()
        };
        assert_eq!(choose_mode(&offered, &want, u64::MAX), Some(offered[1]));

        // A grey-only camera without the asked resolution: nearest size wins.
        let offered = [
            mode(320, 240, 30, Grey),
            mode(1024, 768, 15, Grey),
            mode(1920, 1080, 30, Grey),
        ];
        assert_eq!(
            choose_mode(&offered, &CameraConfig::default(), u64::MAX),
            Some(offered[1])
        );

        // Unlisted formats tie-break in the built-in order.
        let offered = [
            mode(640, 480, 30, Bgr24),
            mode(640, 480, 30, Nv12),
            mode(640, 480, 30, Rgb24),
        ];
        assert_eq!(
            choose_mode(&offered, &CameraConfig::default(), u64::MAX),
            Some(offered[1])
        );
    }

    #[test]
    fn never_chooses_a_mode_over_the_pixel_limit_or_degenerate() {
        let offered = [
            mode(4000, 3000, 30, Mjpeg),
            mode(0, 0, 30, Mjpeg),
            mode(640, 480, 0, Mjpeg),
        ];
        assert_eq!(
            choose_mode(&offered, &CameraConfig::default(), 1_000_000),
            None
        );
        assert_eq!(choose_mode(&[], &CameraConfig::default(), u64::MAX), None);
    }

    #[test]
    fn device_paths_and_missing_devices() {
        assert_eq!(video_node_index(Path::new("/dev/video12")), Some(12));
        assert_eq!(video_node_index(Path::new("/dev/media0")), None);
        assert_eq!(video_node_index(Path::new("/tmp/video0")), None);
        assert_eq!(video_node_index(Path::new("/dev/video")), None);
        assert_eq!(video_node_index(Path::new("/dev/video+1")), None);
        assert_eq!(CameraDevice::Index(3).to_string(), "/dev/video3");
        let err = CameraDevice::Index(4242).resolve().unwrap_err();
        assert!(
            matches!(&err, CaptureError::CameraNotFound { device } if device == "/dev/video4242")
        );
        let err = CameraDevice::Path("/dev/null".into())
            .resolve()
            .unwrap_err();
        assert!(matches!(err, CaptureError::CameraOpen { .. }), "{err}");
        // A file named like a video node outside /dev is not a camera.
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("video0");
        std::fs::write(&fake, b"").unwrap();
        let err = CameraDevice::Path(fake).resolve().unwrap_err();
        assert!(err.to_string().contains("not a V4L2 video node"), "{err}");
    }

    #[test]
    fn nokhwa_errors_become_clear_messages() {
        use nokhwa::NokhwaError as E;
        let e = open_error(
            "/dev/video1",
            E::GetPropertyError {
                property: "CameraFormat".into(),
                error: "Failed to Fufill".into(),
            },
        );
        assert!(matches!(e, CaptureError::CameraNoMode { .. }), "{e}");
        let e = open_error(
            "/dev/video0",
            E::OpenDeviceError(
                "0".into(),
                "V4L2 Error: Permission denied (os error 13)".into(),
            ),
        );
        let text = e.to_string();
        assert!(
            text.contains("/dev/video0") && text.contains("`video` group"),
            "{text}"
        );
        assert!(!e.is_frame_error());
    }

    fn convert(
        format: CameraPixelFormat,
        w: u32,
        h: u32,
        data: &[u8],
    ) -> Result<Frame, CaptureError> {
        let raw = RawCameraFrame {
            format,
            width: w,
            height: h,
            data,
        };
        decode_camera_frame(&raw, 1_000_000, "/dev/video0", 5, None)
    }

    #[test]
    fn converts_raw_camera_formats() {
        let f = convert(Yuyv, 2, 1, &[81, 90, 81, 240]).unwrap();
        assert_eq!(f.data(), &[255, 0, 0, 255, 0, 0]);
        let f = convert(Nv12, 2, 2, &[235, 235, 16, 16, 128, 128]).unwrap();
        assert_eq!(f.row(0), &[255; 6]);
        assert_eq!(f.row(1), &[0; 6]);
        let f = convert(Grey, 1, 1, &[9]).unwrap();
        assert_eq!(f.data(), &[9, 9, 9]);
        let f = convert(Bgr24, 1, 1, &[1, 2, 3]).unwrap();
        assert_eq!(f.data(), &[3, 2, 1]);
        let f = convert(Rgb24, 1, 1, &[1, 2, 3]).unwrap();
        assert_eq!(f.data(), &[1, 2, 3]);
    }

    #[test]
    fn short_and_corrupt_camera_frames_are_frame_errors() {
        let err = convert(Yuyv, 4, 4, &[0; 10]).unwrap_err();
        assert!(
            err.is_frame_error() && err.to_string().contains("short YUYV buffer"),
            "{err}"
        );
        let err = convert(Mjpeg, 4, 4, b"\xff\xd8\xff\xe0garbage").unwrap_err();
        assert!(
            err.is_frame_error() && err.to_string().contains("corrupt MJPEG"),
            "{err}"
        );
        assert!(err.to_string().contains("/dev/video0") && err.to_string().contains("frame 5"));
    }

    #[test]
    fn decodes_mjpeg() {
        let img = image::RgbImage::from_pixel(16, 8, image::Rgb([200, 40, 40]));
        let mut jpeg = Cursor::new(Vec::new());
        image::DynamicImage::from(img)
            .write_to(&mut jpeg, image::ImageFormat::Jpeg)
            .unwrap();
        let f = convert(Mjpeg, 0, 0, jpeg.get_ref()).unwrap();
        assert_eq!((f.width(), f.height()), (16, 8));
        let px = &f.data()[..3];
        assert!(px[0] > 180 && px[1] < 70 && px[2] < 70, "{px:?}");
    }
}
