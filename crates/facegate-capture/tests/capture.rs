//! Integration tests for facegate-capture: every source through the public API, with streams and
//! images the tests write themselves, plus one replay of a real video from `../shared/eval`
//! (skipped loudly when it or ffmpeg is absent).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use facegate_capture::{
    CameraDevice, CaptureError, CaptureOptions, FolderSource, FrameSource, ImageSource, SourceKind,
    SourceSpec, Y4mSource, decode_image_bytes, decode_image_file, list_cameras, open,
};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

// ---- a global allocator that records the largest single allocation on opted-in threads ----

struct PeakAlloc;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

// SAFETY: forwards every call to the system allocator unchanged; only records sizes.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// Runs `f` and returns its result with the largest single allocation it made on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let out = f();
    TRACKING.with(|t| t.set(false));
    (out, LARGEST.with(Cell::get))
}

// ---- helpers ----

/// BT.601 limited-range codes of a few colours: (Y, U, V) and the RGB they decode to.
const WHITE: ([u8; 3], [u8; 3]) = ([235, 128, 128], [255, 255, 255]);
const BLACK: ([u8; 3], [u8; 3]) = ([16, 128, 128], [0, 0, 0]);
const RED: ([u8; 3], [u8; 3]) = ([81, 90, 240], [255, 0, 0]);

/// Writes a Y4M stream: `header` params after the signature, then each frame's planes.
fn write_y4m(path: &Path, header: &str, frames: &[Vec<u8>]) {
    let mut data = format!("YUV4MPEG2 {header}\n").into_bytes();
    for f in frames {
        data.extend_from_slice(b"FRAME\n");
        data.extend_from_slice(f);
    }
    fs::write(path, data).unwrap();
}

/// Planes of a `w` x `h` frame whose pixel `(x, y)` has YUV `px(x, y)`, chroma subsampled by
/// `(sx, sy)` taking the top-left sample of each block.
fn planes(
    w: usize,
    h: usize,
    sx: usize,
    sy: usize,
    px: impl Fn(usize, usize) -> [u8; 3],
) -> Vec<u8> {
    let mut out: Vec<u8> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| px(x, y)[0])
        .collect();
    let (cw, ch) = (w.div_ceil(sx), h.div_ceil(sy));
    for plane in [1, 2] {
        for cy in 0..ch {
            for cx in 0..cw {
                out.push(px(cx * sx, cy * sy)[plane]);
            }
        }
    }
    out
}

fn pixel(frame: &facegate_capture::Frame, x: usize, y: usize) -> [u8; 3] {
    let row = frame.row(y as u32);
    [row[3 * x], row[3 * x + 1], row[3 * x + 2]]
}

fn read_all(src: &mut dyn FrameSource) -> Vec<Result<facegate_capture::Frame, CaptureError>> {
    let mut out = Vec::new();
    loop {
        match src.next_frame() {
            Ok(Some(f)) => out.push(Ok(f)),
            Ok(None) => return out,
            Err(e) => out.push(Err(e)),
        }
        assert!(out.len() < 10_000, "source never ends");
    }
}

fn png_bytes(img: RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    DynamicImage::from(img)
        .write_to(&mut out, ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

fn jpeg_bytes(img: RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    DynamicImage::from(img)
        .write_to(&mut out, ImageFormat::Jpeg)
        .unwrap();
    out.into_inner()
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], body: &[u8]) {
    out.extend((body.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend(kind);
    out.extend(body);
    let crc = crc32(&out[start..]);
    out.extend(crc.to_be_bytes());
}

/// A well-formed PNG header declaring `w` x `h` RGB8, with a tiny (wrong-sized) image body.
fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    png_chunk(&mut png, b"IHDR", &ihdr);
    // zlib stream of a few zero bytes
    png_chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x60, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01],
    );
    png_chunk(&mut png, b"IEND", &[]);
    png
}

// ---- Y4M ----

