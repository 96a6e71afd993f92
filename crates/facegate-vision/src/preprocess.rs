//! Pixel work on the hot path: bilinear resize of a frame region into a planar, normalised
//! tensor, and the inverse-mapped affine warp used for alignment. Callers own every buffer; after
//! warm-up nothing here allocates.
//!
//! Sampling follows OpenCV's `INTER_LINEAR` convention (pixel centres at +0.5), so tensors match
//! what the models were exported and validated with.

use facegate_types::Frame;

use crate::affine::Affine;
use crate::manifest::Colour;

/// An integer region of a frame, in pixels. Always non-empty and inside the frame once built by
/// [`PixelRect::clamped`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelRect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl PixelRect {
    /// The whole frame.
    pub fn full(frame: &Frame) -> Self {
        Self {
            x: 0,
            y: 0,
            w: frame.width(),
            h: frame.height(),
        }
    }

    /// `(x, y, w, h)` in float pixels, truncated like OpenCV's `Rect` and clipped to the frame;
    /// at least 1x1.
    pub fn clamped(x: f32, y: f32, w: f32, h: f32, frame: &Frame) -> Self {
        let fw = frame.width();
        let fh = frame.height();
        let x0 = (x.max(0.0) as u32).min(fw - 1);
        let y0 = (y.max(0.0) as u32).min(fh - 1);
        let w = (w.max(1.0) as u32).clamp(1, fw - x0);
        let h = (h.max(1.0) as u32).clamp(1, fh - y0);
        Self { x: x0, y: y0, w, h }
    }
}

/// Reused tables and row buffers for [`resize_to_planar`].
#[derive(Debug, Default)]
pub struct ResizeScratch {
    /// One horizontal tap pair per output column, indices into the rect's span of pixels.
    xs: Vec<Tap>,
    /// Two source rows resampled horizontally (three planes of `dst_w`, frame channel order),
    /// with the frame row each holds; rows shared by consecutive output rows are reused.
    rows: [HRow; 2],
}

#[derive(Debug, Clone, Copy)]
struct Tap {
    x0: usize,
    x1: usize,
    fx: f32,
}

#[derive(Debug, Default)]
struct HRow {
    src: Option<u32>,
    planes: Vec<f32>,
}

/// Per-channel `(v - mean) * scale`, and which frame channel feeds each output plane.
#[derive(Debug, Clone, Copy)]
pub struct Normalise {
    pub colour: Colour,
    pub mean: f32,
    pub scale: f32,
}

impl From<&crate::manifest::Preprocess> for Normalise {
    fn from(p: &crate::manifest::Preprocess) -> Self {
        Self {
            colour: p.colour,
            mean: p.mean,
            scale: p.scale,
        }
    }
}

impl Normalise {
    fn planes(&self) -> usize {
        if self.colour == Colour::Grey { 1 } else { 3 }
    }

    /// Frame channel (0 = R, 1 = G, 2 = B) feeding output plane `p`.
    fn source_channel(&self, p: usize) -> usize {
        match self.colour {
            Colour::Bgr => 2 - p,
            Colour::Rgb | Colour::Grey => p,
        }
    }
}

/// Source position of output index `d` on an axis resized from `src_len` to `dst` (OpenCV's
/// pixel-centre convention, clamped to the axis): the first tap, the second, and the weight of
/// the second.
#[inline]
fn axis_tap(d: u32, ratio: f32, src_len: u32) -> (u32, u32, f32) {
    let s = ((d as f32 + 0.5) * ratio - 0.5).clamp(0.0, (src_len - 1) as f32);
    let i0 = s as u32;
    (i0, (i0 + 1).min(src_len - 1), s - i0 as f32)
}

