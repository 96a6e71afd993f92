//! Pre-processing at the gate's resolutions: the bilinear resize of a frame (detector input) or a
//! face box (landmarks, liveness) into a normalised planar tensor, and the alignment warp to
//! 112x112, each next to the implementation it replaced (`facegate_benches::preprocess_old`),
//! measured in the same run. Frames are random pixels (the kernels do not branch on values).
//!
//! `cargo bench -p facegate-benches --bench preprocess` (about two minutes). After criterion's
//! report it checks that old and new give the same tensors and prints, per case, the medians of
//! old and new over interleaved calls (old, new, old, new, ...) and their ratio.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use facegate_benches::preprocess_old::{self, OldResizeScratch};
use facegate_store::quantile;
use facegate_types::Frame;
use facegate_vision::affine::Affine;
use facegate_vision::manifest::Colour;
use facegate_vision::preprocess::{
    Border, Normalise, PixelRect, ResizeScratch, resize_to_planar, warp_to_planar_with,
};

/// A frame of deterministic pseudo-random pixels.
fn noise(w: u32, h: u32) -> Frame {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let data = (0..w as usize * h as usize * 3)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect();
    Frame::from_rgb8(w, h, data).unwrap()
}

/// One resize at a gate resolution: the frame, the region and the model input.
struct ResizeCase {
    name: &'static str,
    frame: (u32, u32),
    rect: Option<PixelRect>,
    dst: (u32, u32),
    norm: Normalise,
}

const DETECTOR: Normalise = Normalise {
    colour: Colour::Rgb,
    mean: 127.0,
    scale: 1.0 / 128.0,
};
const LANDMARKS: Normalise = Normalise {
    colour: Colour::Grey,
    mean: 0.0,
    scale: 1.0 / 256.0,
};
const LIVENESS: Normalise = Normalise {
    colour: Colour::Bgr,
    mean: 0.0,
    scale: 1.0,
};
const EMBEDDER: Normalise = Normalise {
    colour: Colour::Bgr,
    mean: 127.0,
    scale: 1.0 / 128.0,
};

fn resize_cases() -> Vec<ResizeCase> {
    // A face of about 180 px in a 640x480 frame, the box the crop models see (enlarged crops).
    let face = PixelRect {
        x: 230,
        y: 120,
        w: 180,
        h: 180,
    };
    vec![
        ResizeCase {
            name: "640x480->320x240_rgb",
            frame: (640, 480),
            rect: None,
            dst: (320, 240),
            norm: DETECTOR,
        },
        ResizeCase {
            name: "1280x720->320x240_rgb",
            frame: (1280, 720),
            rect: None,
            dst: (320, 240),
            norm: DETECTOR,
        },
        ResizeCase {
            name: "1920x1080->320x240_rgb",
            frame: (1920, 1080),
            rect: None,
            dst: (320, 240),
            norm: DETECTOR,
        },
        ResizeCase {
            name: "face180->64x64_grey",
            frame: (640, 480),
            rect: Some(face),
            dst: (64, 64),
            norm: LANDMARKS,
        },
        ResizeCase {
            name: "face180->128x128_bgr",
            frame: (640, 480),
            rect: Some(face),
            dst: (128, 128),
            norm: LIVENESS,
        },
        ResizeCase {
            name: "face80->128x128_bgr",
            frame: (640, 480),
            rect: Some(PixelRect {
                x: 300,
                y: 200,
                w: 80,
                h: 80,
            }),
            dst: (128, 128),
            norm: LIVENESS,
        },
    ]
}

/// One alignment warp: a rotated similarity onto a 112x112 crop.
struct WarpCase {
    name: &'static str,
    frame: (u32, u32),
    to_src: Affine,
}

/// The inverse similarity of a face `side` px wide centred at `(cx, cy)`, rotated by `angle`.
fn face_warp(cx: f32, cy: f32, side: f32, angle: f32) -> Affine {
    let s = side / 112.0;
    let (c, n) = (angle.cos() * s, angle.sin() * s);
    Affine([
        c,
        -n,
        cx - c * 56.0 + n * 56.0,
        n,
        c,
        cy - n * 56.0 - c * 56.0,
    ])
}

fn warp_cases() -> Vec<WarpCase> {
    vec![
        WarpCase {
            name: "640x480_face150_inside->112",
            frame: (640, 480),
            to_src: face_warp(320.0, 240.0, 150.0, 0.2),
        },
        WarpCase {
            name: "1920x1080_face300_inside->112",
            frame: (1920, 1080),
            to_src: face_warp(960.0, 540.0, 300.0, -0.15),
        },
        // A face cut by the left edge: the border path, for both.
        WarpCase {
            name: "640x480_face150_edge->112",
            frame: (640, 480),
            to_src: face_warp(40.0, 240.0, 150.0, 0.2),
        },
    ]
}