#[test]
fn y4m_420_stream_converts_colours_with_sequence_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c420.y4m");
    // 4x2: left half red, right half white, identical in 3 frames; chroma blocks are 2x2.
    let frame = planes(4, 2, 2, 2, |x, _| if x < 2 { RED.0 } else { WHITE.0 });
    write_y4m(
        &path,
        "W4 H2 F25:1 Ip A1:1 C420jpeg XYSCSS=420JPEG",
        &vec![frame; 3],
    );

    let mut src = Y4mSource::open(&path, 1_000).unwrap();
    let info = src.info();
    assert_eq!(info.kind, SourceKind::Y4m);
    assert_eq!(
        (info.width, info.height, info.fps),
        (Some(4), Some(2), Some(25.0))
    );
    assert_eq!(info.pixel_format.as_deref(), Some("C420jpeg"));
    let frames: Vec<_> = read_all(&mut src).into_iter().map(Result::unwrap).collect();
    assert_eq!(frames.len(), 3);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.sequence, i as u64);
        assert_eq!(f.timestamp, Duration::from_millis(40 * i as u64));
        assert_eq!((f.width(), f.height()), (4, 2));
        for y in 0..2 {
            assert_eq!(pixel(f, 0, y), RED.1);
            assert_eq!(pixel(f, 1, y), RED.1);
            assert_eq!(pixel(f, 2, y), WHITE.1);
            assert_eq!(pixel(f, 3, y), WHITE.1);
        }
    }
    assert!(
        src.next_frame().unwrap().is_none(),
        "end of stream stays the end"
    );
}

#[test]
fn y4m_420_odd_size_and_all_420_sitings() {
    let dir = tempfile::tempdir().unwrap();
    // 3x3: chroma is 2x2; the last column and row take the last chroma sample.
    let frame = planes(3, 3, 2, 2, |x, y| {
        if x == 2 && y == 2 {
            BLACK.0
        } else if x == 2 || y == 2 {
            WHITE.0
        } else {
            RED.0
        }
    });
    for tag in ["420jpeg", "420paldv", "420mpeg2", "420"] {
        let path = dir.path().join(format!("odd_{tag}.y4m"));
        write_y4m(
            &path,
            &format!("W3 H3 F30:1 C{tag}"),
            std::slice::from_ref(&frame),
        );
        let mut src = Y4mSource::open(&path, 1_000).unwrap();
        let f = src.next_frame().unwrap().unwrap();
        assert_eq!(pixel(&f, 0, 0), RED.1, "{tag}");
        assert_eq!(pixel(&f, 1, 1), RED.1, "{tag}");
        for (x, y) in [(2, 0), (2, 1), (0, 2), (1, 2)] {
            assert_eq!(pixel(&f, x, y), WHITE.1, "{tag} ({x},{y})");
        }
        assert_eq!(pixel(&f, 2, 2), BLACK.1, "{tag}");
        assert!(src.next_frame().unwrap().is_none());
    }
}

#[test]
fn y4m_444_422_and_mono_streams() {
    let dir = tempfile::tempdir().unwrap();
    let colours = [RED, WHITE, BLACK, RED, BLACK, WHITE];
    let at = |x: usize, y: usize| colours[(x + 3 * y) % colours.len()];

    let p444 = dir.path().join("c444.y4m");
    write_y4m(
        &p444,
        "W3 H2 F30000:1001 C444",
        &[planes(3, 2, 1, 1, |x, y| at(x, y).0)],
    );
    let f = Y4mSource::open(&p444, 1_000)
        .unwrap()
        .next_frame()
        .unwrap()
        .unwrap();
    for y in 0..2 {
        for x in 0..3 {
            assert_eq!(pixel(&f, x, y), at(x, y).1, "444 ({x},{y})");
        }
    }

    let p422 = dir.path().join("c422.y4m");
    let pairs = |x: usize, y: usize| {
        if (x / 2 + y).is_multiple_of(2) {
            RED
        } else {
            WHITE
        }
    };
    write_y4m(
        &p422,
        "W4 H2 F30:1 C422",
        &[planes(4, 2, 2, 1, |x, y| pairs(x, y).0)],
    );
    let f = Y4mSource::open(&p422, 1_000)
        .unwrap()
        .next_frame()
        .unwrap()
        .unwrap();
    for y in 0..2 {
        for x in 0..4 {
            assert_eq!(pixel(&f, x, y), pairs(x, y).1, "422 ({x},{y})");
        }
    }

    let mono = dir.path().join("mono.y4m");
    write_y4m(
        &mono,
        "W2 H2 F30:1 Cmono",
        &[vec![16, 235, 126, 255], vec![235; 4]],
    );
    let mut src = Y4mSource::open(&mono, 1_000).unwrap();
    let f = src.next_frame().unwrap().unwrap();
    assert_eq!(
        f.data(),
        &[0, 0, 0, 255, 255, 255, 128, 128, 128, 255, 255, 255]
    );
    let f = src.next_frame().unwrap().unwrap();
    assert_eq!((f.sequence, f.data()), (1, &[255u8; 12][..]));
    assert!(src.next_frame().unwrap().is_none());

    // ffmpeg tags full-range streams; their levels are used as they are.
    let full = dir.path().join("full.y4m");
    write_y4m(
        &full,
        "W2 H1 F30:1 Cmono XCOLORRANGE=FULL",
        &[vec![16, 235]],
    );
    let f = Y4mSource::open(&full, 1_000)
        .unwrap()
        .next_frame()
        .unwrap()
        .unwrap();
    assert_eq!(f.data(), &[16, 16, 16, 235, 235, 235]);
}

