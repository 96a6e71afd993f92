//! Still images: decoding with size limits, the one-image source and the folder source.

use std::cell::{Cell, RefCell};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Cursor, Seek};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use facegate_types::Frame;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageReader, Limits};
use tracing::{debug, info, instrument, trace};

use crate::{CaptureError, CaptureOptions, FrameSource, SourceInfo, SourceKind};

/// File name extensions (compared case-insensitively) that the folder source reads.
pub const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "bmp", "ppm", "pgm"];

/// `true` when `path` ends in one of [`IMAGE_EXTENSIONS`].
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Decoder limits for `max_pixels`: no side longer than the whole budget, and an allocation cap
/// large enough for a 16-bit RGBA image of that size plus decoder scratch space.
fn limits(max_pixels: u64) -> Limits {
    let mut limits = Limits::default();
    let side = u32::try_from(max_pixels).unwrap_or(u32::MAX);
    limits.max_image_width = Some(side);
    limits.max_image_height = Some(side);
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    limits
}

/// Decodes one image file (JPEG, PNG, BMP, PNM; format from the content, not the name) to RGB8,
/// applying its EXIF orientation.
///
/// Grey, alpha and 16-bit images are converted to RGB8 (alpha dropped). An image whose declared
/// size exceeds `max_pixels` fails with [`CaptureError::TooLarge`] before its pixels are
/// allocated; a corrupt or truncated file fails with [`CaptureError::Decode`]. A file that cannot
/// be opened gives [`CaptureError::Open`]. The frame has sequence 0 and timestamp zero.
pub fn decode_image_file(path: impl AsRef<Path>, max_pixels: u64) -> Result<Frame, CaptureError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|source| CaptureError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    decode_reader(BufReader::new(file), path, 0, max_pixels)
}

/// Decodes an image held in memory, as [`decode_image_file`] does; errors name the path
/// `<memory>`.
pub fn decode_image_bytes(bytes: &[u8], max_pixels: u64) -> Result<Frame, CaptureError> {
    decode_reader(Cursor::new(bytes), Path::new("<memory>"), 0, max_pixels)
}

thread_local! {
    /// Set while this thread runs a decoder: a panic then is a decoder bug that
    /// [`decode_reader`] reports as an error, not a crash to print.
    static IN_DECODER: Cell<bool> = const { Cell::new(false) };
    /// The message and place of the last decoder panic on this thread.
    static DECODER_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Longest panic message kept in [`CaptureError::DecoderPanicked`].
const MAX_PANIC_NOTE: usize = 200;

/// Installs, once per process, a panic hook that keeps quiet about panics inside a decoder
/// (noting their message for the error instead of printing it and a backtrace to stderr) and
/// hands every other panic to the hook that was there before.
fn quiet_decoder_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_DECODER.with(Cell::get) {
                return previous(info);
            }
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("non-text panic");
            let mut note = match info.location() {
                // Registry paths shortened to the crate's own (`png-0.18.1/src/...`).
                Some(l) => {
                    let file = l.file();
                    let short = file
                        .find("/registry/src/")
                        .and_then(|i| file[i + 14..].split_once('/'))
                        .map_or(file, |(_, rest)| rest);
                    format!("{message} at {short}:{}", l.line())
                }
                None => message.to_string(),
            };
            if note.len() > MAX_PANIC_NOTE {
                let mut end = MAX_PANIC_NOTE;
                while !note.is_char_boundary(end) {
                    end -= 1;
                }
                note.truncate(end);
            }
            DECODER_PANIC.with(|p| *p.borrow_mut() = Some(note));
        }));
    });
}

/// Decodes from `reader`; errors carry `path` and frame `index`. Decoder panics are caught and
/// reported as [`CaptureError::DecoderPanicked`], in one line: the panic prints nothing.
pub(crate) fn decode_reader<R: BufRead + Seek>(
    reader: R,
    path: &Path,
    index: u64,
    max_pixels: u64,
) -> Result<Frame, CaptureError> {
    quiet_decoder_panics();
    let was = IN_DECODER.with(|d| d.replace(true));
    let result = catch_unwind(AssertUnwindSafe(|| {
        decode_unguarded(reader, path, index, max_pixels)
    }));
    IN_DECODER.with(|d| d.set(was));
    match result {
        Ok(result) => result,
        Err(_) => Err(CaptureError::DecoderPanicked {
            path: path.to_path_buf(),
            index,
            reason: DECODER_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| "no message".to_string()),
        }),
    }
}

