//! Qwen2-VL / Qwen2.5-VL image preprocessing (transformers' `Qwen2VLImageProcessor`, PIL
//! backend): `smart_resize` to multiples of patch × merge within a pixel budget, Pillow
//! resampling, rescale, normalise, then the picture cut into flattened patches ordered by
//! 2×2 merge block, the still image repeated over the temporal patch.

use std::path::Path;

use image::DynamicImage;
use serde_json::Value;

use super::config::{CLIP_MEAN, CLIP_STD};
use super::error::ProcessingError;
use super::resample::{resize_rgb8, Filter, Rgb8};

const WHAT: &str = "preprocessor_config.json";

/// The settings of a Qwen VL image processor (`preprocessor_config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct QwenImageConfig {
    /// Smallest number of pixels after resizing (`min_pixels`, or `size.shortest_edge`).
    pub min_pixels: usize,
    /// Largest number of pixels after resizing (`max_pixels`, or `size.longest_edge`).
    pub max_pixels: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Frames per temporal patch.
    pub temporal_patch_size: usize,
    /// Merge block side.
    pub merge_size: usize,
    /// Resampling filter.
    pub resample: Filter,
    /// Multiply the 8-bit values by `rescale_factor`.
    pub do_rescale: bool,
    /// The rescale factor (1/255).
    pub rescale_factor: f64,
    /// Normalise with `image_mean` / `image_std`.
    pub do_normalize: bool,
    /// Per-channel mean.
    pub image_mean: [f64; 3],
    /// Per-channel standard deviation.
    pub image_std: [f64; 3],
}

impl Default for QwenImageConfig {
    fn default() -> Self {
        Self {
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            patch_size: 14,
            temporal_patch_size: 2,
            merge_size: 2,
            resample: Filter::Bicubic,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
        }
    }
}

/// What the processor produces for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct QwenPixels {
    /// `[P, C·T·p·p]` row-major: one row per patch, in merge-block order.
    pub data: Vec<f32>,
    /// Number of patches P.
    pub num_patches: usize,
    /// Values per patch.
    pub patch_len: usize,
    /// `image_grid_thw`: temporal, row and column patch counts.
    pub grid_thw: [usize; 3],
    /// The resized picture's (height, width).
    pub resized_hw: (usize, usize),
    /// The 8-bit picture the tower saw (resized), RGB row-major.
    pub resized_rgb: Vec<u8>,
}

impl QwenPixels {
    /// Number of merged image tokens (P / merge²).
    pub fn num_tokens(&self, merge: usize) -> usize {
        self.num_patches / (merge * merge)
    }

    /// The merged grid `[rows, cols]`.
    pub fn merged_grid(&self, merge: usize) -> [usize; 2] {
        [self.grid_thw[1] / merge, self.grid_thw[2] / merge]
    }
}

/// Python's `round` (halves to even) of a non-negative `x`.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc() - 0.5).abs() == 0.0 && r % 2.0 != 0.0 {
        r - 1.0
    } else {
        r
    }
}

/// Most pixels a Qwen VL image may be resized to: far above any model's `max_pixels`, low enough
/// that a lying `min_pixels` cannot ask for a terabyte-sized picture.
pub const MAX_RESIZED_PIXELS: usize = 64 << 20;

/// transformers' `smart_resize`: (height, width) rounded to multiples of `factor`, scaled down
/// (floor) when above `max_pixels`, scaled up (ceil) when below `min_pixels` — without a second
/// check against `max_pixels` after scaling up, as transformers does.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize), ProcessingError> {
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    if height == 0 || width == 0 || h.max(w) / h.min(w) > 200.0 {
        return Err(ProcessingError::config(
            "the image",
            format!("a {width}x{height} image has an aspect ratio above 200"),
        ));
    }
    let mut h_bar = round_half_even(h / f) * f;
    let mut w_bar = round_half_even(w / f) * f;
    if h_bar * w_bar > max_pixels as f64 {
        let beta = ((h * w) / max_pixels as f64).sqrt();
        h_bar = f.max((h / beta / f).floor() * f);
        w_bar = f.max((w / beta / f).floor() * f);
    } else if h_bar * w_bar < min_pixels as f64 {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        h_bar = (h * beta / f).ceil() * f;
        w_bar = (w * beta / f).ceil() * f;
    }
    if h_bar * w_bar > MAX_RESIZED_PIXELS as f64 {
        return Err(ProcessingError::config(
            "image size",
            format!(
                "min_pixels {min_pixels} and max_pixels {max_pixels} would resize it to \
                 {w_bar}x{h_bar} pixels, more than the {MAX_RESIZED_PIXELS} lvlmscope accepts; \
                 lower --min-pixels or --max-pixels"
            ),
        ));
    }
    Ok((h_bar as usize, w_bar as usize))
}

