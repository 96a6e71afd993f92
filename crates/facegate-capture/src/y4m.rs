//! YUV4MPEG2 (`.y4m`) reader: `ffmpeg -i in.mp4 -f yuv4mpegpipe out.y4m` output, replayed as
//! frames. One read buffer is reused for every frame; conversion runs row by row (see `yuv`).

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use facegate_types::Frame;
use tracing::{debug, info, instrument, trace};

use crate::{CaptureError, FrameSource, SourceInfo, SourceKind, yuv};

/// Longest stream or frame header line accepted, newline included.
const MAX_HEADER_LINE: usize = 4096;
/// Read buffer size: large enough that the small header lines cost no extra system calls.
const READ_BUFFER: usize = 1 << 16;

/// Chroma layouts of 8-bit YUV4MPEG2 streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Y4mChroma {
    C420Jpeg,
    C420Paldv,
    C420Mpeg2,
    C420,
    C422,
    C444,
    Mono,
}

impl Y4mChroma {
    fn parse(tag: &[u8]) -> Result<Self, String> {
        Ok(match tag {
            b"420jpeg" => Self::C420Jpeg,
            b"420paldv" => Self::C420Paldv,
            b"420mpeg2" => Self::C420Mpeg2,
            b"420" => Self::C420,
            b"422" => Self::C422,
            b"444" => Self::C444,
            b"mono" => Self::Mono,
            other => {
                return Err(format!(
                    "colour space C{} is not supported (8-bit 420jpeg, 420paldv, 420mpeg2, 420, \
                     422, 444 and mono only)",
                    String::from_utf8_lossy(other)
                ));
            }
        })
    }

    /// The header tag, e.g. `C420jpeg`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::C420Jpeg => "C420jpeg",
            Self::C420Paldv => "C420paldv",
            Self::C420Mpeg2 => "C420mpeg2",
            Self::C420 => "C420",
            Self::C422 => "C422",
            Self::C444 => "C444",
            Self::Mono => "Cmono",
        }
    }

    /// Chroma plane size for a `w` x `h` frame (0 for mono).
    fn chroma_dims(self, w: u64, h: u64) -> (u64, u64) {
        match self {
            Self::C420Jpeg | Self::C420Paldv | Self::C420Mpeg2 | Self::C420 => {
                (w.div_ceil(2), h.div_ceil(2))
            }
            Self::C422 => (w.div_ceil(2), h),
            Self::C444 => (w, h),
            Self::Mono => (0, 0),
        }
    }
}

/// The stream header: geometry, frame rate and chroma layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Y4mHeader {
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// Frame rate as numerator:denominator; `None` when the header omits it or says `F0:0`.
    pub(crate) fps: Option<(u32, u32)>,
    pub(crate) chroma: Y4mChroma,
    /// `XCOLORRANGE=FULL` (ffmpeg's extension): full-range levels instead of limited.
    pub(crate) full_range: bool,
}

impl Y4mHeader {
    /// Parses the stream header line (without its newline).
    pub(crate) fn parse(line: &[u8]) -> Result<Self, String> {
        let mut tokens = line.split(|&b| b == b' ').filter(|t| !t.is_empty());
        if tokens.next() != Some(b"YUV4MPEG2".as_slice()) {
            return Err("not a YUV4MPEG2 stream (missing the `YUV4MPEG2 ` signature)".into());
        }
        let (mut width, mut height, mut fps) = (None, None, None);
        let mut chroma = Y4mChroma::C420Jpeg; // the format's default
        let mut full_range = false;
        for token in tokens {
            let Some((&tag, value)) = token.split_first() else {
                continue;
            };
            match tag {
                b'W' => width = Some(parse_u32(value, "width W")?),
                b'H' => height = Some(parse_u32(value, "height H")?),
                b'F' => fps = parse_ratio(value)?,
                b'C' => chroma = Y4mChroma::parse(value)?,
                b'I' => match value {
                    b"p" | b"t" | b"b" | b"m" | b"?" => {}
                    _ => return Err(format!("invalid interlacing I{}", lossy(value))),
                },
                b'X' => match value {
                    b"COLORRANGE=FULL" => full_range = true,
                    b"COLORRANGE=LIMITED" => full_range = false,
                    _ => {}
                },
                // Aspect ratio and other extensions do not change how frames are read.
                _ => {}
            }
        }
        let width = width.ok_or("missing width (W)")?;
        let height = height.ok_or("missing height (H)")?;
        if width == 0 || height == 0 {
            return Err(format!("invalid frame size {width}x{height}"));
        }
        Ok(Self {
            width,
            height,
            fps,
            chroma,
            full_range,
        })
    }