fn decode_unguarded<R: BufRead + Seek>(
    mut reader: R,
    path: &Path,
    index: u64,
    max_pixels: u64,
) -> Result<Frame, CaptureError> {
    let decode_err = |source: ImageError| CaptureError::Decode {
        path: path.to_path_buf(),
        index,
        source,
    };
    // The JPEG decoder fills what a cut file lacks with grey and reports success; a half photo
    // must not become a template. JPEG input is read whole (the decoder does so anyway) and
    // checked for its end-of-image marker first.
    let is_jpeg = reader
        .fill_buf()
        .map(|head| head.starts_with(&[0xFF, 0xD8, 0xFF]))
        .unwrap_or(false);
    if is_jpeg {
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| decode_err(ImageError::IoError(e)))?;
        if let Err(reason) = jpeg_complete(&bytes) {
            return Err(CaptureError::CorruptFrame {
                path: path.to_path_buf(),
                index,
                reason: format!("truncated JPEG: {reason}"),
            });
        }
        return decode_checked(Cursor::new(bytes), path, index, max_pixels);
    }
    decode_checked(reader, path, index, max_pixels)
}

/// Whether a JPEG stream runs from its start-of-image to its end-of-image marker: the marker
/// segments are walked by their lengths and the entropy-coded data after each start-of-scan is
/// skipped to the next marker. Bytes after the end-of-image marker (thumbnails of "motion"
/// photos, padding) are allowed; stray bytes between segments are skipped, as decoders do.
fn jpeg_complete(b: &[u8]) -> Result<(), &'static str> {
    const CUT: &str = "the data ends before the end-of-image marker";
    let mut i = 2; // after SOI
    loop {
        // The next marker: skip stray bytes, then fill bytes.
        while i < b.len() && b[i] != 0xFF {
            i += 1;
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1;
        }
        let Some(&marker) = b.get(i) else {
            return Err(CUT);
        };
        i += 1;
        match marker {
            0xD9 => return Ok(()),
            0x01 | 0xD0..=0xD8 => continue,
            _ => {
                let (Some(&hi), Some(&lo)) = (b.get(i), b.get(i + 1)) else {
                    return Err(CUT);
                };
                let len = usize::from(u16::from_be_bytes([hi, lo]));
                if len < 2 {
                    return Err("a marker segment has an impossible length");
                }
                i += len;
                if i > b.len() {
                    return Err(CUT);
                }
                if marker == 0xDA {
                    // Entropy-coded data: 0xFF is followed by 0x00 (stuffing) or a restart
                    // marker inside the scan; anything else starts the next segment.
                    loop {
                        while i < b.len() && b[i] != 0xFF {
                            i += 1;
                        }
                        let Some(&next) = b.get(i + 1) else {
                            return Err(CUT);
                        };
                        if next == 0x00 || (0xD0..=0xD7).contains(&next) {
                            i += 2;
                        } else {
                            break;
                        }
                    }
                }
            }
        }
    }
}

fn decode_checked<R: BufRead + Seek>(
    reader: R,
    path: &Path,
    index: u64,
    max_pixels: u64,
) -> Result<Frame, CaptureError> {
    let decode_err = |source: ImageError| CaptureError::Decode {
        path: path.to_path_buf(),
        index,
        source,
    };
    let mut reader = ImageReader::new(reader)
        .with_guessed_format()
        .map_err(|e| decode_err(ImageError::IoError(e)))?;
    reader.limits(limits(max_pixels));
    let mut decoder = reader.into_decoder().map_err(decode_err)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(CaptureError::TooLarge {
            path: path.to_path_buf(),
            index,
            width,
            height,
            max_pixels,
        });
    }
    // A broken EXIF block should not cost the frame: fall back to no rotation.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    image.apply_orientation(orientation);
    let rgb = image.into_rgb8();
    let (width, height) = rgb.dimensions();
    Frame::from_rgb8(width, height, rgb.into_raw()).map_err(|e| CaptureError::CorruptFrame {
        path: path.to_path_buf(),
        index,
        reason: e.to_string(),
    })
}