fn get_usize(v: &Value, key: &str) -> Option<usize> {
    v.get(key).and_then(Value::as_u64).map(|x| x as usize)
}

fn get_triple(v: &Value, key: &str) -> Result<Option<[f64; 3]>, ProcessingError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) if a.len() == 3 && a.iter().all(Value::is_number) => Ok(Some([
            a[0].as_f64().unwrap_or(0.0),
            a[1].as_f64().unwrap_or(0.0),
            a[2].as_f64().unwrap_or(0.0),
        ])),
        Some(_) => Err(ProcessingError::config(
            WHAT,
            format!("{key} must be a list of 3 numbers"),
        )),
    }
}

impl QwenImageConfig {
    /// Parse `preprocessor_config.json` text; missing fields take transformers' defaults.
    pub fn from_json(text: &str) -> Result<Self, ProcessingError> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| ProcessingError::config(WHAT, e.to_string()))?;
        let d = Self::default();
        let size = v.get("size");
        let min_pixels = get_usize(&v, "min_pixels")
            .or_else(|| size.and_then(|s| get_usize(s, "shortest_edge")))
            .unwrap_or(d.min_pixels);
        let max_pixels = get_usize(&v, "max_pixels")
            .or_else(|| size.and_then(|s| get_usize(s, "longest_edge")))
            .unwrap_or(d.max_pixels);
        let resample = match v.get("resample").and_then(Value::as_i64) {
            None => d.resample,
            Some(code) => Filter::from_pil(code).ok_or_else(|| {
                ProcessingError::config(WHAT, format!("resample {code} is not a Pillow filter"))
            })?,
        };
        let cfg = Self {
            min_pixels,
            max_pixels,
            patch_size: get_usize(&v, "patch_size").unwrap_or(d.patch_size),
            temporal_patch_size: get_usize(&v, "temporal_patch_size")
                .unwrap_or(d.temporal_patch_size),
            merge_size: get_usize(&v, "merge_size").unwrap_or(d.merge_size),
            resample,
            do_rescale: v.get("do_rescale").and_then(Value::as_bool).unwrap_or(true),
            rescale_factor: v
                .get("rescale_factor")
                .and_then(Value::as_f64)
                .unwrap_or(d.rescale_factor),
            do_normalize: v
                .get("do_normalize")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            image_mean: get_triple(&v, "image_mean")?.unwrap_or(d.image_mean),
            image_std: get_triple(&v, "image_std")?.unwrap_or(d.image_std),
        };
        if cfg.patch_size == 0 || cfg.merge_size == 0 || cfg.temporal_patch_size == 0 {
            return Err(ProcessingError::config(
                WHAT,
                "patch_size, merge_size and temporal_patch_size must be positive",
            ));
        }
        if cfg.min_pixels > cfg.max_pixels {
            return Err(ProcessingError::config(
                WHAT,
                format!(
                    "min_pixels {} is above max_pixels {}",
                    cfg.min_pixels, cfg.max_pixels
                ),
            ));
        }
        Ok(cfg)
    }

    /// Read `preprocessor_config.json` from a model folder (defaults when it is absent).
    pub fn from_dir(dir: &Path) -> Result<Self, ProcessingError> {
        let path = dir.join(WHAT);
        if !path.is_file() {
            return Ok(Self::default());
        }
        let text =
            std::fs::read_to_string(&path).map_err(|source| ProcessingError::Unreadable {
                path: path.clone(),
                source,
            })?;
        Self::from_json(&text)
    }

    /// The resize factor: patch × merge.
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    /// Preprocess a decoded image.
    #[tracing::instrument(name = "preprocess", skip_all)]
    pub fn preprocess(&self, img: &DynamicImage) -> Result<QwenPixels, ProcessingError> {
        let rgb = img.to_rgb8();
        let (h, w) = (rgb.height() as usize, rgb.width() as usize);
        let (rh, rw) = smart_resize(h, w, self.factor(), self.min_pixels, self.max_pixels)?;
        let src = Rgb8 {
            data: rgb.as_raw(),
            width: w,
            height: h,
        };
        let resized = resize_rgb8(src, rw, rh, self.resample);
        Ok(self.patchify(&resized, rh, rw))
    }

    /// Rescaled, normalised value of channel `c` of an 8-bit pixel, in transformers' precision.
    pub fn value(&self, v: u8, c: usize) -> f32 {
        let mut x = if self.do_rescale {
            (f64::from(v) * self.rescale_factor) as f32
        } else {
            f32::from(v)
        };
        if self.do_normalize {
            x = (x - self.image_mean[c] as f32) / self.image_std[c] as f32;
        }
        x
    }

    /// Cut a resized `rh`×`rw` RGB picture into flattened patches.
    fn patchify(&self, rgb: &[u8], rh: usize, rw: usize) -> QwenPixels {
        let (data, grid_thw) = self.patches_with(rh, rw, |y, x, ch| {
            self.value(rgb[(y * rw + x) * 3 + ch], ch)
        });
        QwenPixels {
            num_patches: grid_thw[1] * grid_thw[2],
            patch_len: self.patch_len(),
            data,
            grid_thw,
            resized_hw: (rh, rw),
            resized_rgb: rgb.to_vec(),
        }
    }

    /// Values in one flattened patch.
    pub fn patch_len(&self) -> usize {
        3 * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// The patches `[P, patch_len]` (row-major) and `grid_thw` of an already normalised
    /// `[3, h, w]` picture (as a session stores it); errors unless h and w are multiples of
    /// patch × merge.
    pub fn patches_of_picture(
        &self,
        planes: &[f32],
        h: usize,
        w: usize,
    ) -> Result<(Vec<f32>, [usize; 3]), ProcessingError> {
        let f = self.factor();
        if !h.is_multiple_of(f) || !w.is_multiple_of(f) || planes.len() != 3 * h * w {
            return Err(ProcessingError::config(
                "the picture",
                format!("a 3x{h}x{w} picture cannot be cut into {f}-pixel merge blocks"),
            ));
        }
        Ok(self.patches_with(h, w, |y, x, ch| planes[(ch * h + y) * w + x]))
    }

    /// Patch rows ordered (block row, block col, row in block, col in block), values
    /// (channel, temporal, y, x), the picture repeated over the temporal patch; `value(y, x,
    /// channel)` reads one pixel.
    fn patches_with(
        &self,
        rh: usize,
        rw: usize,
        value: impl Fn(usize, usize, usize) -> f32,
    ) -> (Vec<f32>, [usize; 3]) {
        let (p, t) = (self.patch_size, self.temporal_patch_size);
        let (gh, gw) = (rh / p, rw / p);
        let mut data = Vec::with_capacity(gh * gw * self.patch_len());
        for (r, c) in patch_positions(gh, gw, self.merge_size) {
            for ch in 0..3 {
                let mut plane = Vec::with_capacity(p * p);
                for y in 0..p {
                    for x in 0..p {
                        plane.push(value(r * p + y, c * p + x, ch));
                    }
                }
                for _ in 0..t {
                    data.extend_from_slice(&plane);
                }
            }
        }
        (data, [1, gh, gw])
    }
}