/// Resamples one row of pixels (the rect's span) at `taps` into three planes of `taps.len()`
/// floats (R, G, B). Every tap index is below `span.len()` (built that way by
/// [`resize_to_planar`]); the `min` is free and lets the compiler drop the bounds checks.
fn resample_row(span: &[[u8; 3]], taps: &[Tap], out: &mut [f32]) {
    let n = taps.len();
    let (r, rest) = out.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    let Some(last) = span.len().checked_sub(1) else {
        return;
    };
    for (((t, r), g), b) in taps.iter().zip(r).zip(g).zip(b) {
        let p0 = span[t.x0.min(last)].map(f32::from);
        let p1 = span[t.x1.min(last)].map(f32::from);
        *r = p0[0] + (p1[0] - p0[0]) * t.fx;
        *g = p0[1] + (p1[1] - p0[1]) * t.fx;
        *b = p0[2] + (p1[2] - p0[2]) * t.fx;
    }
}

/// Resizes `rect` of `frame` to `dst_w` x `dst_h` with bilinear sampling and writes it to `out`
/// as planar channels (`colour` order, grey = 0.299 R + 0.587 G + 0.114 B) normalised by `norm`.
///
/// Separable: each source row an output row needs is resampled horizontally once into a row
/// buffer (a gather through the column table), kept while the next output row still needs it
/// (upscaling), and the vertical blend with the normalisation runs over whole rows of floats,
/// which the compiler vectorises. The arithmetic per sample is the same as the per-pixel
/// formula (`top + (bot - top) fy` of `a + (b - a) fx`), so the output is bit-identical to it
/// (`tests::resize_matches_the_per_pixel_reference`).
///
/// # Panics
/// If `out` is shorter than `planes * dst_w * dst_h` or `rect` is not inside the frame.
pub fn resize_to_planar(
    frame: &Frame,
    rect: PixelRect,
    dst_w: u32,
    dst_h: u32,
    norm: Normalise,
    scratch: &mut ResizeScratch,
    out: &mut [f32],
) {
    assert!(
        rect.w > 0
            && rect.h > 0
            && rect.x + rect.w <= frame.width()
            && rect.y + rect.h <= frame.height()
    );
    let (w, h) = (dst_w as usize, dst_h as usize);
    let plane = w * h;
    assert!(out.len() >= plane * norm.planes());
    if plane == 0 {
        return;
    }
    let ratio_x = rect.w as f32 / dst_w as f32;
    scratch.xs.clear();
    scratch.xs.extend((0..dst_w).map(|d| {
        let (x0, x1, fx) = axis_tap(d, ratio_x, rect.w);
        Tap {
            x0: x0 as usize,
            x1: x1 as usize,
            fx,
        }
    }));
    for row in &mut scratch.rows {
        row.src = None;
        row.planes.resize(3 * w, 0.0);
    }
    let ratio_y = rect.h as f32 / dst_h as f32;
    let (mean, scale) = (norm.mean, norm.scale);
    let span_of = |y: u32| -> &[[u8; 3]] {
        let row = frame.row(rect.y + y).as_chunks::<3>().0;
        &row[rect.x as usize..(rect.x + rect.w) as usize]
    };
    let chans = [
        norm.source_channel(0),
        norm.source_channel(1),
        norm.source_channel(2),
    ];
    let grey = norm.colour == Colour::Grey;
    for dy in 0..dst_h {
        let (y0, y1, fy) = axis_tap(dy, ratio_y, rect.h);
        // Slot 0 holds row y0, slot 1 row y1; a row the previous output row used moves over.
        let [top, bot] = &mut scratch.rows;
        if top.src != Some(y0) {
            if bot.src == Some(y0) {
                std::mem::swap(top, bot);
            } else {
                resample_row(span_of(y0), &scratch.xs, &mut top.planes);
                top.src = Some(y0);
            }
        }
        if bot.src != Some(y1) {
            resample_row(span_of(y1), &scratch.xs, &mut bot.planes);
            bot.src = Some(y1);
        }
        let offset = dy as usize * w;
        let lerp = |c: usize| {
            let t = &top.planes[c * w..][..w];
            let b = &bot.planes[c * w..][..w];
            t.iter().zip(b).map(move |(&t, &b)| t + (b - t) * fy)
        };
        if grey {
            let dst = &mut out[offset..][..w];
            for (o, ((r, g), b)) in dst.iter_mut().zip(lerp(0).zip(lerp(1)).zip(lerp(2))) {
                *o = (0.299 * r + 0.587 * g + 0.114 * b - mean) * scale;
            }
        } else {
            for (p, &c) in chans.iter().enumerate() {
                let dst = &mut out[p * plane + offset..][..w];
                for (o, v) in dst.iter_mut().zip(lerp(c)) {
                    *o = (v - mean) * scale;
                }
            }
        }
    }
}

