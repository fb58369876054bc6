//! The preprocessed image as RGB, maps blended over it, and PNG export; shared by the app and the
//! report (which both draw; neither imports the other).

use std::borrow::Cow;
use std::path::Path;

use crate::explain::attention::Grid;
use crate::session::Array;
use crate::style::{normalize, ColorMap, Rgb};

/// CLIP's per-channel normalisation mean, as LLaVA's image processor applies it.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's per-channel normalisation standard deviation.
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// An RGB raster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raster {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Row-major pixels.
    pub pixels: Vec<Rgb>,
}

impl Raster {
    /// The pixel at column `x`, row `y`.
    pub fn get(&self, x: usize, y: usize) -> Rgb {
        self.pixels[y * self.width + x]
    }
}

/// Undoes CLIP normalisation of `pixel_values` (`[3, h, w]`) into an RGB raster; any other shape
/// gives an empty raster.
pub fn denormalize(px: &Array) -> Raster {
    if px.shape.len() != 3 || px.shape[0] != 3 {
        return Raster {
            width: 0,
            height: 0,
            pixels: Vec::new(),
        };
    }
    let (h, w) = (px.shape[1], px.shape[2]);
    let byte = |ch: usize, i: usize| {
        let v = px.data[ch * h * w + i] * CLIP_STD[ch] + CLIP_MEAN[ch];
        (v.clamp(0.0, 1.0) * 255.0).round() as u8
    };
    Raster {
        width: w,
        height: h,
        pixels: (0..h * w)
            .map(|i| Rgb(byte(0, i), byte(1, i), byte(2, i)))
            .collect(),
    }
}

/// Box-filters `src` to `width × height` (each output pixel averages the source pixels it covers).
pub fn resample(src: &Raster, width: usize, height: usize) -> Raster {
    let mut pixels = Vec::with_capacity(width * height);
    if src.width == 0 || src.height == 0 {
        pixels.resize(width * height, Rgb(0, 0, 0));
        return Raster {
            width,
            height,
            pixels,
        };
    }
    for y in 0..height {
        let y0 = y * src.height / height;
        let y1 = ((y + 1) * src.height / height).max(y0 + 1).min(src.height);
        for x in 0..width {
            let x0 = x * src.width / width;
            let x1 = ((x + 1) * src.width / width).max(x0 + 1).min(src.width);
            let (mut r, mut g, mut b, mut n) = (0u32, 0u32, 0u32, 0u32);
            for yy in y0..y1 {
                for xx in x0..x1 {
                    let p = src.get(xx, yy);
                    r += p.0 as u32;
                    g += p.1 as u32;
                    b += p.2 as u32;
                    n += 1;
                }
            }
            let n = n.max(1);
            pixels.push(Rgb((r / n) as u8, (g / n) as u8, (b / n) as u8));
        }
    }
    Raster {
        width,
        height,
        pixels,
    }
}

/// The part of `src` — a picture of the rectangle `shows` (`[x0, y0, x1, y1]`, pixels of the
/// original image) — that covers the rectangle `rect` of the same image, at the picture's
/// scale: what an image region's map is drawn over. Black where `rect` reaches past the
/// picture; `src` itself when the two rectangles agree within half a picture pixel (or `shows`
/// is empty).
pub fn crop(src: &Raster, shows: [f64; 4], rect: [f64; 4]) -> Cow<'_, Raster> {
    let (sw, sh) = (shows[2] - shows[0], shows[3] - shows[1]);
    if !(sw > 0.0 && sh > 0.0) || src.width == 0 || src.height == 0 {
        return Cow::Borrowed(src);
    }
    let (kx, ky) = (src.width as f64 / sw, src.height as f64 / sh);
    let px = [
        (rect[0] - shows[0]) * kx,
        (rect[1] - shows[1]) * ky,
        (rect[2] - shows[0]) * kx,
        (rect[3] - shows[1]) * ky,
    ];
    if !px.iter().all(|v| v.is_finite()) {
        return Cow::Borrowed(src);
    }
    let full = [0.0, 0.0, src.width as f64, src.height as f64];
    if px.iter().zip(full).all(|(a, b)| (a - b).abs() < 0.5) {
        return Cow::Borrowed(src);
    }
    let (x0, y0) = (px[0].round() as i64, px[1].round() as i64);
    let width = (px[2].round() as i64 - x0).max(1) as usize;
    let height = (px[3].round() as i64 - y0).max(1) as usize;
    let mut pixels = Vec::with_capacity(width * height);
    for y in 0..height as i64 {
        for x in 0..width as i64 {
            let (sx, sy) = (x0 + x, y0 + y);
            let inside =
                (0..src.width as i64).contains(&sx) && (0..src.height as i64).contains(&sy);
            pixels.push(if inside {
                src.get(sx as usize, sy as usize)
            } else {
                Rgb(0, 0, 0)
            });
        }
    }
    Cow::Owned(Raster {
        width,
        height,
        pixels,
    })
}

