//! The LLaVA-NeXT / LLaVA-OneVision image processors (transformers 5's `LlavaNextImageProcessor`
//! and `LlavaOnevisionImageProcessor`, PIL backend): the base view (the whole image resized
//! straight to the tile size) and the tiles of the best-resolution canvas, each then resized,
//! cropped, rescaled and normalised like a CLIP/SigLIP image. The number of image tokens comes
//! from the [`AnyresLayout`] (`layout.rs`), as the processors' `_get_number_of_features`.

pub mod layout;

pub use layout::{
    patch_output_size, select_best_resolution, AnyresLayout, FeatureSource, TokenRule,
};

use std::path::Path;

use image::{DynamicImage, RgbImage};
use serde_json::Value;

use super::config::{PreprocessorConfig, ResizeTarget};
use super::error::ProcessingError;
use super::image::{to_rgb, ImageMode, ImageProcessor, PixelValues};
use super::resample::{resize_rgb8, Rgb8};

/// The settings of an anyres image processor: `preprocessor_config.json`'s image steps and
/// `image_grid_pinpoints`, and `processor_config.json`'s token rule.
#[derive(Debug, Clone, PartialEq)]
pub struct AnyresImageConfig {
    /// The per-view steps (resize, crop, rescale, normalise).
    pub images: ImageProcessor,
    /// Resolutions `[height, width]` the image may be tiled to.
    pub pinpoints: Vec<[usize; 2]>,
    /// Features per tile side, base features, `anyres_max_N`.
    pub rule: TokenRule,
}

/// A preprocessed anyres image.
#[derive(Debug, Clone, PartialEq)]
pub struct AnyresPixels {
    /// `[views, 3, tile, tile]` values, the base view first, then the tiles row-major.
    pub data: Vec<f32>,
    /// `[views, 3, tile, tile]`.
    pub shape: [usize; 4],
    /// Where each image feature comes from.
    pub layout: AnyresLayout,
    /// The image as fitted into the canvas (aspect kept, no padding), normalised: the
    /// picture a session stores (it covers the whole original image).
    pub fitted: PixelValues,
}

const PROCESSOR: &str = "processor_config.json";

fn read(path: &Path) -> Result<Option<Value>, ProcessingError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|source| ProcessingError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ProcessingError::config(&path.display().to_string(), e))
}

fn usize_field(v: &Value, key: &str) -> Option<usize> {
    v.get(key)?.as_u64().map(|x| x as usize)
}

fn pinpoints(v: &Value) -> Option<Vec<[usize; 2]>> {
    v.as_array()?
        .iter()
        .map(|p| {
            let p = p.as_array()?;
            match (p.first()?.as_u64()?, p.get(1)?.as_u64()?) {
                (h, w) if h > 0 && w > 0 && p.len() == 2 => Some([h as usize, w as usize]),
                _ => None,
            }
        })
        .collect::<Option<Vec<_>>>()
        .filter(|v| !v.is_empty())
}

impl AnyresImageConfig {
    /// Read the folder's `preprocessor_config.json` and `processor_config.json`. `fallback`
    /// (from the model's config) gives the pinpoints and the token rule a folder leaves out.
    pub fn from_dir(
        dir: &Path,
        fallback_pinpoints: &[[usize; 2]],
        fallback_rule: TokenRule,
    ) -> Result<Self, ProcessingError> {
        let pre_path = dir.join("preprocessor_config.json");
        let pre = read(&pre_path)?.ok_or_else(|| {
            ProcessingError::config(
                "model folder",
                format!("{} has no preprocessor_config.json", dir.display()),
            )
        })?;
        let proc_ = read(&dir.join(PROCESSOR))?.unwrap_or(Value::Null);
        Self::from_values(&pre, &proc_, fallback_pinpoints, fallback_rule)
    }

    /// [`from_dir`](Self::from_dir) on parsed JSON (`processor` may be `Null`).
    pub fn from_values(
        pre: &Value,
        processor: &Value,
        fallback_pinpoints: &[[usize; 2]],
        fallback_rule: TokenRule,
    ) -> Result<Self, ProcessingError> {
        let config = PreprocessorConfig::from_json(&pre.to_string())?;
        let pinpoints = match pre.get("image_grid_pinpoints").filter(|v| !v.is_null()) {
            Some(v) => pinpoints(v).ok_or_else(|| {
                ProcessingError::config(
                    "preprocessor_config.json",
                    format!("`image_grid_pinpoints` must be [height, width] pairs, found {v}"),
                )
            })?,
            None => fallback_pinpoints.to_vec(),
        };
        let tile = tile_px(&config);
        let mut rule = fallback_rule;
        // LlavaNextProcessor: patches a side = tile // patch_size; base = side² +
        // num_additional_image_tokens, less one with strategy "default".
        if let Some(patch) = usize_field(processor, "patch_size").filter(|&p| p > 0) {
            rule.side = tile / patch;
            let extra = usize_field(processor, "num_additional_image_tokens").unwrap_or(0);
            let default = processor
                .get("vision_feature_select_strategy")
                .and_then(Value::as_str)
                == Some("default");
            rule.base = (rule.side * rule.side + extra).saturating_sub(usize::from(default));
        }
        // LlavaOnevisionProcessor: side = int(sqrt(num_image_tokens)), base = num_image_tokens.
        if let Some(n) = usize_field(processor, "num_image_tokens").filter(|&n| n > 0) {
            rule.side = (n as f64).sqrt() as usize;
            rule.base = n;
        }
        if let Some(s) = processor.get("vision_aspect_ratio").and_then(Value::as_str) {
            rule.max_tiles = Some(crate::model::config::parse_anyres_max(s).ok_or_else(|| {
                ProcessingError::config(
                    PROCESSOR,
                    format!("vision_aspect_ratio '{s}' is not anyres_max_N"),
                )
            })?);
        }
        if rule.side == 0 || rule.base != rule.side * rule.side {
            return Err(ProcessingError::config(
                PROCESSOR,
                format!(
                    "{} base features for {} features a tile side is not a square grid",
                    rule.base, rule.side
                ),
            ));
        }
        if let Some(p) = pinpoints
            .iter()
            .find(|p| p[0] % tile != 0 || p[1] % tile != 0)
        {
            return Err(ProcessingError::config(
                "preprocessor_config.json",
                format!(
                    "pinpoint [{}, {}] is not a multiple of the {tile}-pixel tile",
                    p[0], p[1]
                ),
            ));
        }
        Ok(Self {
            images: ImageProcessor::new(config),
            pinpoints,
            rule,
        })
    }