/// Decodes a file as a frame of a source: a file that vanished or cannot be read is a per-frame
/// error, not a fatal one.
fn decode_source_file(path: &Path, index: u64, max_pixels: u64) -> Result<Frame, CaptureError> {
    match File::open(path) {
        Ok(file) => decode_reader(BufReader::new(file), path, index, max_pixels),
        Err(e) => Err(CaptureError::Decode {
            path: path.to_path_buf(),
            index,
            source: ImageError::IoError(e),
        }),
    }
}

/// Timestamp of still frame `sequence`: `sequence * interval`, saturating.
fn still_timestamp(interval: Duration, sequence: u64) -> Duration {
    interval.saturating_mul(u32::try_from(sequence).unwrap_or(u32::MAX))
}

/// One still image as a source: one frame, or the same frame over and over when looping.
///
/// The image is decoded on the first call and, when looping, kept decoded. A corrupt image gives
/// one per-frame error and then end of stream (looping a broken image would never end).
pub struct ImageSource {
    path: PathBuf,
    max_pixels: u64,
    looping: bool,
    interval: Duration,
    cached: Option<Frame>,
    next_sequence: u64,
    exhausted: bool,
}

impl std::fmt::Debug for ImageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageSource")
            .field("path", &self.path)
            .field("looping", &self.looping)
            .field("next_sequence", &self.next_sequence)
            .finish_non_exhaustive()
    }
}

impl ImageSource {
    /// Opens `path`, which must be an existing regular file. Nothing is decoded yet.
    #[instrument(skip_all, fields(path = %path.as_ref().display()))]
    pub fn open(path: impl AsRef<Path>, opts: &CaptureOptions) -> Result<Self, CaptureError> {
        let path = path.as_ref();
        let meta = fs::metadata(path).map_err(|source| CaptureError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        if !meta.is_file() {
            return Err(CaptureError::NotSupported {
                path: path.to_path_buf(),
                reason: "not a regular file".into(),
            });
        }
        info!(path = %path.display(), looping = opts.loop_stills, "opened image source");
        Ok(Self {
            path: path.to_path_buf(),
            max_pixels: opts.max_pixels,
            looping: opts.loop_stills,
            interval: opts.still_frame_interval,
            cached: None,
            next_sequence: 0,
            exhausted: false,
        })
    }
}

impl FrameSource for ImageSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        if self.exhausted {
            return Ok(None);
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let frame = match &self.cached {
            Some(frame) => frame.clone(),
            None => match decode_source_file(&self.path, sequence, self.max_pixels) {
                Ok(frame) => {
                    if self.looping {
                        self.cached = Some(frame.clone());
                    }
                    frame
                }
                Err(e) => {
                    self.exhausted = true;
                    return Err(e);
                }
            },
        };
        if !self.looping {
            self.exhausted = true;
        }
        Ok(Some(frame.with_time(
            still_timestamp(self.interval, sequence),
            sequence,
        )))
    }

    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: SourceKind::Image,
            name: self.path.display().to_string(),
            width: self.cached.as_ref().map(Frame::width),
            height: self.cached.as_ref().map(Frame::height),
            fps: None,
            frame_count: (!self.looping).then_some(1),
            pixel_format: None,
        }
    }
}

/// The image files of one folder (see [`IMAGE_EXTENSIONS`]) in sorted file-name order.
///
/// Sequence numbers count files from 0 across loops, so a corrupt file leaves a gap. A corrupt
/// file yields a per-frame error and the next call goes on with the next file. When looping, a
/// pass that produced no good frame ends the stream.
pub struct FolderSource {
    dir: PathBuf,
    files: Vec<PathBuf>,
    position: usize,
    next_sequence: u64,
    good_in_pass: u64,
    errors: u64,
    max_pixels: u64,
    looping: bool,
    interval: Duration,
}

impl std::fmt::Debug for FolderSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FolderSource")
            .field("dir", &self.dir)
            .field("files", &self.files.len())
            .field("position", &self.position)
            .field("next_sequence", &self.next_sequence)
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

