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

/// Reused index tables for [`resize_to_planar`].
#[derive(Debug, Default)]
pub struct ResizeScratch {
    xs: Vec<(usize, usize, f32)>,
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

fn axis_table(dst: u32, src_start: u32, src_len: u32, out: &mut Vec<(usize, usize, f32)>) {
    out.clear();
    let ratio = src_len as f32 / dst as f32;
    let max = (src_len - 1) as f32;
    for d in 0..dst {
        let s = ((d as f32 + 0.5) * ratio - 0.5).clamp(0.0, max);
        let i0 = s as u32;
        let i1 = (i0 + 1).min(src_len - 1);
        out.push((
            (src_start + i0) as usize,
            (src_start + i1) as usize,
            s - i0 as f32,
        ));
    }
}

/// Resizes `rect` of `frame` to `dst_w` x `dst_h` with bilinear sampling and writes it to `out`
/// as planar channels (`colour` order, grey = 0.299 R + 0.587 G + 0.114 B) normalised by `norm`.
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
    let plane = (dst_w * dst_h) as usize;
    assert!(out.len() >= plane * norm.planes());
    axis_table(dst_w, rect.x, rect.w, &mut scratch.xs);
    let ratio_y = rect.h as f32 / dst_h as f32;
    let max_y = (rect.h - 1) as f32;
    let data = frame.data();
    let stride = frame.stride();
    let (mean, scale) = (norm.mean, norm.scale);
    let chans = [
        norm.source_channel(0),
        norm.source_channel(1),
        norm.source_channel(2),
    ];
    for dy in 0..dst_h as usize {
        let sy = ((dy as f32 + 0.5) * ratio_y - 0.5).clamp(0.0, max_y);
        let y0 = sy as u32;
        let y1 = (y0 + 1).min(rect.h - 1);
        let fy = sy - y0 as f32;
        let r0 = &data[(rect.y + y0) as usize * stride..][..frame.width() as usize * 3];
        let r1 = &data[(rect.y + y1) as usize * stride..][..frame.width() as usize * 3];
        let row_out = dy * dst_w as usize;
        for (dx, &(x0, x1, fx)) in scratch.xs.iter().enumerate() {
            let (o0, o1) = (x0 * 3, x1 * 3);
            // SAFETY: the x table holds columns inside the frame (built from a rect checked above)
            // and r0/r1 are whole rows of `3 * width` bytes, so o0 + 2 and o1 + 2 are in bounds.
            let px = |r: &[u8], o: usize, c: usize| -> f32 {
                debug_assert!(o + c < r.len());
                f32::from(unsafe { *r.get_unchecked(o + c) })
            };
            let sample = |c: usize| -> f32 {
                let top = px(r0, o0, c) + (px(r0, o1, c) - px(r0, o0, c)) * fx;
                let bot = px(r1, o0, c) + (px(r1, o1, c) - px(r1, o0, c)) * fx;
                top + (bot - top) * fy
            };
            if norm.colour == Colour::Grey {
                let g = 0.299 * sample(0) + 0.587 * sample(1) + 0.114 * sample(2);
                out[row_out + dx] = (g - mean) * scale;
            } else {
                for (p, &c) in chans.iter().enumerate() {
                    out[p * plane + row_out + dx] = (sample(c) - mean) * scale;
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