/// `src` resampled to the aspect ratio `aspect` (width / height), keeping its larger side, so a
/// picture of a wide image looks wide; unchanged when it already has that aspect (within one
/// pixel) or is empty.
pub fn at_aspect(src: &Raster, aspect: f64) -> Raster {
    if src.width == 0 || src.height == 0 || !(aspect.is_finite() && aspect > 0.0) {
        return src.clone();
    }
    let (w, h) = (src.width as f64, src.height as f64);
    let (nw, nh) = if aspect >= w / h {
        (w, (w / aspect).round().max(1.0))
    } else {
        ((h * aspect).round().max(1.0), h)
    };
    if (nw - w).abs() < 1.0 && (nh - h).abs() < 1.0 {
        return src.clone();
    }
    resample(src, nw as usize, nh as usize)
}

/// The grid patch under pixel (`x`, `y`) of a `width × height` raster: `(row, col)`.
pub fn patch_at(map: &Grid, width: usize, height: usize, x: usize, y: usize) -> (usize, usize) {
    let r = (y * map.rows / height.max(1)).min(map.rows.saturating_sub(1));
    let c = (x * map.cols / width.max(1)).min(map.cols.saturating_sub(1));
    (r, c)
}

/// Blends `map` (normalised to `range`, coloured by `cmap`) over `image` at opacity `alpha`.
pub fn overlay(
    image: &Raster,
    map: &Grid,
    range: (f32, f32),
    cmap: ColorMap,
    alpha: f32,
) -> Raster {
    let mut out = image.clone();
    if map.rows == 0 || map.cols == 0 {
        return out;
    }
    let colors: Vec<Rgb> = map
        .values
        .iter()
        .map(|&v| cmap.sample(normalize(v, range)))
        .collect();
    for y in 0..image.height {
        for x in 0..image.width {
            let (r, c) = patch_at(map, image.width, image.height, x, y);
            let i = y * image.width + x;
            out.pixels[i] = image.pixels[i].blend(colors[r * map.cols + c], alpha);
        }
    }
    out
}

/// Why a PNG could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write PNG {path}: {reason}")]
pub struct PngError {
    /// The file.
    pub path: String,
    /// What went wrong.
    pub reason: String,
}

/// Writes a raster as an 8-bit RGB PNG.
pub fn write_png(raster: &Raster, path: &Path) -> Result<(), PngError> {
    let err = |reason: String| PngError {
        path: path.display().to_string(),
        reason,
    };
    let bytes: Vec<u8> = raster.pixels.iter().flat_map(|p| [p.0, p.1, p.2]).collect();
    let img = image::RgbImage::from_raw(raster.width as u32, raster.height as u32, bytes)
        .ok_or_else(|| err("raster size does not match its pixels".into()))?;
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raster(width: usize, height: usize) -> Raster {
        Raster {
            width,
            height,
            pixels: (0..width * height)
                .map(|i| Rgb(i as u8, (i / width) as u8, 0))
                .collect(),
        }
    }

    #[test]
    fn crop_takes_the_rectangle_at_the_picture_scale() {
        // A 8x4 picture of a 16x8 image: the rectangle x 4..12, y 2..8 is pixels 2..6, 1..4.
        let src = raster(8, 4);
        let out = crop(&src, [0.0, 0.0, 16.0, 8.0], [4.0, 2.0, 12.0, 8.0]);
        assert_eq!((out.width, out.height), (4, 3));
        assert_eq!(out.get(0, 0), src.get(2, 1));
        assert_eq!(out.get(3, 2), src.get(5, 3));
        // Past the picture is black; the same rectangle is the picture itself.
        let out = crop(&src, [0.0, 0.0, 16.0, 8.0], [-2.0, 0.0, 16.0, 8.2]);
        assert_eq!((out.width, out.height), (9, 4));
        assert_eq!(out.get(0, 0), Rgb(0, 0, 0));
        assert_eq!(out.get(1, 0), src.get(0, 0));
        let same = crop(&src, [0.0, 0.0, 16.0, 8.0], [0.4, 0.0, 16.0, 8.0]);
        assert!(matches!(same, Cow::Borrowed(_)));
    }
}