impl FolderSource {
    /// Lists the folder. Fails when it cannot be read or holds no image file.
    #[instrument(skip_all, fields(path = %dir.as_ref().display()))]
    pub fn open(dir: impl AsRef<Path>, opts: &CaptureOptions) -> Result<Self, CaptureError> {
        let dir = dir.as_ref();
        let open_err = |source| CaptureError::Open {
            path: dir.to_path_buf(),
            source,
        };
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).map_err(open_err)? {
            let path = entry.map_err(open_err)?.path();
            // `is_file` follows symlinks, so linked images are read too.
            if has_image_extension(&path) && path.is_file() {
                files.push(path);
            }
        }
        if files.is_empty() {
            return Err(CaptureError::EmptyFolder {
                path: dir.to_path_buf(),
            });
        }
        files.sort();
        info!(path = %dir.display(), files = files.len(), looping = opts.loop_stills, "opened folder source");
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            position: 0,
            next_sequence: 0,
            good_in_pass: 0,
            errors: 0,
            max_pixels: opts.max_pixels,
            looping: opts.loop_stills,
            interval: opts.still_frame_interval,
        })
    }

    /// The files this source reads, in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

impl FrameSource for FolderSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        if self.position >= self.files.len() {
            if !self.looping || self.good_in_pass == 0 {
                if self.position == self.files.len() {
                    self.position += 1; // log the end once
                    debug!(path = %self.dir.display(), frames = self.next_sequence, errors = self.errors, "end of folder");
                }
                return Ok(None);
            }
            self.position = 0;
            self.good_in_pass = 0;
        }
        let Some(path) = self.files.get(self.position) else {
            return Ok(None);
        };
        self.position += 1;
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        match decode_source_file(path, sequence, self.max_pixels) {
            Ok(frame) => {
                self.good_in_pass += 1;
                trace!(sequence, "folder frame");
                Ok(Some(frame.with_time(
                    still_timestamp(self.interval, sequence),
                    sequence,
                )))
            }
            Err(e) => {
                self.errors += 1;
                debug!(path = %path.display(), sequence, errors = self.errors, "folder frame failed");
                Err(e)
            }
        }
    }

    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: SourceKind::Folder,
            name: self.dir.display().to_string(),
            width: None,
            height: None,
            fps: None,
            frame_count: (!self.looping).then_some(self.files.len() as u64),
            pixel_format: None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use image::{ImageFormat, Luma, Rgba};

    fn encode(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    /// A 1x1 paletted PNG whose PLTE chunk is 4 bytes (not a multiple of 3): png 0.18.1 panics
    /// on it ("range end index 3 out of range", transform/palette.rs). Built with Python's zlib:
    /// IHDR(1, 1, depth 8, colour type 3), PLTE 01 02 03 04, IDAT zlib(00 00), IEND.
    const PNG_PALETTE_OF_4_BYTES: [u8; 83] = [
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44,
        0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x03, 0x00, 0x00, 0x00, 0x28,
        0xcb, 0x34, 0xbb, 0x00, 0x00, 0x00, 0x04, 0x50, 0x4c, 0x54, 0x45, 0x01, 0x02, 0x03, 0x04,
        0x23, 0xdb, 0x8a, 0xab, 0x00, 0x00, 0x00, 0x0a, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63,
        0x60, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01, 0x48, 0xaf, 0xa4, 0x71, 0x00, 0x00, 0x00, 0x00,
        0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
    ];

    #[test]
    fn a_decoder_panic_is_an_error_with_its_message_and_prints_nothing() {
        let err = decode_image_bytes(&PNG_PALETTE_OF_4_BYTES, 1 << 20).unwrap_err();
        let CaptureError::DecoderPanicked { reason, .. } = &err else {
            panic!("not a decoder panic: {err}");
        };
        assert!(
            reason.contains("out of range") && reason.contains("palette.rs"),
            "{reason}"
        );
        assert!(err.is_frame_error());
        assert_eq!(err.to_string().lines().count(), 1, "{err}");
        // The flag is cleared: a panic outside a decoder still reaches the previous hook (here
        // libtest's), and a good image after a bad one decodes.
        assert!(!IN_DECODER.with(Cell::get));
        let ok = encode(DynamicImage::new_rgb8(2, 2), ImageFormat::Png);
        assert!(decode_image_bytes(&ok, 1 << 20).is_ok());
    }

    #[test]
    fn converts_grey_rgba_and_16_bit_to_rgb8() {
        let grey = image::GrayImage::from_pixel(3, 2, Luma([77]));
        let frame = decode_image_bytes(&encode(grey.into(), ImageFormat::Png), 1_000).unwrap();
        assert_eq!((frame.width(), frame.height()), (3, 2));
        assert!(frame.data().iter().all(|&v| v == 77));

        let rgba = image::RgbaImage::from_pixel(2, 2, Rgba([10, 20, 30, 0]));
        let frame = decode_image_bytes(&encode(rgba.into(), ImageFormat::Png), 1_000).unwrap();
        assert_eq!(frame.row(1), &[10, 20, 30, 10, 20, 30]);

        let deep = image::ImageBuffer::<Luma<u16>, _>::from_pixel(2, 1, Luma([65535u16]));
        let frame = decode_image_bytes(&encode(deep.into(), ImageFormat::Png), 1_000).unwrap();
        assert_eq!(frame.data(), &[255; 6]);

        let pgm = image::GrayImage::from_pixel(2, 2, Luma([5]));
        let frame = decode_image_bytes(&encode(pgm.into(), ImageFormat::Pnm), 1_000).unwrap();
        assert_eq!(frame.data(), &[5; 12]);
    }

    /// A photo-like JPEG (noise, so the entropy data is long) and the same file cut short.
    fn noisy_jpeg() -> Vec<u8> {
        let mut seed = 0x2545_f491_u32;
        let img = image::RgbImage::from_fn(96, 80, |_, _| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let [a, b, c, _] = seed.to_le_bytes();
            image::Rgb([a, b, c])
        });
        encode(img.into(), ImageFormat::Jpeg)
    }

    #[test]
    fn a_truncated_jpeg_is_refused_not_padded() {
        let full = noisy_jpeg();
        assert!(jpeg_complete(&full).is_ok());
        assert!(decode_image_bytes(&full, 100_000).is_ok());
        for cut in [full.len() / 2, full.len() - 2, full.len() * 9 / 10] {
            let err = decode_image_bytes(&full[..cut], 100_000).unwrap_err();
            assert!(err.is_frame_error());
            assert!(
                err.to_string().contains("truncated JPEG"),
                "cut at {cut}: {err}"
            );
        }
        // Data after the end-of-image marker (motion photos, padding) is not a truncation.
        let mut tail = full.clone();
        tail.extend_from_slice(&[0u8; 64]);
        assert!(decode_image_bytes(&tail, 100_000).is_ok());
    }

    #[test]
    fn a_truncated_png_is_refused() {
        let mut seed = 7u32;
        let img = image::RgbImage::from_fn(64, 64, |_, _| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let [a, b, c, _] = seed.to_be_bytes();
            image::Rgb([a, b, c])
        });
        let png = encode(img.into(), ImageFormat::Png);
        assert!(decode_image_bytes(&png[..png.len() / 2], 100_000).is_err());
    }

    #[test]
    fn pixel_limit_is_inclusive() {
        let img = image::RgbImage::new(10, 10);
        let png = encode(img.into(), ImageFormat::Png);
        assert!(decode_image_bytes(&png, 100).is_ok());
        let err = decode_image_bytes(&png, 99).unwrap_err();
        assert!(
            matches!(
                err,
                CaptureError::TooLarge {
                    width: 10,
                    height: 10,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.is_frame_error());
    }

    #[test]
    fn garbage_and_empty_input_are_frame_errors() {
        for bytes in [&b""[..], b"not an image at all", b"\x89PNG\r\n\x1a\n\0\0"] {
            let err = decode_image_bytes(bytes, 1_000).unwrap_err();
            assert!(err.is_frame_error(), "{err}");
            assert!(err.to_string().contains("<memory>"), "{err}");
        }
    }

    #[test]
    fn extensions_are_case_insensitive() {
        assert!(has_image_extension(Path::new("a/B.JPG")));
        assert!(has_image_extension(Path::new("x.pgm")));
        assert!(!has_image_extension(Path::new("x.gif")));
        assert!(!has_image_extension(Path::new("jpg")));
    }

    #[test]
    fn still_timestamps_saturate() {
        let i = Duration::from_millis(40);
        assert_eq!(still_timestamp(i, 25), Duration::from_secs(1));
        assert_eq!(still_timestamp(Duration::MAX, 2), Duration::MAX);
    }
}