#[test]
fn truncated_y4m_gives_one_frame_error_then_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.y4m");
    let good = vec![16u8; 4 * 2 * 3 / 2];
    write_y4m(&path, "W4 H2 F25:1", &[good.clone(), good]);
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend(b"FRAME\n");
    bytes.extend([16u8; 5]); // 5 of 12 bytes
    fs::write(&path, &bytes).unwrap();

    let mut src = open(
        &SourceSpec::parse(path.to_str().unwrap()).unwrap(),
        &CaptureOptions::default(),
    )
    .unwrap();
    assert_eq!(src.next_frame().unwrap().unwrap().sequence, 0);
    assert_eq!(src.next_frame().unwrap().unwrap().sequence, 1);
    let err = src.next_frame().unwrap_err();
    assert!(err.is_frame_error(), "{err}");
    assert!(
        matches!(&err, CaptureError::Truncated { index: 2, got: 5, expected: 12, path: p } if *p == path),
        "{err}"
    );
    assert!(src.next_frame().unwrap().is_none());
    assert!(src.next_frame().unwrap().is_none());

    // Cut inside the FRAME marker itself.
    fs::write(&path, b"YUV4MPEG2 W2 H2 Cmono\nFRAME\n\x10\x10\x10\x10FRA").unwrap();
    let mut src = Y4mSource::open(&path, 100).unwrap();
    assert!(src.next_frame().unwrap().is_some());
    let err = src.next_frame().unwrap_err();
    assert!(
        matches!(
            err,
            CaptureError::Truncated {
                index: 1,
                got: 0,
                ..
            }
        ),
        "{err}"
    );
    assert!(src.next_frame().unwrap().is_none());
}

#[test]
fn bad_y4m_headers_are_fatal_and_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 5] = [
        ("empty.y4m", b"", "empty stream"),
        (
            "riff.y4m",
            b"RIFF\x00\x00\x00\x00WAVEfmt \n",
            "not a YUV4MPEG2 stream",
        ),
        ("nowidth.y4m", b"YUV4MPEG2 H2 F25:1\n", "missing width"),
        (
            "deep.y4m",
            b"YUV4MPEG2 W2 H2 C420p10\n",
            "C420p10 is not supported",
        ),
        (
            "huge.y4m",
            b"YUV4MPEG2 W8000 H8000 F25:1\n",
            "exceeds the limit of 40000000 pixels",
        ),
    ];
    for (name, bytes, want) in cases {
        let path = dir.path().join(name);
        fs::write(&path, bytes).unwrap();
        let err = open(&SourceSpec::Y4m(path.clone()), &CaptureOptions::default()).unwrap_err();
        assert!(!err.is_frame_error(), "{name}: {err}");
        let text = err.to_string();
        assert!(text.contains(want) && text.contains(name), "{name}: {text}");
    }
    let err = Y4mSource::open(dir.path().join("missing.y4m"), 100).unwrap_err();
    assert!(matches!(err, CaptureError::Open { .. }), "{err}");
}

// ---- images ----

