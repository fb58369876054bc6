//! The preprocessed image as RGB, maps blended over it, and PNG export; shared by the app and the
//! report (which both draw; neither imports the other).

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