    /// Bytes of one frame's planes.
    fn frame_bytes(&self) -> Option<usize> {
        let (w, h) = (u64::from(self.width), u64::from(self.height));
        let (cw, ch) = self.chroma.chroma_dims(w, h);
        let total = w
            .checked_mul(h)?
            .checked_add(cw.checked_mul(ch)?.checked_mul(2)?)?;
        usize::try_from(total).ok()
    }

    /// Presentation time of frame `index` (zero when the rate is unknown).
    fn timestamp(&self, index: u64) -> Duration {
        match self.fps {
            Some((num, den)) => {
                let nanos = u128::from(index) * u128::from(den) * 1_000_000_000 / u128::from(num);
                Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
            }
            None => Duration::ZERO,
        }
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn parse_u32(value: &[u8], what: &str) -> Result<u32, String> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or_else(|| format!("invalid {what}: {:?}", lossy(value)))
}

fn parse_ratio(value: &[u8]) -> Result<Option<(u32, u32)>, String> {
    let bad = || {
        format!(
            "invalid frame rate F{} (expected F<num>:<den>)",
            lossy(value)
        )
    };
    let mut parts = value.splitn(2, |&b| b == b':');
    let num = parts.next().ok_or_else(bad)?;
    let den = parts.next().ok_or_else(bad)?;
    let num = parse_u32(num, "frame rate").map_err(|_| bad())?;
    let den = parse_u32(den, "frame rate").map_err(|_| bad())?;
    match (num, den) {
        (0, 0) => Ok(None),
        (0, _) | (_, 0) => Err(bad()),
        _ => Ok(Some((num, den))),
    }
}

enum Line {
    /// A complete line; the buffer holds it without the newline.
    Complete,
    /// End of stream before any byte.
    Eof,
    /// End of stream in the middle of a line.
    Partial,
    /// No newline within `MAX_HEADER_LINE` bytes.
    TooLong,
}

fn read_line(reader: &mut dyn BufRead, buf: &mut Vec<u8>) -> io::Result<Line> {
    buf.clear();
    let n = Read::take(&mut *reader, MAX_HEADER_LINE as u64).read_until(b'\n', buf)?;
    Ok(match buf.last() {
        None if n == 0 => Line::Eof,
        Some(b'\n') => {
            buf.pop();
            Line::Complete
        }
        _ if n >= MAX_HEADER_LINE => Line::TooLong,
        _ => Line::Partial,
    })
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(reader: &mut dyn BufRead, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Frames from a YUV4MPEG2 stream, converted to RGB8 with BT.601 limited-range maths.
///
/// Sequence numbers count frames from 0; timestamps are `index / fps` from the header (zero when
/// the header has no rate). A truncated last frame gives [`CaptureError::Truncated`] and then
/// end of stream.
pub struct Y4mSource {
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    header: Y4mHeader,
    /// One frame of planar YUV, reused for every frame.
    raw: Vec<u8>,
    /// Frame header line, reused.
    line: Vec<u8>,
    /// An RGB buffer handed back through [`FrameSource::recycle`].
    spare: Option<Vec<u8>>,
    next_index: u64,
    done: bool,
}

impl fmt::Debug for Y4mSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Y4mSource")
            .field("path", &self.path)
            .field("header", &self.header)
            .field("next_index", &self.next_index)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Y4mSource {
    /// Opens a `.y4m` file and reads its header. Frames larger than `max_pixels` are refused.
    #[instrument(skip_all, fields(path = %path.as_ref().display()))]
    pub fn open(path: impl AsRef<Path>, max_pixels: u64) -> Result<Self, CaptureError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| CaptureError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_reader(
            BufReader::with_capacity(READ_BUFFER, file),
            path,
            max_pixels,
        )
    }

    /// Reads a YUV4MPEG2 stream from any reader (a pipe, stdin); `name` labels errors and logs.
    pub fn from_reader(
        reader: impl Read + Send + 'static,
        name: impl Into<PathBuf>,
        max_pixels: u64,
    ) -> Result<Self, CaptureError> {
        let path = name.into();
        let mut reader: Box<dyn BufRead + Send> =
            Box::new(BufReader::with_capacity(READ_BUFFER, reader));
        let header_err = |reason: String| CaptureError::Y4mHeader {
            path: path.clone(),
            reason,
        };
        let mut line = Vec::with_capacity(128);
        match read_line(&mut *reader, &mut line) {
            Ok(Line::Complete) => {}
            Ok(Line::Eof) => return Err(header_err("empty stream".into())),
            Ok(Line::Partial) => return Err(header_err("stream ends inside the header".into())),
            Ok(Line::TooLong) => {
                return Err(header_err(format!(
                    "no end of header line within {MAX_HEADER_LINE} bytes"
                )));
            }
            Err(source) => {
                return Err(CaptureError::Read {
                    path,
                    index: 0,
                    source,
                });
            }
        }
        let header = Y4mHeader::parse(&line).map_err(header_err)?;
        let pixels = u64::from(header.width) * u64::from(header.height);
        if pixels > max_pixels {
            return Err(header_err(format!(
                "frame size {}x{} exceeds the limit of {max_pixels} pixels",
                header.width, header.height
            )));
        }
        let frame_bytes = header
            .frame_bytes()
            .ok_or_else(|| header_err("frame size overflows this platform".into()))?;
        info!(
            path = %path.display(),
            width = header.width,
            height = header.height,
            fps_num = header.fps.map(|f| f.0),
            fps_den = header.fps.map(|f| f.1),
            chroma = header.chroma.as_str(),
            "opened Y4M stream"
        );
        Ok(Self {
            path,
            reader,
            header,
            raw: vec![0; frame_bytes],
            line,
            spare: None,
            next_index: 0,
            done: false,
        })
    }

    /// Frame width in pixels.
    pub fn width(&self) -> u32 {
        self.header.width
    }

    /// Frame height in pixels.
    pub fn height(&self) -> u32 {
        self.header.height
    }

    fn end(&mut self) {
        if !self.done {
            self.done = true;
            debug!(path = %self.path.display(), frames = self.next_index, "end of Y4M stream");
        }
    }

    /// Converts `self.raw` into a new (or recycled) RGB buffer.
    fn convert(&mut self) -> Vec<u8> {
        let w = self.header.width as usize;
        let h = self.header.height as usize;
        let row = 3 * w;
        let mut out = match self.spare.take() {
            Some(mut buf) if buf.capacity() >= row * h => {
                buf.resize(row * h, 0);
                buf
            }
            _ => vec![0; row * h],
        };
        let (luma, chroma) = self.raw.split_at(w * h);
        let (cw, ch) = self.header.chroma.chroma_dims(w as u64, h as u64);
        let (cw, ch) = (cw as usize, ch as usize);
        let (u_plane, v_plane) = chroma.split_at(cw * ch);
        let m = if self.header.full_range {
            &yuv::BT601_FULL
        } else {
            &yuv::BT601_LIMITED
        };
        let rows = luma.chunks_exact(w).zip(out.chunks_exact_mut(row));
        match self.header.chroma {
            Y4mChroma::Mono => {
                for (y, o) in rows {
                    yuv::row_mono(m, y, o);
                }
            }
            Y4mChroma::C444 => {
                let chroma_rows = u_plane.chunks_exact(cw).zip(v_plane.chunks_exact(cw));
                for ((y, o), (u, v)) in rows.zip(chroma_rows) {
                    yuv::row_444(m, y, u, v, o);
                }
            }
            Y4mChroma::C422 => {
                let chroma_rows = u_plane.chunks_exact(cw).zip(v_plane.chunks_exact(cw));
                for ((y, o), (u, v)) in rows.zip(chroma_rows) {
                    yuv::row_h2(m, y, u, v, o);
                }
            }
            Y4mChroma::C420Jpeg | Y4mChroma::C420Paldv | Y4mChroma::C420Mpeg2 | Y4mChroma::C420 => {
                // Two luma rows per chroma row; an odd last luma row pairs with the last one.
                let luma_pairs = luma
                    .chunks(2 * w)
                    .zip(out.chunks_mut(2 * row))
                    .zip(u_plane.chunks_exact(cw).zip(v_plane.chunks_exact(cw)));
                for ((y2, o2), (u, v)) in luma_pairs {
                    for (y, o) in y2.chunks_exact(w).zip(o2.chunks_exact_mut(row)) {
                        yuv::row_h2(m, y, u, v, o);
                    }
                }
            }
        }
        out
    }
}

impl FrameSource for Y4mSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        if self.done {
            return Ok(None);
        }
        let index = self.next_index;
        let expected = self.raw.len();
        let read_err = |path: &Path, source| CaptureError::Read {
            path: path.to_path_buf(),
            index,
            source,
        };
        match read_line(&mut *self.reader, &mut self.line) {
            Ok(Line::Complete) => {
                if !(self.line == b"FRAME" || self.line.starts_with(b"FRAME ")) {
                    self.end();
                    return Err(CaptureError::Y4mSync {
                        path: self.path.clone(),
                        index,
                        reason: "expected a FRAME header".into(),
                    });
                }
            }
            Ok(Line::Eof) => {
                self.end();
                return Ok(None);
            }
            Ok(Line::Partial) => {
                self.next_index += 1;
                self.end();
                return Err(CaptureError::Truncated {
                    path: self.path.clone(),
                    index,
                    got: 0,
                    expected,
                });
            }
            Ok(Line::TooLong) => {
                self.end();
                return Err(CaptureError::Y4mSync {
                    path: self.path.clone(),
                    index,
                    reason: format!("no end of FRAME header within {MAX_HEADER_LINE} bytes"),
                });
            }
            Err(source) => {
                self.end();
                return Err(read_err(&self.path, source));
            }
        }
        let got = match read_full(&mut *self.reader, &mut self.raw) {
            Ok(got) => got,
            Err(source) => {
                self.end();
                return Err(read_err(&self.path, source));
            }
        };
        self.next_index += 1;
        if got < expected {
            self.end();
            return Err(CaptureError::Truncated {
                path: self.path.clone(),
                index,
                got,
                expected,
            });
        }
        let rgb = self.convert();
        let frame = Frame::from_rgb8(self.header.width, self.header.height, rgb).map_err(|e| {
            CaptureError::CorruptFrame {
                path: self.path.clone(),
                index,
                reason: e.to_string(),
            }
        })?;
        trace!(sequence = index, "Y4M frame");
        Ok(Some(frame.with_time(self.header.timestamp(index), index)))
    }

    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: SourceKind::Y4m,
            name: self.path.display().to_string(),
            width: Some(self.header.width),
            height: Some(self.header.height),
            fps: self
                .header
                .fps
                .map(|(num, den)| f64::from(num) / f64::from(den)),
            frame_count: None,
            pixel_format: Some(if self.header.full_range {
                format!("{} XCOLORRANGE=FULL", self.header.chroma.as_str())
            } else {
                self.header.chroma.as_str().to_owned()
            }),
        }
    }

    fn recycle(&mut self, frame: Frame) {
        self.spare = Some(frame.into_data());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_ffmpeg_header() {
        let h =
            Y4mHeader::parse(b"YUV4MPEG2 W640 H360 F30000:1001 Ip A1:1 C420jpeg XYSCSS=420JPEG")
                .unwrap();
        assert_eq!(
            h,
            Y4mHeader {
                width: 640,
                height: 360,
                fps: Some((30000, 1001)),
                chroma: Y4mChroma::C420Jpeg,
                full_range: false,
            }
        );
        assert_eq!(h.frame_bytes(), Some(640 * 360 * 3 / 2));
        assert_eq!(h.timestamp(30), Duration::from_nanos(1_001_000_000));
        let h = Y4mHeader::parse(b"YUV4MPEG2 W2 H2 Cmono XCOLORRANGE=FULL").unwrap();
        assert!(h.full_range);
        let h = Y4mHeader::parse(b"YUV4MPEG2 W2 H2 C444 XCOLORRANGE=LIMITED XFOO=1").unwrap();
        assert!(!h.full_range);
    }

    #[test]
    fn defaults_and_layouts() {
        let h = Y4mHeader::parse(b"YUV4MPEG2 W3 H3").unwrap();
        assert_eq!(h.chroma, Y4mChroma::C420Jpeg);
        assert_eq!(h.fps, None);
        assert_eq!(h.timestamp(5), Duration::ZERO);
        assert_eq!(h.frame_bytes(), Some(9 + 2 * 4));
        let h = Y4mHeader::parse(b"YUV4MPEG2 W3 H2 F25:1 C422").unwrap();
        assert_eq!(h.frame_bytes(), Some(6 + 2 * 4));
        let h = Y4mHeader::parse(b"YUV4MPEG2 W3 H2 F25:1 C444").unwrap();
        assert_eq!(h.frame_bytes(), Some(18));
        let h = Y4mHeader::parse(b"YUV4MPEG2 W3 H2 F0:0 Cmono").unwrap();
        assert_eq!(h.frame_bytes(), Some(6));
        assert_eq!(h.fps, None);
        for tag in ["420paldv", "420mpeg2", "420"] {
            let line = format!("YUV4MPEG2 W2 H2 C{tag}");
            assert!(Y4mHeader::parse(line.as_bytes()).is_ok(), "{tag}");
        }
    }

    #[test]
    fn refuses_bad_headers_with_reasons() {
        let cases: [(&[u8], &str); 9] = [
            (b"YUV4MPEG W2 H2", "signature"),
            (b"RIFF....", "signature"),
            (b"YUV4MPEG2 H2", "missing width"),
            (b"YUV4MPEG2 W2", "missing height"),
            (b"YUV4MPEG2 W0 H2", "invalid frame size"),
            (b"YUV4MPEG2 Wx H2", "invalid width"),
            (b"YUV4MPEG2 W2 H2 F30", "frame rate"),
            (b"YUV4MPEG2 W2 H2 F30:0", "frame rate"),
            (b"YUV4MPEG2 W2 H2 C420p10", "C420p10 is not supported"),
        ];
        for (line, want) in cases {
            let err = Y4mHeader::parse(line).unwrap_err();
            assert!(err.contains(want), "{:?}: {err}", lossy(line));
        }
    }

    #[test]
    fn open_refuses_over_limit_and_garbage() {
        let big = b"YUV4MPEG2 W10000 H10000 F25:1\n".to_vec();
        let err = Y4mSource::from_reader(io::Cursor::new(big), "big.y4m", 40_000_000).unwrap_err();
        assert!(!err.is_frame_error());
        assert!(err.to_string().contains("exceeds the limit"), "{err}");

        let err = Y4mSource::from_reader(io::Cursor::new(vec![]), "e.y4m", 100).unwrap_err();
        assert!(err.to_string().contains("empty stream"), "{err}");

        let noline = vec![b'Y'; MAX_HEADER_LINE * 2];
        let err = Y4mSource::from_reader(io::Cursor::new(noline), "n.y4m", 100).unwrap_err();
        assert!(err.to_string().contains("no end of header"), "{err}");
    }

    #[test]
    fn lost_sync_is_fatal() {
        let mut data = b"YUV4MPEG2 W2 H2 F25:1 Cmono\nFRAME\n".to_vec();
        data.extend([16u8; 4]);
        data.extend(b"GARBAGE\n");
        let mut src = Y4mSource::from_reader(io::Cursor::new(data), "s.y4m", 100).unwrap();
        assert!(src.next_frame().unwrap().is_some());
        let err = src.next_frame().unwrap_err();
        assert!(
            matches!(err, CaptureError::Y4mSync { index: 1, .. }),
            "{err}"
        );
        assert!(!err.is_frame_error());
        assert!(src.next_frame().unwrap().is_none());
    }

    #[test]
    fn frame_parameters_are_accepted_and_buffers_recycled() {
        let mut data = b"YUV4MPEG2 W2 H1 F10:1 Cmono\n".to_vec();
        for _ in 0..3 {
            data.extend(b"FRAME Ip\n");
            data.extend([235u8, 16]);
        }
        let mut src = Y4mSource::from_reader(io::Cursor::new(data), "p.y4m", 100).unwrap();
        let mut seqs = vec![];
        while let Some(frame) = src.next_frame().unwrap() {
            assert_eq!(frame.data(), &[255, 255, 255, 0, 0, 0]);
            seqs.push((frame.sequence, frame.timestamp));
            src.recycle(frame);
        }
        assert_eq!(
            seqs,
            [
                (0, Duration::ZERO),
                (1, Duration::from_millis(100)),
                (2, Duration::from_millis(200))
            ]
        );
    }
}