#[test]
fn corrupt_and_truncated_jpegs_are_frame_errors() {
    let dir = tempfile::tempdir().unwrap();
    let img = RgbImage::from_fn(64, 48, |x, y| Rgb([x as u8 * 4, y as u8 * 5, 90]));
    let jpeg = jpeg_bytes(img);
    assert!(decode_image_bytes(&jpeg, 10_000).is_ok());

    let cases: [(&str, Vec<u8>); 3] = [
        ("header_only.jpg", jpeg[..20].to_vec()),
        (
            "garbage.jpg",
            b"\xff\xd8\xff\xdb this is not a quantisation table".to_vec(),
        ),
        ("text.jpg", b"hello, I am not an image".to_vec()),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        fs::write(&path, &bytes).unwrap();
        let err = decode_image_file(&path, 40_000_000).unwrap_err();
        assert!(err.is_frame_error(), "{name}: {err}");
        assert!(err.to_string().contains(name), "{name}: {err}");
        // Same verdict from memory.
        assert!(
            decode_image_bytes(&bytes, 40_000_000)
                .unwrap_err()
                .is_frame_error()
        );
    }
    // Every prefix of a valid JPEG decodes or fails cleanly: never a panic.
    for cut in (0..jpeg.len()).step_by(7) {
        let _ = decode_image_bytes(&jpeg[..cut], 10_000);
    }
    let err = decode_image_file(dir.path().join("absent.jpg"), 100).unwrap_err();
    assert!(
        matches!(err, CaptureError::Open { .. }) && !err.is_frame_error(),
        "{err}"
    );
}

#[test]
fn enormous_declared_png_fails_without_a_huge_allocation() {
    let png = png_declaring(100_000, 100_000);
    let (result, largest) = largest_allocation(|| decode_image_bytes(&png, 40_000_000));
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            CaptureError::TooLarge {
                width: 100_000,
                height: 100_000,
                max_pixels: 40_000_000,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_frame_error());
    const ALLOCATION_BOUND: usize = 1 << 20;
    assert!(
        largest < ALLOCATION_BOUND,
        "largest allocation {largest} bytes"
    );

    // Declared within the limit but wrong body: a decode error, not a panic.
    let err = decode_image_bytes(&png_declaring(64, 64), 40_000_000).unwrap_err();
    assert!(err.is_frame_error(), "{err}");
    // Absurd side lengths are refused too.
    let err = decode_image_bytes(&png_declaring(u32::MAX >> 1, 1), 40_000_000).unwrap_err();
    assert!(err.is_frame_error(), "{err}");
}

#[test]
fn image_source_single_and_looping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.png");
    fs::write(&path, png_bytes(RgbImage::from_pixel(5, 4, Rgb([1, 2, 3])))).unwrap();

    let mut src = ImageSource::open(&path, &CaptureOptions::default()).unwrap();
    let frames = read_all(&mut src);
    assert_eq!(frames.len(), 1);
    let f = frames[0].as_ref().unwrap();
    assert_eq!(
        (f.width(), f.height(), f.sequence, f.timestamp),
        (5, 4, 0, Duration::ZERO)
    );
    assert_eq!(pixel(f, 4, 3), [1, 2, 3]);

    let mut opts = CaptureOptions::default();
    opts.loop_stills = true;
    opts.still_frame_interval = Duration::from_millis(100);
    let mut src = ImageSource::open(&path, &opts).unwrap();
    for i in 0..4u64 {
        let f = src.next_frame().unwrap().unwrap();
        assert_eq!(
            (f.sequence, f.timestamp),
            (i, Duration::from_millis(100 * i))
        );
    }

    // A corrupt image, even looping: one frame error, then the end.
    let bad = dir.path().join("bad.png");
    fs::write(&bad, b"\x89PNG\r\n\x1a\ncorrupt").unwrap();
    let mut src = ImageSource::open(&bad, &opts).unwrap();
    assert!(src.next_frame().unwrap_err().is_frame_error());
    assert!(src.next_frame().unwrap().is_none());

    let err = ImageSource::open(dir.path(), &opts).unwrap_err();
    assert!(matches!(err, CaptureError::NotSupported { .. }), "{err}");
}

