//! Separable image resampling that reproduces Pillow's `Image.resize` on 8-bit RGB images.
//!
//! transformers' CLIP image processor resizes with Pillow, so matching its pixel values means
//! matching Pillow's arithmetic: per-output-pixel filter weights computed in double precision
//! with the filter support widened by the scale factor when downscaling (antialiasing),
//! weights normalised to sum 1 and then quantised to fixed point with 22 fractional bits,
//! a horizontal pass first and a vertical pass second, each rounding and clamping back to
//! 8 bits (the vertical pass first when the height shrinks much more than the width, as
//! Pillow 13 does). Nearest-neighbour sampling takes the source pixel under each output pixel's centre.

use std::f64::consts::PI;
use std::ops::Range;

/// Fractional bits of the fixed-point weights (32 bits − 8 bits of pixel − 2 guard bits).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// A resampling filter, numbered as Pillow and `preprocessor_config.json` number them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// 0: nearest neighbour.
    Nearest,
    /// 1: Lanczos (a = 3).
    Lanczos,
    /// 2: bilinear (triangle).
    Bilinear,
    /// 3: bicubic (Keys, a = −0.5), CLIP's default.
    Bicubic,
    /// 4: box.
    Box,
    /// 5: Hamming-windowed sinc.
    Hamming,
}

impl Filter {
    /// The filter for Pillow's resample code, or `None` for an unknown code.
    pub fn from_pil(code: i64) -> Option<Filter> {
        Some(match code {
            0 => Filter::Nearest,
            1 => Filter::Lanczos,
            2 => Filter::Bilinear,
            3 => Filter::Bicubic,
            4 => Filter::Box,
            5 => Filter::Hamming,
            _ => return None,
        })
    }

    /// Half-width of the kernel in source pixels at scale 1.
    fn support(self) -> f64 {
        match self {
            Filter::Nearest | Filter::Box => 0.5,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    /// Kernel value at `x` (in source pixels at scale 1).
    fn weight(self, x: f64) -> f64 {
        match self {
            Filter::Nearest | Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let px = x * PI;
                    px.sin() / px * (0.54 + 0.46 * px.cos())
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if x > -3.0 && x < 3.0 {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let px = x * PI;
        px.sin() / px
    }
}

/// Fixed-point weights of one output pixel: the first source index and its weights.
struct Taps {
    first: usize,
    weights: Vec<i64>,
}

/// Weights for the output pixels `range` of a line of `in_size` pixels resampled to `out_size`.
fn coefficients(in_size: usize, out_size: usize, range: Range<usize>, filter: Filter) -> Vec<Taps> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    let inv = 1.0 / filter_scale;
    let one = f64::from(1u32 << PRECISION_BITS);
    range
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // Truncation toward zero, as C's (int) cast does; negatives are clamped anyway.
            let xmin = ((center - support + 0.5) as i64).clamp(0, in_size as i64) as usize;
            let xmax = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
            let count = xmax.saturating_sub(xmin);
            let raw: Vec<f64> = (0..count)
                .map(|x| filter.weight(((x + xmin) as f64 - center + 0.5) * inv))
                .collect();
            let total: f64 = raw.iter().sum();
            let weights = raw
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    if w < 0.0 {
                        (-0.5 + w * one) as i64
                    } else {
                        (0.5 + w * one) as i64
                    }
                })
                .collect();
            Taps {
                first: xmin,
                weights,
            }
        })
        .collect()
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// An interleaved RGB8 image borrowed as a slice.
#[derive(Debug, Clone, Copy)]
pub struct Rgb8<'a> {
    /// Pixels, row-major, 3 bytes each.
    pub data: &'a [u8],
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

/// A rectangle of output pixels: columns `x..x + width`, rows `y..y + height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First column.
    pub x: usize,
    /// First row.
    pub y: usize,
    /// Number of columns.
    pub width: usize,
    /// Number of rows.
    pub height: usize,
}