/// The (row, col) in the patch grid of every patch row, in the processor's order.
pub fn patch_positions(grid_h: usize, grid_w: usize, merge: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(grid_h * grid_w);
    for bh in 0..grid_h / merge {
        for bw in 0..grid_w / merge {
            for mh in 0..merge {
                for mw in 0..merge {
                    out.push((bh * merge + mh, bw * merge + mw));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_matches_transformers() {
        // below min_pixels: scaled up with ceil, no second check against max_pixels
        assert_eq!(smart_resize(36, 48, 28, 9408, 12544).unwrap(), (84, 112));
        assert_eq!(smart_resize(64, 30, 28, 9408, 12544).unwrap(), (168, 84));
        // Python rounds halves to even: 42 / 28 = 1.5 -> 2, 70 / 28 = 2.5 -> 2
        assert_eq!(smart_resize(42, 70, 28, 0, 1 << 30).unwrap(), (56, 56));
        // above max_pixels: floor-scaled
        assert_eq!(
            smart_resize(1000, 1000, 28, 0, 200_000).unwrap(),
            (420, 420)
        );
        assert!(smart_resize(1, 300, 28, 0, 1 << 30).is_err());
    }

    #[test]
    fn patch_positions_follow_merge_blocks() {
        let pos = patch_positions(2, 4, 2);
        assert_eq!(pos[..4], [(0, 0), (0, 1), (1, 0), (1, 1)]);
        assert_eq!(pos[4], (0, 2));
    }

    #[test]
    fn config_reads_transformers_5_size_keys() {
        let c = QwenImageConfig::from_json(
            r#"{"size": {"shortest_edge": 100, "longest_edge": 1000}, "resample": 2}"#,
        )
        .unwrap();
        assert_eq!((c.min_pixels, c.max_pixels), (100, 1000));
        assert_eq!(c.resample, Filter::Bilinear);
    }
}