#[test]
fn folder_skips_a_corrupt_file_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(
        d.join("a_good.png"),
        png_bytes(RgbImage::from_pixel(4, 3, Rgb([200, 0, 0]))),
    )
    .unwrap();
    fs::write(d.join("b_corrupt.jpg"), b"\xff\xd8\xff\xe0 broken").unwrap();
    let bmp = {
        let mut out = Cursor::new(Vec::new());
        DynamicImage::from(RgbImage::from_pixel(2, 2, Rgb([0, 0, 200])))
            .write_to(&mut out, ImageFormat::Bmp)
            .unwrap();
        out.into_inner()
    };
    fs::write(d.join("C_good.BMP"), bmp).unwrap();
    fs::write(d.join("notes.txt"), b"not an image").unwrap();
    fs::create_dir(d.join("sub.jpg")).unwrap();

    let mut src = open(
        &SourceSpec::parse(d.to_str().unwrap()).unwrap(),
        &CaptureOptions::default(),
    )
    .unwrap();
    assert_eq!(src.info().frame_count, Some(3));
    let results = read_all(&mut src);
    assert_eq!(
        results.len(),
        3,
        "C_good.BMP sorts first (byte order), then a_, b_"
    );
    let first = results[0].as_ref().unwrap();
    assert_eq!((first.sequence, pixel(first, 0, 0)), (0, [0, 0, 200]));
    let second = results[1].as_ref().unwrap();
    assert_eq!((second.sequence, pixel(second, 0, 0)), (1, [200, 0, 0]));
    let err = results[2].as_ref().unwrap_err();
    assert!(
        err.is_frame_error() && err.to_string().contains("b_corrupt.jpg"),
        "{err}"
    );
    assert!(src.next_frame().unwrap().is_none());
}

#[test]
fn folder_good_error_good_end_and_looping() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("1.png"), png_bytes(RgbImage::new(2, 2))).unwrap();
    fs::write(d.join("2.jpg"), b"corrupt").unwrap();
    fs::write(d.join("3.png"), png_bytes(RgbImage::new(3, 3))).unwrap();

    let mut src = FolderSource::open(d, &CaptureOptions::default()).unwrap();
    assert_eq!(src.next_frame().unwrap().unwrap().sequence, 0);
    let err = src.next_frame().unwrap_err();
    assert!(
        matches!(&err, CaptureError::Decode { index: 1, .. }) && err.is_frame_error(),
        "{err}"
    );
    let third = src.next_frame().unwrap().unwrap();
    assert_eq!((third.sequence, third.width()), (2, 3));
    assert!(src.next_frame().unwrap().is_none());

    let mut opts = CaptureOptions::default();
    opts.loop_stills = true;
    let mut src = FolderSource::open(d, &opts).unwrap();
    let seqs: Vec<_> = (0..7)
        .map(|_| src.next_frame().map(|f| f.unwrap().sequence).ok())
        .collect();
    assert_eq!(
        seqs,
        [Some(0), None, Some(2), Some(3), None, Some(5), Some(6)]
    );

    // An image over the pixel limit is a frame error too, and the folder goes on.
    let opts_small = CaptureOptions::default().with_max_pixels(4);
    let mut src = FolderSource::open(d, &opts_small).unwrap();
    assert_eq!(src.next_frame().unwrap().unwrap().sequence, 0);
    assert!(src.next_frame().unwrap_err().is_frame_error());
    let err = src.next_frame().unwrap_err();
    assert!(
        matches!(
            err,
            CaptureError::TooLarge {
                index: 2,
                width: 3,
                height: 3,
                max_pixels: 4,
                ..
            }
        ),
        "{err}"
    );
    assert!(src.next_frame().unwrap().is_none());

    // Looping a folder of only corrupt files ends after one pass instead of spinning.
    let bad = tempfile::tempdir().unwrap();
    fs::write(bad.path().join("x.png"), b"bad").unwrap();
    let mut src = FolderSource::open(bad.path(), &opts).unwrap();
    assert!(src.next_frame().is_err());
    assert!(src.next_frame().unwrap().is_none());

    let empty = tempfile::tempdir().unwrap();
    let err = FolderSource::open(empty.path(), &opts).unwrap_err();
    assert!(
        matches!(err, CaptureError::EmptyFolder { .. }) && !err.is_frame_error(),
        "{err}"
    );
}

