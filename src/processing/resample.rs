//! Separable image resampling that reproduces Pillow's `Image.resize` on 8-bit RGB images.
//!
//! transformers' CLIP image processor resizes with Pillow, so matching its pixel values means
//! matching Pillow's arithmetic: per-output-pixel filter weights computed in double precision
//! with the filter support widened by the scale factor when downscaling (antialiasing),
//! weights normalised to sum 1 and then quantised to fixed point with 22 fractional bits,
//! a horizontal pass first and a vertical pass second, each rounding and clamping back to
//! 8 bits. Nearest-neighbour sampling takes the source pixel under each output pixel's centre.

use std::f64::consts::PI;

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
fn coefficients(
    in_size: usize,
    out_size: usize,
    range: std::ops::Range<usize>,
    filter: Filter,
) -> Vec<Taps> {
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

/// Horizontal pass: source rows `rows`, output columns of `win` (of `out_w` in all).
fn horizontal(
    src: Rgb8<'_>,
    rows: std::ops::Range<usize>,
    out_w: usize,
    win: Window,
    filter: Filter,
) -> Vec<u8> {
    let taps = coefficients(src.width, out_w, win.x..win.x + win.width, filter);
    let mut out = Vec::with_capacity(win.width * rows.len() * 3);
    for y in rows {
        let row = &src.data[y * src.width * 3..(y + 1) * src.width * 3];
        for t in &taps {
            let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
            for (i, &w) in t.weights.iter().enumerate() {
                let p = (t.first + i) * 3;
                for (c, a) in acc.iter_mut().enumerate() {
                    *a += i64::from(row[p + c]) * w;
                }
            }
            out.extend(acc.iter().map(|&a| clip8(a)));
        }
    }
    out
}

/// Vertical pass over `src` (whose first row is source row `row0`), output rows of `win`.
fn vertical(
    src: &[u8],
    width: usize,
    row0: usize,
    in_h: usize,
    out_h: usize,
    win: Window,
    filter: Filter,
) -> Vec<u8> {
    let taps = coefficients(in_h, out_h, win.y..win.y + win.height, filter);
    let mut out = Vec::with_capacity(width * win.height * 3);
    for t in &taps {
        for x in 0..width {
            let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
            for (i, &w) in t.weights.iter().enumerate() {
                let p = ((t.first + i - row0) * width + x) * 3;
                for (c, a) in acc.iter_mut().enumerate() {
                    *a += i64::from(src[p + c]) * w;
                }
            }
            out.extend(acc.iter().map(|&a| clip8(a)));
        }
    }
    out
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
    // Source rows the vertical pass reads.
    let (row0, row1) = if src.height != out_h {
        let taps = coefficients(src.height, out_h, win.y..win.y + win.height, filter);
        let lo = taps.iter().map(|t| t.first).min().unwrap_or(0);
        let hi = taps
            .iter()
            .map(|t| t.first + t.weights.len())
            .max()
            .unwrap_or(0);
        (lo, hi.max(lo))
    } else {
        (win.y, win.y + win.height)
    };
    let rows = if src.width != out_w {
        horizontal(src, row0..row1, out_w, win, filter)
    } else {
        let mut rows = Vec::with_capacity(win.width * (row1 - row0) * 3);
        for y in row0..row1 {
            let start = (y * src.width + win.x) * 3;
            rows.extend_from_slice(&src.data[start..start + win.width * 3]);
        }
        rows
    };
    if src.height != out_h {
        vertical(&rows, win.width, row0, src.height, out_h, win, filter)
    } else {
        rows
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
        for (ow, oh) in [(7usize, 29usize), (30, 5), (17, 4), (6, 11)] {
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