/// What an aligned crop holds where it reaches beyond the picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Border {
    /// Black (OpenCV's constant border, what the embedder's reference pipeline does).
    #[default]
    Zero,
    /// The nearest edge pixel repeated (OpenCV's `BORDER_REPLICATE`).
    Replicate,
    /// The picture mirrored about its edge pixel (OpenCV's `BORDER_REFLECT_101`).
    Reflect,
}

impl Border {
    /// The in-picture index for `i` on an axis of `n` pixels; `None` for the zero border.
    #[inline]
    fn index(self, i: i64, n: i64) -> Option<i64> {
        if (0..n).contains(&i) {
            return Some(i);
        }
        match self {
            Border::Zero => None,
            Border::Replicate => Some(i.clamp(0, n - 1)),
            Border::Reflect => {
                if n == 1 {
                    return Some(0);
                }
                let period = 2 * (n - 1);
                let m = i.rem_euclid(period);
                Some(if m < n { m } else { period - m })
            }
        }
    }
}

/// Warps `frame` into a `size` x `size` planar tensor: output pixel `(u, v)` samples the frame
/// at `to_src(u, v)` bilinearly; outside the frame the pixel value is 0 (OpenCV's constant
/// border), then normalised by `norm` (3 planes).
pub fn warp_to_planar(frame: &Frame, to_src: &Affine, size: u32, norm: Normalise, out: &mut [f32]) {
    warp_to_planar_with(frame, to_src, size, norm, Border::Zero, out);
}

/// [`warp_to_planar`] with the given [`Border`] outside the frame.
///
/// When every sample of the output falls inside the frame with its right and lower neighbour
/// (checked once, on the four corners: an affine map's extremes over a square are at its
/// corners), the warp takes its all-inside path (`warp_inside`), which reads both tap pairs of
/// a sample as two 6-byte windows and never consults the border; otherwise every tap goes
/// through the border.
/// Both paths compute each sample with the same arithmetic, so the fast path only changes the
/// time (`tests::warp_matches_the_per_pixel_reference`).
pub fn warp_to_planar_with(
    frame: &Frame,
    to_src: &Affine,
    size: u32,
    norm: Normalise,
    border_mode: Border,
    out: &mut [f32],
) {
    let plane = (size * size) as usize;
    assert!(out.len() >= plane * 3);
    if size == 0 {
        return;
    }
    if maps_inside(frame, to_src, size) {
        warp_inside(frame, to_src, size, norm, out);
        return;
    }
    let (w, h) = (frame.width() as i64, frame.height() as i64);
    let data = frame.data();
    let stride = frame.stride();
    let chans = [
        norm.source_channel(0),
        norm.source_channel(1),
        norm.source_channel(2),
    ];
    let m = to_src.0;
    let border = (0.0 - norm.mean) * norm.scale;
    let zero = border_mode == Border::Zero;
    for v in 0..size as usize {
        // Source position of the centre of (0, v), then step by the first column per u.
        let vy = v as f32;
        let mut sx = m[1] * vy + m[2];
        let mut sy = m[4] * vy + m[5];
        for u in 0..size as usize {
            let idx = v * size as usize + u;
            let x0 = sx.floor();
            let y0 = sy.floor();
            let (fx, fy) = (sx - x0, sy - y0);
            let (xi, yi) = (x0 as i64, y0 as i64);
            if !zero || (xi >= -1 && yi >= -1 && xi < w && yi < h) {
                // Four taps, each 0 when outside the frame (constant border) or taken from
                // inside it (replicate, reflect).
                let tap = |x: i64, y: i64, c: usize| -> f32 {
                    match (border_mode.index(x, w), border_mode.index(y, h)) {
                        (Some(x), Some(y)) => {
                            f32::from(data[y as usize * stride + x as usize * 3 + c])
                        }
                        _ => 0.0,
                    }
                };
                for (p, &c) in chans.iter().enumerate() {
                    let top = tap(xi, yi, c) * (1.0 - fx) + tap(xi + 1, yi, c) * fx;
                    let bot = tap(xi, yi + 1, c) * (1.0 - fx) + tap(xi + 1, yi + 1, c) * fx;
                    out[p * plane + idx] = ((top * (1.0 - fy) + bot * fy) - norm.mean) * norm.scale;
                }
            } else {
                for p in 0..3 {
                    out[p * plane + idx] = border;
                }
            }
            sx += m[0];
            sy += m[3];
        }
    }
}