// ---- cameras ----

#[test]
fn missing_camera_is_a_fatal_error_naming_the_device() {
    for spec in ["/dev/video99", "camera:/dev/video99"] {
        let err = open(
            &SourceSpec::parse(spec).unwrap(),
            &CaptureOptions::default(),
        )
        .unwrap_err();
        assert!(!err.is_frame_error(), "{err}");
        assert!(matches!(err, CaptureError::CameraNotFound { .. }), "{err}");
        assert!(err.to_string().contains("/dev/video99"), "{err}");
    }
    let err = open(
        &SourceSpec::parse("camera:99").unwrap(),
        &CaptureOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("/dev/video99"), "{err}");
}

#[test]
fn listing_cameras_works_without_cameras() {
    let cameras = list_cameras().unwrap();
    for c in &cameras {
        assert!(c.path.starts_with("/dev"), "{c:?}");
    }
}

// ---- specs ----

#[test]
fn source_specs_parse() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_owned();
    let notes = dir.path().join("notes.txt");
    fs::write(&notes, b"x").unwrap();

    let ok = [
        ("camera", SourceSpec::Camera(CameraDevice::Index(0))),
        ("camera:0", SourceSpec::Camera(CameraDevice::Index(0))),
        ("camera:12", SourceSpec::Camera(CameraDevice::Index(12))),
        (
            "/dev/video0",
            SourceSpec::Camera(CameraDevice::Path("/dev/video0".into())),
        ),
        (
            "camera:/dev/v4l/by-id/usb-cam",
            SourceSpec::Camera(CameraDevice::Path("/dev/v4l/by-id/usb-cam".into())),
        ),
        (d.as_str(), SourceSpec::Folder(d.clone().into())),
        ("clip.y4m", SourceSpec::Y4m("clip.y4m".into())),
        ("dir/CLIP.Y4M", SourceSpec::Y4m("dir/CLIP.Y4M".into())),
        ("face.jpg", SourceSpec::Image("face.jpg".into())),
        ("face.JPEG", SourceSpec::Image("face.JPEG".into())),
        ("a.png", SourceSpec::Image("a.png".into())),
        ("a.bmp", SourceSpec::Image("a.bmp".into())),
        ("a.ppm", SourceSpec::Image("a.ppm".into())),
        ("a.pgm", SourceSpec::Image("a.pgm".into())),
        ("y4m:-pipe", SourceSpec::Y4m("-pipe".into())),
        ("image:photo.raw", SourceSpec::Image("photo.raw".into())),
        ("folder:not/yet", SourceSpec::Folder("not/yet".into())),
    ];
    for (text, want) in ok {
        assert_eq!(SourceSpec::parse(text).unwrap(), want, "{text}");
        assert_eq!(text.parse::<SourceSpec>().unwrap(), want, "{text}");
    }
    let bad = [
        "",
        "camera:",
        "camera:front",
        "camera:-1",
        "no/such/thing",
        notes.to_str().unwrap(),
        "y4m:",
    ];
    for text in bad {
        let err = SourceSpec::parse(text).unwrap_err();
        assert!(
            matches!(err, CaptureError::InvalidSpec { .. }) && !err.is_frame_error(),
            "{text}: {err}"
        );
    }
}

// ---- a real video through ffmpeg (needs ../shared/eval) ----

fn eval_dir() -> PathBuf {
    facegate_testkit::eval_dir(env!("CARGO_MANIFEST_DIR"))
}

fn have_ffmpeg() -> bool {
    Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The eval video, or `None` after printing a loud SKIPPED line naming what is missing.
fn eval_video(test: &str) -> Option<PathBuf> {
    let video = eval_dir().join("video/portrait_d9.mp4");
    if !video.is_file() {
        facegate_testkit::skip(&format!("{test}: missing {}", video.display()));
        return None;
    }
    if !have_ffmpeg() {
        facegate_testkit::skip(&format!("{test}: missing ffmpeg on PATH"));
        return None;
    }
    Some(video)
}

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn video_size(video: &Path) -> (u32, u32) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(video)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (w, h) = text.trim().split_once(',').unwrap();
    (w.parse().unwrap(), h.parse().unwrap())
}