    /// Tile side in pixels.
    pub fn tile_px(&self) -> usize {
        tile_px(self.images.config())
    }

    /// The layout of an image of `[height, width]` pixels.
    pub fn layout(&self, image_hw: [usize; 2]) -> AnyresLayout {
        AnyresLayout::new(image_hw, &self.pinpoints, self.tile_px(), self.rule)
    }

    /// Preprocess an image: base view, tiles, fitted picture, layout.
    #[tracing::instrument(name = "preprocess", skip_all)]
    pub fn preprocess(&self, img: &DynamicImage) -> Result<AnyresPixels, ProcessingError> {
        if img.width() == 0 || img.height() == 0 {
            return Err(ProcessingError::EmptyImage {
                what: "the image".into(),
                width: img.width(),
                height: img.height(),
            });
        }
        let cfg = self.images.config();
        let rgb = to_rgb(img, cfg.do_convert_rgb);
        let (h, w) = (rgb.height() as usize, rgb.width() as usize);
        let layout = self.layout([h, w]);
        let src = Rgb8 {
            data: rgb.as_raw(),
            width: w,
            height: h,
        };
        let [fh, fw] = layout.fitted_hw;
        let fitted = resize_rgb8(src, fw, fh, cfg.resample);
        // _pad_for_patching: zero (black) pixels around, centred, the odd one bottom/right.
        let [bh, bw] = layout.best_hw;
        let mut canvas = vec![0u8; bh * bw * 3];
        let [py, px] = layout.paste;
        for y in 0..fh {
            let dst = ((py + y) * bw + px) * 3;
            canvas[dst..dst + fw * 3].copy_from_slice(&fitted[y * fw * 3..(y + 1) * fw * 3]);
        }
        let tile = self.tile_px();
        let (base_h, base_w) = base_size(cfg);
        let base = resize_rgb8(src, base_w, base_h, cfg.resample);
        let mut views = vec![image_of(base, base_w, base_h)];
        for ty in 0..layout.tiles_hw[0] {
            for tx in 0..layout.tiles_hw[1] {
                let mut part = Vec::with_capacity(tile * tile * 3);
                for y in 0..tile {
                    let row = ((ty * tile + y) * bw + tx * tile) * 3;
                    part.extend_from_slice(&canvas[row..row + tile * 3]);
                }
                views.push(image_of(part, tile, tile));
            }
        }
        let mut data = Vec::new();
        let mut view_shape = None;
        for v in views {
            let px = self
                .images
                .preprocess(&DynamicImage::ImageRgb8(v), ImageMode::Default)?;
            if *view_shape.get_or_insert(px.shape) != px.shape {
                return Err(ProcessingError::config(
                    "preprocessor_config.json",
                    "the base view and the tiles come out at different sizes",
                ));
            }
            data.extend(px.data);
        }
        let [c, vh, vw] = view_shape.unwrap_or([3, tile, tile]);
        Ok(AnyresPixels {
            data,
            shape: [layout.views(), c, vh, vw],
            fitted: self.images.normalise(&fitted, fh, fw),
            layout,
        })
    }
}

fn image_of(data: Vec<u8>, w: usize, h: usize) -> RgbImage {
    RgbImage::from_raw(w as u32, h as u32, data)
        .unwrap_or_else(|| RgbImage::new(w as u32, h as u32))
}

/// The tile side: `crop_size.height` when cropping, else `size.height`, else the shortest edge
/// (transformers' `_preprocess`).
fn tile_px(cfg: &PreprocessorConfig) -> usize {
    if cfg.do_center_crop {
        return cfg.crop_size.0;
    }
    match cfg.size {
        ResizeTarget::Exact { height, .. } => height,
        ResizeTarget::ShortestEdge { shortest, .. } => shortest,
    }
}

/// The base view's `(height, width)`: `size` when it is a height and width, else the shortest
/// edge squared (aspect not kept).
fn base_size(cfg: &PreprocessorConfig) -> (usize, usize) {
    match cfg.size {
        ResizeTarget::Exact { height, width } => (height, width),
        ResizeTarget::ShortestEdge { shortest, .. } => (shortest, shortest),
    }
}