/// Medians (ms) of old and new over `rounds` interleaved calls.
fn interleaved(rounds: usize, mut old: impl FnMut(), mut new: impl FnMut()) -> (f64, f64) {
    let (mut a, mut b) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for _ in 0..rounds {
        let t = Instant::now();
        old();
        a.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        new();
        b.push(t.elapsed().as_secs_f64() * 1e3);
    }
    (quantile(&a, 0.5), quantile(&b, 0.5))
}

fn main() {
    let resizes = resize_cases();
    let warps = warp_cases();
    let frames: Vec<Frame> = resizes
        .iter()
        .map(|c| c.frame)
        .chain(warps.iter().map(|c| c.frame))
        .map(|(w, h)| noise(w, h))
        .collect();
    let (resize_frames, warp_frames) = frames.split_at(resizes.len());

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("resize_to_planar");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for (case, frame) in resizes.iter().zip(resize_frames) {
        let rect = case.rect.unwrap_or(PixelRect::full(frame));
        let mut out = vec![0.0; (case.dst.0 * case.dst.1 * 3) as usize];
        g.throughput(Throughput::Elements(u64::from(case.dst.0 * case.dst.1)));
        let mut old = OldResizeScratch::default();
        g.bench_function(BenchmarkId::new("old", case.name), |b| {
            b.iter(|| {
                preprocess_old::resize_to_planar(
                    frame, rect, case.dst.0, case.dst.1, case.norm, &mut old, &mut out,
                );
                black_box(&out);
            })
        });
        let mut new = ResizeScratch::default();
        g.bench_function(BenchmarkId::new("new", case.name), |b| {
            b.iter(|| {
                resize_to_planar(
                    frame, rect, case.dst.0, case.dst.1, case.norm, &mut new, &mut out,
                );
                black_box(&out);
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("warp_to_planar");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Elements(112 * 112));
    for (case, frame) in warps.iter().zip(warp_frames) {
        let mut out = vec![0.0; 3 * 112 * 112];
        g.bench_function(BenchmarkId::new("old", case.name), |b| {
            b.iter(|| {
                preprocess_old::warp_to_planar_with(
                    frame,
                    &case.to_src,
                    112,
                    EMBEDDER,
                    Border::Zero,
                    &mut out,
                );
                black_box(&out);
            })
        });
        g.bench_function(BenchmarkId::new("new", case.name), |b| {
            b.iter(|| {
                warp_to_planar_with(frame, &case.to_src, 112, EMBEDDER, Border::Zero, &mut out);
                black_box(&out);
            })
        });
    }
    g.finish();
    c.final_summary();

    println!("\nold vs new, medians over 300 interleaved calls (same tensors checked first):");
    for (case, frame) in resizes.iter().zip(resize_frames) {
        let rect = case.rect.unwrap_or(PixelRect::full(frame));
        let len = (case.dst.0 * case.dst.1 * 3) as usize;
        let (mut a, mut b) = (vec![0.0; len], vec![0.0; len]);
        let (mut so, mut sn) = (OldResizeScratch::default(), ResizeScratch::default());
        let (w, h) = case.dst;
        let mut old =
            || preprocess_old::resize_to_planar(frame, rect, w, h, case.norm, &mut so, &mut a);
        let mut new = || resize_to_planar(frame, rect, w, h, case.norm, &mut sn, &mut b);
        old();
        new();
        let (to, tn) = interleaved(300, old, new);
        assert_eq!(a, b, "{}: old and new resize differ", case.name);
        report("resize", case.name, to, tn);
    }
    for (case, frame) in warps.iter().zip(warp_frames) {
        let len = 3 * 112 * 112;
        let (mut a, mut b) = (vec![0.0; len], vec![0.0; len]);
        let m = case.to_src;
        let old =
            || preprocess_old::warp_to_planar_with(frame, &m, 112, EMBEDDER, Border::Zero, &mut a);
        let new = || warp_to_planar_with(frame, &m, 112, EMBEDDER, Border::Zero, &mut b);
        let (to, tn) = interleaved(300, old, new);
        assert_eq!(a, b, "{}: old and new warp differ", case.name);
        report("warp", case.name, to, tn);
    }
}

fn report(kind: &str, name: &str, old_ms: f64, new_ms: f64) {
    println!(
        "  {kind:<6} {name:<32} old {old_ms:>8.4} ms  new {new_ms:>8.4} ms  new/old {:>5.2}",
        new_ms / old_ms
    );
}