/// Whether every output sample of a `size` x `size` warp by `to_src` has all four taps inside
/// `frame`: `0 <= floor(sx)` and `floor(sx) + 1 <= width - 1` (likewise for y) at the four
/// corners, with a margin for the rounding of the warp's running f32 sums (at most one rounding
/// of a value below the largest term per step, `size + 3` steps) so the sums the warp actually computes
/// stay inside too. Not finite (a degenerate map) means no.
fn maps_inside(frame: &Frame, to_src: &Affine, size: u32) -> bool {
    let m = to_src.0.map(f64::from);
    let n = f64::from(size - 1);
    let (w, h) = (f64::from(frame.width()), f64::from(frame.height()));
    let corners = [(0.0, 0.0), (n, 0.0), (0.0, n), (n, n)];
    let xs = corners.map(|(u, v)| m[0] * u + m[1] * v + m[2]);
    let ys = corners.map(|(u, v)| m[3] * u + m[4] * v + m[5]);
    // Every partial sum and product the warp forms is at most this large.
    let terms = [m[0] * n, m[1] * n, m[2], m[3] * n, m[4] * n, m[5]];
    let biggest = xs
        .iter()
        .chain(&ys)
        .chain(&terms)
        .fold(1.0_f64, |a, &b| a.max(b.abs()));
    let margin = (f64::from(size) + 3.0) * biggest * f64::from(f32::EPSILON) + 1e-3;
    let within = |s: f64, len: f64| s >= margin && s < len - 1.0 - margin;
    xs.iter().all(|&x| within(x, w)) && ys.iter().all(|&y| within(y, h))
}

/// The warp when [`maps_inside`] holds: no border test and no border lookup per tap. Each
/// sample reads its two tap pairs as 6-byte windows of two rows (one slice check each, which
/// `maps_inside` guarantees passes) and writes three planes through row iterators.
fn warp_inside(frame: &Frame, to_src: &Affine, size: u32, norm: Normalise, out: &mut [f32]) {
    let n = size as usize;
    let data = frame.data();
    let stride = frame.stride();
    let m = to_src.0;
    let (mean, scale) = (norm.mean, norm.scale);
    let chans = [
        norm.source_channel(0),
        norm.source_channel(1),
        norm.source_channel(2),
    ];
    let (p0, rest) = out.split_at_mut(n * n);
    let (p1, rest) = rest.split_at_mut(n * n);
    let p2 = &mut rest[..n * n];
    let rows = p0
        .chunks_exact_mut(n)
        .zip(p1.chunks_exact_mut(n))
        .zip(p2.chunks_exact_mut(n));
    for (v, ((o0, o1), o2)) in rows.enumerate() {
        let vy = v as f32;
        let mut sx = m[1] * vy + m[2];
        let mut sy = m[4] * vy + m[5];
        for ((o0, o1), o2) in o0.iter_mut().zip(o1.iter_mut()).zip(o2.iter_mut()) {
            let x0 = sx.floor();
            let y0 = sy.floor();
            let (fx, fy) = (sx - x0, sy - y0);
            let at = y0 as usize * stride + x0 as usize * 3;
            let top: [u8; 6] = data[at..at + 6].try_into().unwrap_or([0; 6]);
            let bot: [u8; 6] = data[at + stride..at + stride + 6]
                .try_into()
                .unwrap_or([0; 6]);
            let sample = |c: usize| -> f32 {
                let t = f32::from(top[c]) * (1.0 - fx) + f32::from(top[c + 3]) * fx;
                let b = f32::from(bot[c]) * (1.0 - fx) + f32::from(bot[c + 3]) * fx;
                ((t * (1.0 - fy) + b * fy) - mean) * scale
            };
            *o0 = sample(chans[0]);
            *o1 = sample(chans[1]);
            *o2 = sample(chans[2]);
            sx += m[0];
            sy += m[3];
        }
    }
}