/// Horizontal pass. `src` rows are `stride` pixels wide and its column 0 is source column
/// `col0`; the local rows `rows` are resampled with `taps`, giving `rows.len()` rows of
/// `taps.len()` pixels.
fn horizontal(
    src: &[u8],
    stride: usize,
    col0: usize,
    rows: Range<usize>,
    taps: &[Taps],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(taps.len() * rows.len() * 3);
    for y in rows {
        let row = &src[y * stride * 3..(y + 1) * stride * 3];
        for t in taps {
            let start = (t.first - col0) * 3;
            let pixels = &row[start..start + t.weights.len() * 3];
            let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
            for (&w, px) in t.weights.iter().zip(pixels.chunks_exact(3)) {
                acc[0] += i64::from(px[0]) * w;
                acc[1] += i64::from(px[1]) * w;
                acc[2] += i64::from(px[2]) * w;
            }
            out.extend(acc.iter().map(|&a| clip8(a)));
        }
    }
    out
}

/// Vertical pass. `src` rows are `stride` pixels wide and its row 0 is source row `row0`;
/// the local columns `cols` are resampled with `taps`, giving `taps.len()` rows of
/// `cols.len()` pixels.
fn vertical(src: &[u8], stride: usize, cols: Range<usize>, row0: usize, taps: &[Taps]) -> Vec<u8> {
    let mut out = Vec::with_capacity(taps.len() * cols.len() * 3);
    let (c0, c1) = (cols.start * 3, cols.end * 3);
    let mut acc = vec![0i64; c1 - c0];
    for t in taps {
        acc.fill(1i64 << (PRECISION_BITS - 1));
        for (i, &w) in t.weights.iter().enumerate() {
            let row = (t.first + i - row0) * stride * 3;
            for (a, &v) in acc.iter_mut().zip(&src[row + c0..row + c1]) {
                *a += i64::from(v) * w;
            }
        }
        out.extend(acc.iter().map(|&a| clip8(a)));
    }
    out
}

/// The source indices `[first, end)` that a set of taps reads.
fn span(taps: &[Taps]) -> (usize, usize) {
    let lo = taps.iter().map(|t| t.first).min().unwrap_or(0);
    let hi = taps
        .iter()
        .map(|t| t.first + t.weights.len())
        .max()
        .unwrap_or(lo);
    (lo, hi.max(lo))
}