#[test]
fn replays_thirty_frames_of_a_real_video() {
    let Some(video) = eval_video("replays_thirty_frames_of_a_real_video") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let y4m = dir.path().join("clip.y4m");
    ffmpeg(&[
        "-i",
        video.to_str().unwrap(),
        "-frames:v",
        "30",
        "-pix_fmt",
        "yuv420p",
        "-f",
        "yuv4mpegpipe",
        y4m.to_str().unwrap(),
    ]);
    let (w, h) = video_size(&video);

    let mut src = open(
        &SourceSpec::parse(y4m.to_str().unwrap()).unwrap(),
        &CaptureOptions::default(),
    )
    .unwrap();
    assert_eq!((src.info().width, src.info().height), (Some(w), Some(h)));
    let fps = src.info().fps.unwrap();
    let mut count = 0u64;
    let mut last_time = None;
    while let Some(frame) = src.next_frame().unwrap() {
        assert_eq!(frame.sequence, count);
        assert_eq!((frame.width(), frame.height()), (w, h));
        if let Some(t) = last_time {
            assert!(frame.timestamp > t, "timestamps increase");
        }
        last_time = Some(frame.timestamp);
        // Not a blank frame: a face video has real contrast.
        let (lo, hi) = frame
            .data()
            .iter()
            .fold((255u8, 0u8), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert!(hi - lo > 100, "frame {count} has range {lo}..{hi}");
        src.recycle(frame);
        count += 1;
    }
    assert_eq!(count, 30);
    let expected = Duration::from_secs_f64(29.0 / fps);
    let last = last_time.unwrap();
    assert!(
        last.abs_diff(expected) < Duration::from_millis(2),
        "{last:?} vs {expected:?}"
    );
}

/// Our BT.601 conversion against ffmpeg's (swscale), on real content: 4:4:4 and grey, where no
/// chroma interpolation is involved, must agree within rounding.
#[test]
fn conversion_agrees_with_ffmpeg() {
    let Some(video) = eval_video("conversion_agrees_with_ffmpeg") else {
        return;
    };
    const MAX_ABS_DIFF: u8 = 3;
    const MAX_MEAN_ABS_DIFF: f64 = 0.75;
    let dir = tempfile::tempdir().unwrap();
    for pix_fmt in ["yuv444p", "gray", "yuv420p"] {
        let y4m = dir.path().join(format!("{pix_fmt}.y4m"));
        let rgb = dir.path().join(format!("{pix_fmt}.rgb"));
        ffmpeg(&[
            "-i",
            video.to_str().unwrap(),
            "-frames:v",
            "3",
            "-pix_fmt",
            pix_fmt,
            "-f",
            "yuv4mpegpipe",
            y4m.to_str().unwrap(),
        ]);
        // Converting from the Y4M (which carries no colour matrix) makes swscale use BT.601.
        ffmpeg(&[
            "-i",
            y4m.to_str().unwrap(),
            "-sws_flags",
            "accurate_rnd+full_chroma_int+bitexact",
            "-pix_fmt",
            "rgb24",
            "-f",
            "rawvideo",
            rgb.to_str().unwrap(),
        ]);
        let reference = fs::read(&rgb).unwrap();
        let mut src = Y4mSource::open(&y4m, 40_000_000).unwrap();
        let mut offset = 0;
        while let Some(frame) = src.next_frame().unwrap() {
            let ours = frame.data();
            let theirs = &reference[offset..offset + ours.len()];
            offset += ours.len();
            let diffs: Vec<u8> = ours
                .iter()
                .zip(theirs)
                .map(|(a, b)| a.abs_diff(*b))
                .collect();
            let max = diffs.iter().copied().max().unwrap();
            let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64;
            eprintln!(
                "{pix_fmt} frame {}: max |diff| {max}, mean {mean:.3}",
                frame.sequence
            );
            if pix_fmt != "yuv420p" {
                assert!(max <= MAX_ABS_DIFF, "{pix_fmt}: max diff {max}");
            }
            assert!(mean <= MAX_MEAN_ABS_DIFF, "{pix_fmt}: mean diff {mean}");
        }
        assert_eq!(offset, reference.len(), "{pix_fmt}: frame count");
    }
}
