//! The pre-processing kernels as they were before issue 12 (per-pixel bilinear resize with
//! unchecked reads; the alignment warp with a border test and border lookup on every tap), kept
//! verbatim so `benches/benches/preprocess.rs` measures the old and the new implementation in
//! one run and checks that they agree. Not used by facegate itself.

use facegate_types::Frame;
use facegate_vision::affine::Affine;
use facegate_vision::manifest::Colour;
use facegate_vision::preprocess::{Border, Normalise, PixelRect};

fn source_channel(norm: &Normalise, p: usize) -> usize {
    match norm.colour {
        Colour::Bgr => 2 - p,
        Colour::Rgb | Colour::Grey => p,
    }
}

fn border_index(border: Border, i: i64, n: i64) -> Option<i64> {
    if (0..n).contains(&i) {
        return Some(i);
    }
    match border {
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

/// The old resize's reused x table.
#[derive(Debug, Default)]
pub struct OldResizeScratch {
    xs: Vec<(usize, usize, f32)>,
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

/// The old `resize_to_planar`.
pub fn resize_to_planar(
    frame: &Frame,
    rect: PixelRect,
    dst_w: u32,
    dst_h: u32,
    norm: Normalise,
    scratch: &mut OldResizeScratch,
    out: &mut [f32],
) {
    assert!(
        rect.w > 0
            && rect.h > 0
            && rect.x + rect.w <= frame.width()
            && rect.y + rect.h <= frame.height()
    );
    let planes = if norm.colour == Colour::Grey { 1 } else { 3 };
    let plane = (dst_w * dst_h) as usize;
    assert!(out.len() >= plane * planes);
    axis_table(dst_w, rect.x, rect.w, &mut scratch.xs);
    let ratio_y = rect.h as f32 / dst_h as f32;
    let max_y = (rect.h - 1) as f32;
    let data = frame.data();
    let stride = frame.stride();
    let (mean, scale) = (norm.mean, norm.scale);
    let chans = [
        source_channel(&norm, 0),
        source_channel(&norm, 1),
        source_channel(&norm, 2),
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

/// The old `warp_to_planar_with`.
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
        source_channel(&norm, 0),
        source_channel(&norm, 1),
        source_channel(&norm, 2),
    ];
    let m = to_src.0;
    let border = (0.0 - norm.mean) * norm.scale;
    let zero = border_mode == Border::Zero;
    for v in 0..size as usize {
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
                let tap = |x: i64, y: i64, c: usize| -> f32 {
                    match (
                        border_index(border_mode, x, w),
                        border_index(border_mode, y, h),
                    ) {
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