/// Mirrors each `size` x `size` plane of `src` left to right into `dst`.
pub fn mirror_planes(src: &[f32], size: usize, dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    for (s_row, d_row) in src.chunks_exact(size).zip(dst.chunks_exact_mut(size)) {
        for (d, s) in d_row.iter_mut().zip(s_row.iter().rev()) {
            *d = *s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The straightforward per-pixel resize (what `resize_to_planar` was before it became
    /// separable): the property tests hold the fast kernel to it.
    fn reference_resize(
        frame: &Frame,
        rect: PixelRect,
        dst_w: u32,
        dst_h: u32,
        norm: Normalise,
        out: &mut [f32],
    ) {
        let plane = (dst_w * dst_h) as usize;
        let ratio_x = rect.w as f32 / dst_w as f32;
        let ratio_y = rect.h as f32 / dst_h as f32;
        let px = |x: u32, y: u32, c: usize| -> f32 {
            f32::from(frame.row(rect.y + y)[(rect.x + x) as usize * 3 + c])
        };
        for dy in 0..dst_h {
            let (y0, y1, fy) = axis_tap(dy, ratio_y, rect.h);
            for dx in 0..dst_w {
                let (x0, x1, fx) = axis_tap(dx, ratio_x, rect.w);
                let sample = |c: usize| -> f32 {
                    let top = px(x0, y0, c) + (px(x1, y0, c) - px(x0, y0, c)) * fx;
                    let bot = px(x0, y1, c) + (px(x1, y1, c) - px(x0, y1, c)) * fx;
                    top + (bot - top) * fy
                };
                let i = (dy * dst_w + dx) as usize;
                if norm.colour == Colour::Grey {
                    let g = 0.299 * sample(0) + 0.587 * sample(1) + 0.114 * sample(2);
                    out[i] = (g - norm.mean) * norm.scale;
                } else {
                    for p in 0..3 {
                        out[p * plane + i] =
                            (sample(norm.source_channel(p)) - norm.mean) * norm.scale;
                    }
                }
            }
        }
    }

    /// The straightforward per-pixel warp: every tap through [`Border::index`].
    fn reference_warp(
        frame: &Frame,
        to_src: &Affine,
        size: u32,
        norm: Normalise,
        border: Border,
        out: &mut [f32],
    ) {
        let n = size as usize;
        let (w, h) = (i64::from(frame.width()), i64::from(frame.height()));
        let m = to_src.0;
        for v in 0..n {
            let mut sx = m[1] * v as f32 + m[2];
            let mut sy = m[4] * v as f32 + m[5];
            for u in 0..n {
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                let (xi, yi) = (x0 as i64, y0 as i64);
                let tap = |x: i64, y: i64, c: usize| -> f32 {
                    match (border.index(x, w), border.index(y, h)) {
                        (Some(x), Some(y)) => f32::from(frame.row(y as u32)[x as usize * 3 + c]),
                        _ => 0.0,
                    }
                };
                for p in 0..3 {
                    let c = norm.source_channel(p);
                    let top = tap(xi, yi, c) * (1.0 - fx) + tap(xi + 1, yi, c) * fx;
                    let bot = tap(xi, yi + 1, c) * (1.0 - fx) + tap(xi + 1, yi + 1, c) * fx;
                    out[p * n * n + v * n + u] =
                        ((top * (1.0 - fy) + bot * fy) - norm.mean) * norm.scale;
                }
                sx += m[0];
                sy += m[3];
            }
        }
    }

    /// How far the fast kernels may differ from the references: not at all. They do the same
    /// f32 operations in the same order per sample, so any difference is a bug (a wrong tap, a
    /// stale row buffer), not rounding.
    const KERNEL_TOLERANCE: f32 = 0.0;

    fn assert_close(got: &[f32], want: &[f32]) -> Result<(), TestCaseError> {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            prop_assert!((g - w).abs() <= KERNEL_TOLERANCE, "index {i}: {g} vs {w}");
        }
        Ok(())
    }

    /// A frame of random pixels with `pad` bytes of padding after each row.
    fn random_frame() -> impl Strategy<Value = Frame> {
        (1u32..40, 1u32..40, 0usize..5).prop_flat_map(|(w, h, pad)| {
            let stride = w as usize * 3 + pad;
            let len = stride * (h as usize - 1) + w as usize * 3;
            proptest::collection::vec(any::<u8>(), len)
                .prop_map(move |data| Frame::new(w, h, stride, data).unwrap())
        })
    }

    fn random_norm() -> impl Strategy<Value = Normalise> {
        (
            prop_oneof![Just(Colour::Rgb), Just(Colour::Bgr), Just(Colour::Grey)],
            prop_oneof![Just(0.0f32), Just(127.0), 0.0f32..255.0],
            prop_oneof![Just(1.0f32), Just(1.0 / 128.0), 0.001f32..2.0],
        )
            .prop_map(|(colour, mean, scale)| Normalise {
                colour,
                mean,
                scale,
            })
    }

    fn random_border() -> impl Strategy<Value = Border> {
        prop_oneof![
            Just(Border::Zero),
            Just(Border::Replicate),
            Just(Border::Reflect)
        ]
    }

    proptest! {
        #[test]
        fn resize_matches_the_per_pixel_reference(
            frame in random_frame(),
            other in random_frame(),
            rect in (0.0f32..1.0, 0.0f32..1.0, 0.0f32..1.2, 0.0f32..1.2),
            dst in (1u32..48, 1u32..48),
            norm in random_norm(),
        ) {
            let (fw, fh) = (frame.width() as f32, frame.height() as f32);
            let rect = PixelRect::clamped(rect.0 * fw, rect.1 * fh, rect.2 * fw, rect.3 * fh, &frame);
            let len = (dst.0 * dst.1) as usize * norm.planes();
            let (mut got, mut want) = (vec![f32::NAN; len], vec![0.0; len]);
            // One scratch for two frames: nothing may carry over from the first call.
            let mut scratch = ResizeScratch::default();
            resize_to_planar(&other, PixelRect::full(&other), dst.0, dst.1, norm, &mut scratch, &mut got);
            resize_to_planar(&frame, rect, dst.0, dst.1, norm, &mut scratch, &mut got);
            reference_resize(&frame, rect, dst.0, dst.1, norm, &mut want);
            assert_close(&got, &want)?;
        }

        #[test]
        fn warp_matches_the_per_pixel_reference(
            frame in random_frame(),
            size in 1u32..40,
            angle in -3.2f32..3.2,
            scale in 0.05f32..3.0,
            centre in (-0.3f32..1.3, -0.3f32..1.3),
            norm in random_norm(),
            border in random_border(),
        ) {
            // A similarity about the output's centre placed anywhere from well inside the frame
            // to across and beyond its edges.
            let (c, s) = (angle.cos() * scale, angle.sin() * scale);
            let half = size as f32 / 2.0;
            let (cx, cy) = (centre.0 * frame.width() as f32, centre.1 * frame.height() as f32);
            let to_src = Affine([c, -s, cx - c * half + s * half, s, c, cy - s * half - c * half]);
            let len = (size * size * 3) as usize;
            let (mut got, mut want) = (vec![f32::NAN; len], vec![0.0; len]);
            warp_to_planar_with(&frame, &to_src, size, norm, border, &mut got);
            reference_warp(&frame, &to_src, size, norm, border, &mut want);
            assert_close(&got, &want)?;
        }

        #[test]
        fn warp_touching_the_edges_matches_the_reference(
            frame in random_frame(),
            shift in (-2i32..3, -2i32..3),
            grow in -2i32..3,
            frac in prop_oneof![Just(0.0f32), Just(0.5), Just(-1e-4), Just(1e-4), Just(0.9999)],
            norm in random_norm(),
            border in random_border(),
        ) {
            // Axis-aligned unit-scale warps whose corners land on, just inside or just outside
            // the first and last columns and rows.
            let size = (frame.width().min(frame.height()) as i32 + grow).max(1) as u32;
            let to_src = Affine([1.0, 0.0, shift.0 as f32 + frac, 0.0, 1.0, shift.1 as f32 + frac]);
            let len = (size * size * 3) as usize;
            let (mut got, mut want) = (vec![f32::NAN; len], vec![0.0; len]);
            warp_to_planar_with(&frame, &to_src, size, norm, border, &mut got);
            reference_warp(&frame, &to_src, size, norm, border, &mut want);
            assert_close(&got, &want)?;
        }
    }

    #[test]
    fn the_fast_warp_path_is_taken_only_when_all_taps_are_inside() {
        let f = gradient(10, 8);
        let shift = |x: f32, y: f32| Affine([1.0, 0.0, x, 0.0, 1.0, y]);
        // 7x7 from (0.5, 0.5): the last sample is at 6.5, its lower tap on row 7 of 0..8.
        assert!(maps_inside(&f, &shift(0.5, 0.5), 7));
        assert!(maps_inside(&f, &shift(2.5, 0.5), 6));
        // The last row's lower tap would be row 8.
        assert!(!maps_inside(&f, &shift(0.5, 0.5), 8));
        assert!(!maps_inside(&f, &shift(-0.01, 0.5), 4));
        // Exactly on the first column: within the rounding margin, so the border path (which
        // gives the same values) takes it.
        assert!(!maps_inside(&f, &shift(0.0, 0.5), 4));
        assert!(!maps_inside(
            &f,
            &Affine([f32::NAN, 0.0, 1.0, 0.0, 1.0, 1.0]),
            2
        ));
        // A half-size face crop well inside a VGA frame.
        let vga = Frame::from_rgb8(640, 480, vec![0; 640 * 480 * 3]).unwrap();
        let (c, s) = (0.9f32 * 0.97, 0.9f32 * 0.24);
        assert!(maps_inside(&vga, &Affine([c, -s, 300.0, s, c, 150.0]), 112));
    }

    fn gradient(w: u32, h: u32) -> Frame {
        let mut data = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&[(x * 10) as u8, (y * 10) as u8, 200]);
            }
        }
        Frame::from_rgb8(w, h, data).unwrap()
    }

    const RAW_RGB: Normalise = Normalise {
        colour: Colour::Rgb,
        mean: 0.0,
        scale: 1.0,
    };

    #[test]
    fn identity_resize_copies_pixels_into_planes() {
        let f = gradient(4, 3);
        let mut out = vec![0.0; 4 * 3 * 3];
        resize_to_planar(
            &f,
            PixelRect::full(&f),
            4,
            3,
            RAW_RGB,
            &mut ResizeScratch::default(),
            &mut out,
        );
        assert_eq!(out[0..4], [0.0, 10.0, 20.0, 30.0]); // R plane row 0
        assert_eq!(out[12 + 8], 20.0); // G plane, row 2
        assert!(out[24..].iter().all(|v| *v == 200.0)); // B plane
    }

    #[test]
    fn bgr_swaps_planes_and_normalises() {
        let f = gradient(2, 2);
        let mut out = vec![0.0; 12];
        let norm = Normalise {
            colour: Colour::Bgr,
            mean: 127.0,
            scale: 1.0 / 128.0,
        };
        resize_to_planar(
            &f,
            PixelRect::full(&f),
            2,
            2,
            norm,
            &mut ResizeScratch::default(),
            &mut out,
        );
        assert!((out[0] - (200.0 - 127.0) / 128.0).abs() < 1e-6); // B first
        assert!((out[8 + 1] - (10.0 - 127.0) / 128.0).abs() < 1e-6); // R last, x = 1
    }

    #[test]
    fn downscale_by_two_averages_neighbours() {
        let f = gradient(4, 4);
        let mut out = vec![0.0; 2 * 2 * 3];
        resize_to_planar(
            &f,
            PixelRect::full(&f),
            2,
            2,
            RAW_RGB,
            &mut ResizeScratch::default(),
            &mut out,
        );
        // Output centre 0.5 maps to source 0.5: mean of columns 0 and 1 (0 and 10).
        assert!((out[0] - 5.0).abs() < 1e-4, "{}", out[0]);
        assert!((out[1] - 25.0).abs() < 1e-4, "{}", out[1]);
    }

    #[test]
    fn grey_uses_bt601_weights_on_a_crop() {
        let f = Frame::from_rgb8(3, 1, vec![0, 0, 0, 255, 0, 0, 0, 0, 0]).unwrap();
        let mut out = vec![0.0; 1];
        let norm = Normalise {
            colour: Colour::Grey,
            mean: 0.0,
            scale: 1.0,
        };
        let rect = PixelRect {
            x: 1,
            y: 0,
            w: 1,
            h: 1,
        };
        resize_to_planar(
            &f,
            rect,
            1,
            1,
            norm,
            &mut ResizeScratch::default(),
            &mut out,
        );
        assert!((out[0] - 0.299 * 255.0).abs() < 1e-3);
    }

    #[test]
    fn clamped_rect_stays_inside_the_frame() {
        let f = gradient(10, 10);
        assert_eq!(
            PixelRect::clamped(-5.0, 8.0, 50.0, 50.0, &f),
            PixelRect {
                x: 0,
                y: 8,
                w: 10,
                h: 2
            }
        );
        assert_eq!(
            PixelRect::clamped(20.0, 20.0, 0.0, 0.0, &f),
            PixelRect {
                x: 9,
                y: 9,
                w: 1,
                h: 1
            }
        );
    }

    #[test]
    fn identity_warp_copies_and_fills_border_with_zero() {
        let f = gradient(3, 3);
        let mut out = vec![0.0; 4 * 4 * 3];
        warp_to_planar(
            &f,
            &Affine([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
            4,
            RAW_RGB,
            &mut out,
        );
        assert_eq!(out[1], 10.0);
        assert_eq!(out[4 + 2], 20.0);
        assert_eq!(out[3], 0.0); // column 3 is outside: border 0
        assert_eq!(out[32 + 15], 0.0); // B plane, corner outside
    }

    #[test]
    fn borders_outside_the_frame() {
        // Indices on an axis of 3 pixels, from -3 to 5.
        let on = |b: Border| (-3..=5).map(|i| b.index(i, 3)).collect::<Vec<_>>();
        assert_eq!(
            on(Border::Replicate),
            [0, 0, 0, 0, 1, 2, 2, 2, 2].map(Some).to_vec()
        );
        assert_eq!(
            on(Border::Reflect),
            [1, 2, 1, 0, 1, 2, 1, 0, 1].map(Some).to_vec()
        );
        assert_eq!(on(Border::Zero)[..3], [None, None, None]);
        assert_eq!(Border::Reflect.index(-4, 1), Some(0));
        // A warp one pixel to the left of a 3x3 gradient: column 0 repeats, or mirrors column 1.
        let f = gradient(3, 3);
        let shifted = Affine([1.0, 0.0, -1.0, 0.0, 1.0, 0.0]);
        let mut out = vec![0.0; 3 * 3 * 3];
        warp_to_planar_with(&f, &shifted, 3, RAW_RGB, Border::Replicate, &mut out);
        assert_eq!(
            (out[0], out[1]),
            (f32::from(f.row(0)[0]), f32::from(f.row(0)[0]))
        );
        warp_to_planar_with(&f, &shifted, 3, RAW_RGB, Border::Reflect, &mut out);
        assert_eq!(out[0], f32::from(f.row(0)[3]));
        warp_to_planar_with(&f, &shifted, 3, RAW_RGB, Border::Zero, &mut out);
        assert_eq!(out[0], 0.0);
    }

    #[test]
    fn mirror_reverses_rows() {
        let src = [1.0, 2.0, 3.0, 4.0];
        let mut dst = [0.0; 4];
        mirror_planes(&src, 2, &mut dst);
        assert_eq!(dst, [2.0, 1.0, 4.0, 3.0]);
    }
}