/// Pillow (13 and later) runs the vertical pass first when the height shrinks by more than
/// twice as many pixels as the width does; the order changes the 8-bit rounding in between.
fn vertical_first(in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> bool {
    out_h < in_h && (in_h - out_h) as i64 > 2 * (in_w as i64 - out_w as i64)
}

fn nearest(src: Rgb8<'_>, out_w: usize, out_h: usize, win: Window) -> Vec<u8> {
    let sx = src.width as f64 / out_w as f64;
    let sy = src.height as f64 / out_h as f64;
    let mut out = Vec::with_capacity(win.width * win.height * 3);
    for y in win.y..win.y + win.height {
        let yy = (((y as f64 + 0.5) * sy) as usize).min(src.height - 1);
        for x in win.x..win.x + win.width {
            let xx = (((x as f64 + 0.5) * sx) as usize).min(src.width - 1);
            let s = (yy * src.width + xx) * 3;
            out.extend_from_slice(&src.data[s..s + 3]);
        }
    }
    out
}

/// Resizes `src` to `out_w`×`out_h` as Pillow does and returns only the pixels of `win`
/// (row-major RGB8, `win.width * win.height * 3` bytes); every returned pixel equals the
/// one a full resize would give, so a centre crop never materialises the whole image.
///
/// Sizes must be at least 1, `src.data.len()` must be `width * height * 3` and `win`
/// must lie inside the output (the callers in this module guarantee all three).
pub fn resize_window(
    src: Rgb8<'_>,
    out_w: usize,
    out_h: usize,
    win: Window,
    filter: Filter,
) -> Vec<u8> {
    debug_assert_eq!(src.data.len(), src.width * src.height * 3);
    debug_assert!(win.x + win.width <= out_w && win.y + win.height <= out_h);
    if win.width == 0 || win.height == 0 {
        return Vec::new();
    }
    if filter == Filter::Nearest && (src.width != out_w || src.height != out_h) {
        return nearest(src, out_w, out_h, win);
    }
    let cols = win.x..win.x + win.width;
    let rows = win.y..win.y + win.height;
    let taps_h = (src.width != out_w).then(|| coefficients(src.width, out_w, cols.clone(), filter));
    let taps_v =
        (src.height != out_h).then(|| coefficients(src.height, out_h, rows.clone(), filter));
    match (taps_h, taps_v) {
        (None, None) => {
            let mut out = Vec::with_capacity(win.width * win.height * 3);
            for y in rows {
                let start = (y * src.width + win.x) * 3;
                out.extend_from_slice(&src.data[start..start + win.width * 3]);
            }
            out
        }
        (Some(th), None) => horizontal(src.data, src.width, 0, rows, &th),
        (None, Some(tv)) => vertical(src.data, src.width, cols, 0, &tv),
        (Some(th), Some(tv)) if vertical_first(src.width, src.height, out_w, out_h) => {
            let (c0, c1) = span(&th);
            let tmp = vertical(src.data, src.width, c0..c1, 0, &tv);
            horizontal(&tmp, c1 - c0, c0, 0..win.height, &th)
        }
        (Some(th), Some(tv)) => {
            let (r0, r1) = span(&tv);
            let tmp = horizontal(src.data, src.width, 0, r0..r1, &th);
            vertical(&tmp, win.width, 0..win.width, r0, &tv)
        }
    }
}

/// Resizes an interleaved RGB8 image to `out_w`×`out_h` as Pillow's `Image.resize` does.
pub fn resize_rgb8(src: Rgb8<'_>, out_w: usize, out_h: usize, filter: Filter) -> Vec<u8> {
    let win = Window {
        x: 0,
        y: 0,
        width: out_w,
        height: out_h,
    };
    resize_window(src, out_w, out_h, win, filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_image_stays_constant() {
        let data = vec![77u8; 13 * 9 * 3];
        let src = Rgb8 {
            data: &data,
            width: 13,
            height: 9,
        };
        for filter in [
            Filter::Bicubic,
            Filter::Bilinear,
            Filter::Lanczos,
            Filter::Box,
        ] {
            let out = resize_rgb8(src, 5, 21, filter);
            assert_eq!(out.len(), 5 * 21 * 3);
            assert!(out.iter().all(|&v| v == 77), "{filter:?}");
        }
    }

    #[test]
    fn bicubic_weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(640usize, 336usize), (100, 336), (7, 3)] {
            for t in coefficients(i, o, 0..o, Filter::Bicubic) {
                let s: i64 = t.weights.iter().sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= t.weights.len() as i64,
                    "{s}"
                );
            }
        }
    }

    #[test]
    fn window_matches_full_resize() {
        let data: Vec<u8> = (0..17 * 11 * 3).map(|i| (i * 37 % 251) as u8).collect();
        let src = Rgb8 {
            data: &data,
            width: 17,
            height: 11,
        };
        for (ow, oh) in [(7usize, 29usize), (30, 5), (17, 4), (6, 11), (16, 5)] {
            let full = resize_rgb8(src, ow, oh, Filter::Bicubic);
            let win = Window {
                x: 1,
                y: 2,
                width: ow - 2,
                height: oh - 3,
            };
            let part = resize_window(src, ow, oh, win, Filter::Bicubic);
            for y in 0..win.height {
                for x in 0..win.width {
                    let f = ((y + 2) * ow + x + 1) * 3;
                    let p = (y * win.width + x) * 3;
                    assert_eq!(full[f..f + 3], part[p..p + 3], "{ow}x{oh} at {x},{y}");
                }
            }
        }
    }

    #[test]
    fn nearest_picks_centres() {
        // 4 pixels, values 0, 10, 20, 30 in the red channel, down to 2: centres 1.0 and 3.0.
        let data: Vec<u8> = [0u8, 10, 20, 30].iter().flat_map(|&v| [v, 0, 0]).collect();
        let src = Rgb8 {
            data: &data,
            width: 4,
            height: 1,
        };
        let out = resize_rgb8(src, 2, 1, Filter::Nearest);
        assert_eq!(out, vec![10, 0, 0, 30, 0, 0]);
    }
}
