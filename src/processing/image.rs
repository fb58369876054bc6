//! CLIP image preprocessing: image modes, resize, centre crop, rescale, normalise.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use image::{DynamicImage, RgbImage};

pub use super::load::{load_image, load_image_bytes, MAX_DECODE_BYTES, MAX_IMAGE_SIDE};

use super::config::{PreprocessorConfig, ResizeTarget};
use super::error::ProcessingError;
use super::resample::{resize_window, Rgb8, Window};

/// Largest accepted number of pixels after the resize step (before any crop is applied, only
/// the pixels that survive the crop are computed, so this bounds the output, not the resize).
const MAX_OUTPUT_PIXELS: usize = 64 << 20;

/// How the image is fitted to the vision tower's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageMode {
    /// Exactly what `preprocessor_config.json` says (what HF's `LlavaProcessor` does): for
    /// LLaVA, resize the shortest edge, then centre crop, so the sides of a non-square image
    /// are cut off.
    #[default]
    Default,
    /// Resize the shortest edge, then centre crop to the output size, even if the config
    /// disables cropping.
    Crop,
    /// Resize the whole image to the output size, ignoring the aspect ratio: nothing is lost,
    /// the image is stretched.
    Resize,
    /// Expand the image to a square filled with the mean colour (`image_mean` × 255, truncated
    /// as LLaVA's `expand2square` does), the image centred, then the default processing:
    /// nothing is lost nor stretched (LLaVA-1.5's own `image_aspect_ratio = pad`).
    Pad,
}

impl ImageMode {
    /// Every mode, in the order of the command line's help.
    pub const ALL: [ImageMode; 4] = [
        ImageMode::Default,
        ImageMode::Crop,
        ImageMode::Resize,
        ImageMode::Pad,
    ];

    /// The mode's name as the command line spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageMode::Default => "default",
            ImageMode::Crop => "crop",
            ImageMode::Resize => "resize",
            ImageMode::Pad => "pad",
        }
    }
}

impl fmt::Display for ImageMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ImageMode {
    type Err = ProcessingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageMode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ProcessingError::UnknownImageMode(s.to_string()))
    }
}

/// A preprocessed image: `data` holds `shape = [3, height, width]` values, channel-major.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelValues {
    /// `[channels, height, width]`; channels is always 3.
    pub shape: [usize; 3],
    /// The values, row-major in `shape` order.
    pub data: Vec<f32>,
}

/// Turns decoded images into the vision tower's pixel values, as configured by a model's
/// `preprocessor_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    config: PreprocessorConfig,
}

/// Converts to RGB8; with `composite`, transparency is composited onto white (as transformers'
/// `convert_to_rgb` does), otherwise the alpha channel is dropped.
pub(crate) fn to_rgb(img: &DynamicImage, composite: bool) -> Cow<'_, RgbImage> {
    if let DynamicImage::ImageRgb8(rgb) = img {
        return Cow::Borrowed(rgb);
    }
    if let Some(eight) = high_bytes(img) {
        return Cow::Owned(to_rgb(&eight, composite).into_owned());
    }
    if !(composite && img.color().has_alpha()) {
        return Cow::Owned(img.to_rgb8());
    }
    let rgba = img.to_rgba8();
    let mut out = RgbImage::new(rgba.width(), rgba.height());
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let a = f32::from(p.0[3]) / 255.0;
        for c in 0..3 {
            o.0[c] = (f32::from(p.0[c]) * a + 255.0 * (1.0 - a)).round() as u8;
        }
    }
    Cow::Owned(out)
}

/// 16-bit images reduced to 8 bits by keeping the high byte, as Pillow reads 16-bit PNGs
/// (the `image` crate's own conversion rounds, which differs by one level); `None` for
/// images that are not 16-bit integer images.
fn high_bytes(img: &DynamicImage) -> Option<DynamicImage> {
    fn map<P, Q>(
        buf: &image::ImageBuffer<P, Vec<u16>>,
        f: impl Fn(&P) -> Q,
    ) -> image::ImageBuffer<Q, Vec<u8>>
    where
        P: image::Pixel<Subpixel = u16>,
        Q: image::Pixel<Subpixel = u8>,
    {
        let mut out = image::ImageBuffer::new(buf.width(), buf.height());
        for (o, p) in out.pixels_mut().zip(buf.pixels()) {
            *o = f(p);
        }
        out
    }
    let hi = |v: u16| (v >> 8) as u8;
    Some(match img {
        DynamicImage::ImageRgb16(b) => DynamicImage::ImageRgb8(map(b, |p| image::Rgb(p.0.map(hi)))),
        DynamicImage::ImageRgba16(b) => {
            DynamicImage::ImageRgba8(map(b, |p| image::Rgba(p.0.map(hi))))
        }
        DynamicImage::ImageLuma16(b) => {
            DynamicImage::ImageLuma8(map(b, |p| image::Luma(p.0.map(hi))))
        }
        DynamicImage::ImageLumaA16(b) => {
            DynamicImage::ImageLumaA8(map(b, |p| image::LumaA(p.0.map(hi))))
        }
        _ => return None,
    })
}

/// LLaVA's `expand2square`: a square of `color` with the image pasted at its centre
/// (offset `(long - short) / 2`, floored).
fn expand_to_square(img: &RgbImage, color: [u8; 3]) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == h {
        return img.clone();
    }
    let side = w.max(h);
    let mut out = RgbImage::from_pixel(side, side, image::Rgb(color));
    let (dx, dy) = if w > h {
        (0, (w - h) / 2)
    } else {
        ((h - w) / 2, 0)
    };
    image::imageops::replace(&mut out, img, i64::from(dx), i64::from(dy));
    out
}

impl ImageProcessor {
    /// A processor with the given settings.
    pub fn new(config: PreprocessorConfig) -> Self {
        ImageProcessor { config }
    }

    /// Reads a `preprocessor_config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ProcessingError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProcessingError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// Parses the JSON text of a `preprocessor_config.json`.
    pub fn from_json(text: &str) -> Result<Self, ProcessingError> {
        Ok(Self::new(PreprocessorConfig::from_json(text)?))
    }

    /// The settings in use.
    pub fn config(&self) -> &PreprocessorConfig {
        &self.config
    }

    /// The (height, width) of the pixel values the vision tower expects: the crop size when
    /// the config crops, else the fixed resize size, else the shortest edge squared. Modes
    /// crop, resize and pad (on a cropping or fixed-size config) always produce this size;
    /// default mode on a config that neither crops nor resizes to a fixed size produces an
    /// image-dependent size, exactly as transformers does.
    pub fn output_size(&self) -> (usize, usize) {
        let c = &self.config;
        if c.do_center_crop {
            return c.crop_size;
        }
        match c.size {
            ResizeTarget::Exact { height, width } if c.do_resize => (height, width),
            ResizeTarget::ShortestEdge { shortest, .. } if c.do_resize => (shortest, shortest),
            _ => c.crop_size,
        }
    }

    /// The padding colour of [`ImageMode::Pad`]: `int(x * 255)` for each channel mean.
    pub fn pad_color(&self) -> [u8; 3] {
        self.config
            .image_mean
            .map(|m| (m * 255.0).clamp(0.0, 255.0) as u8)
    }

    /// Preprocesses a decoded image into `[3, h, w]` pixel values for `mode`.
    #[tracing::instrument(name = "preprocess", skip_all)]
    pub fn preprocess(
        &self,
        img: &DynamicImage,
        mode: ImageMode,
    ) -> Result<PixelValues, ProcessingError> {
        if img.width() == 0 || img.height() == 0 {
            return Err(ProcessingError::EmptyImage {
                what: "the image".into(),
                width: img.width(),
                height: img.height(),
            });
        }
        let mut rgb = to_rgb(img, self.config.do_convert_rgb);
        if mode == ImageMode::Pad {
            rgb = Cow::Owned(expand_to_square(&rgb, self.pad_color()));
        }
        let (h, w) = (rgb.height() as usize, rgb.width() as usize);
        let (resize_to, crop) = self.plan(h, w, mode);
        let (rh, rw) = resize_to.unwrap_or((h, w));
        let (ch, cw) = crop.unwrap_or((rh, rw));
        if ch.saturating_mul(cw) > MAX_OUTPUT_PIXELS {
            return Err(ProcessingError::ResizedTooLarge {
                width: cw,
                height: ch,
            });
        }
        let pixels = self.crop_resized(&rgb, (rh, rw), (ch, cw));
        Ok(self.normalise(&pixels, ch, cw))
    }

    /// The rectangle `[x0, y0, x1, y1]` of a `width`×`height` image, in its pixels, that the
    /// pixel values of `mode` show: the crop window mapped back through the resize (and the
    /// square padding of [`ImageMode::Pad`]), kept inside the centred square of the longer side.
    pub fn covered_rect(&self, width: u32, height: u32, mode: ImageMode) -> [f64; 4] {
        let (w, h) = (width as usize, height as usize);
        let side = w.max(h);
        let (ox, oy, sw, sh) = if mode == ImageMode::Pad && w != h {
            if w > h {
                (0, (w - h) / 2, side, side)
            } else {
                ((h - w) / 2, 0, side, side)
            }
        } else {
            (0, 0, w, h)
        };
        let (resize_to, crop) = self.plan(sh, sw, mode);
        let (rh, rw) = resize_to.unwrap_or((sh, sw));
        let (ch, cw) = crop.unwrap_or((rh, rw));
        let top = (rh as i64 - ch as i64).div_euclid(2) as f64;
        let left = (rw as i64 - cw as i64).div_euclid(2) as f64;
        let sx = sw as f64 / rw.max(1) as f64;
        let sy = sh as f64 / rh.max(1) as f64;
        let (ox, oy) = (ox as f64, oy as f64);
        let (lo_x, lo_y) = (
            (w as f64 - side as f64) / 2.0,
            (h as f64 - side as f64) / 2.0,
        );
        let (hi_x, hi_y) = (lo_x + side as f64, lo_y + side as f64);
        [
            (left * sx - ox).clamp(lo_x, hi_x),
            (top * sy - oy).clamp(lo_y, hi_y),
            ((left + cw as f64) * sx - ox).clamp(lo_x, hi_x),
            ((top + ch as f64) * sy - oy).clamp(lo_y, hi_y),
        ]
    }

    /// Decides the resize size and the crop size for an `h`×`w` image.
    #[allow(clippy::type_complexity)]
    fn plan(
        &self,
        h: usize,
        w: usize,
        mode: ImageMode,
    ) -> (Option<(usize, usize)>, Option<(usize, usize)>) {
        let c = &self.config;
        let out = self.output_size();
        match mode {
            ImageMode::Default | ImageMode::Pad => (
                c.do_resize.then(|| c.resized_size(h, w)),
                c.do_center_crop.then_some(c.crop_size),
            ),
            ImageMode::Crop => {
                let resized = match c.size {
                    ResizeTarget::ShortestEdge { .. } => c.resized_size(h, w),
                    ResizeTarget::Exact { .. } => {
                        let shortest_only = PreprocessorConfig {
                            size: ResizeTarget::ShortestEdge {
                                shortest: out.0.max(out.1),
                                longest: None,
                            },
                            ..c.clone()
                        };
                        shortest_only.resized_size(h, w)
                    }
                };
                (Some(resized), Some(out))
            }
            ImageMode::Resize => (Some(out), None),
        }
    }

    /// Resizes `img` to `resized` (h, w) and centre crops it to `crop` (h, w) as transformers
    /// does: offsets `(resized - crop) // 2` (floored), zero pixels where the crop reaches past
    /// the resized image. Only the pixels inside the crop are computed.
    fn crop_resized(
        &self,
        img: &RgbImage,
        resized: (usize, usize),
        crop: (usize, usize),
    ) -> Vec<u8> {
        let (rh, rw) = resized;
        let (ch, cw) = crop;
        let top = (rh as i64 - ch as i64).div_euclid(2);
        let left = (rw as i64 - cw as i64).div_euclid(2);
        let y0 = top.max(0) as usize;
        let x0 = left.max(0) as usize;
        let y1 = ((top + ch as i64).min(rh as i64)).max(y0 as i64) as usize;
        let x1 = ((left + cw as i64).min(rw as i64)).max(x0 as i64) as usize;
        let win = Window {
            x: x0,
            y: y0,
            width: x1 - x0,
            height: y1 - y0,
        };
        let src = Rgb8 {
            data: img.as_raw(),
            width: img.width() as usize,
            height: img.height() as usize,
        };
        let part = resize_window(src, rw, rh, win, self.config.resample);
        if win.width == cw && win.height == ch {
            return part;
        }
        // The crop reaches past the resized image: place the part inside a zero canvas.
        let mut out = vec![0u8; ch * cw * 3];
        let oy = (y0 as i64 - top) as usize;
        let ox = (x0 as i64 - left) as usize;
        for y in 0..win.height {
            let dst = ((oy + y) * cw + ox) * 3;
            out[dst..dst + win.width * 3]
                .copy_from_slice(&part[y * win.width * 3..(y + 1) * win.width * 3]);
        }
        out
    }

    /// The 8-bit RGB picture behind `pixels` (normalisation and rescaling undone, rounded and
    /// clamped): what the vision tower saw, for drawing under attention maps.
    pub fn to_image(&self, pixels: &PixelValues) -> RgbImage {
        let c = &self.config;
        let [_, h, w] = pixels.shape;
        let plane = h * w;
        let value = |ch: usize, i: usize| {
            let mut x = f64::from(pixels.data.get(ch * plane + i).copied().unwrap_or(0.0));
            if c.do_normalize {
                x = x * f64::from(c.image_std[ch] as f32) + f64::from(c.image_mean[ch] as f32);
            }
            if c.do_rescale && c.rescale_factor != 0.0 {
                x /= c.rescale_factor;
            }
            x.round().clamp(0.0, 255.0) as u8
        };
        RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let i = y as usize * w + x as usize;
            image::Rgb([value(0, i), value(1, i), value(2, i)])
        })
    }

    /// Rescale and normalise, in transformers' precision: `(v as f64 * factor) as f32`, then
    /// `(x - mean) / std` in f32; the result is channel-major.
    pub(crate) fn normalise(&self, pixels: &[u8], h: usize, w: usize) -> PixelValues {
        let c = &self.config;
        let mean = c.image_mean.map(|m| m as f32);
        let std = c.image_std.map(|s| s as f32);
        let plane = h * w;
        let mut data = vec![0f32; 3 * plane];
        for (i, px) in pixels.chunks_exact(3).enumerate() {
            for ch in 0..3 {
                let v = px[ch];
                let mut x = if c.do_rescale {
                    (f64::from(v) * c.rescale_factor) as f32
                } else {
                    f32::from(v)
                };
                if c.do_normalize {
                    x = (x - mean[ch]) / std[ch];
                }
                data[ch * plane + i] = x;
            }
        }
        PixelValues {
            shape: [3, h, w],
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn processor(json: &str) -> ImageProcessor {
        ImageProcessor::from_json(json).unwrap()
    }

    #[test]
    fn modes_parse_and_display() {
        for m in ImageMode::ALL {
            assert_eq!(m.to_string().parse::<ImageMode>().unwrap(), m);
        }
        assert!("square".parse::<ImageMode>().is_err());
    }

    #[test]
    fn pad_color_truncates_like_llava() {
        assert_eq!(processor("{}").pad_color(), [122, 116, 104]);
    }

    #[test]
    fn crop_larger_than_image_pads_with_zero_pixels() {
        let p = processor(r#"{"do_resize": false, "crop_size": 4, "do_normalize": false}"#);
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(2, 2, image::Rgb([255, 255, 255])));
        let px = p.preprocess(&img, ImageMode::Default).unwrap();
        assert_eq!(px.shape, [3, 4, 4]);
        // top = (2 - 4) // 2 = -1: image rows land on rows 1 and 2.
        let row: Vec<f32> = px.data[4..8].to_vec();
        assert_eq!(row, vec![0.0, 1.0, 1.0, 0.0]);
        assert_eq!(&px.data[0..4], &[0.0; 4]);
    }

    #[test]
    fn sixteen_bit_images_keep_the_high_byte() {
        let img = image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_pixel(
            1,
            1,
            image::Rgb([200, 65535, 16200]),
        );
        let rgb = to_rgb(&DynamicImage::ImageRgb16(img), true).into_owned();
        assert_eq!(rgb.get_pixel(0, 0).0, [0, 255, 63]);
        let img = image::ImageBuffer::<image::LumaA<u16>, Vec<u16>>::from_pixel(
            1,
            1,
            image::LumaA([65535, 65535]),
        );
        let rgb = to_rgb(&DynamicImage::ImageLumaA16(img), true).into_owned();
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
    }

    #[test]
    fn to_image_undoes_the_normalisation() {
        let p = processor(r#"{"size": 8, "crop_size": 8}"#);
        let img = RgbImage::from_fn(8, 8, |x, y| {
            image::Rgb([(x * 31) as u8, (y * 29) as u8, 200])
        });
        let px = p
            .preprocess(&DynamicImage::ImageRgb8(img.clone()), ImageMode::Default)
            .unwrap();
        assert_eq!(p.to_image(&px), img);
    }

    #[test]
    fn covered_rect_maps_the_crop_back_to_the_image() {
        let p = processor(r#"{"size": 8, "crop_size": 8}"#);
        assert_eq!(
            p.covered_rect(16, 8, ImageMode::Default),
            [4.0, 0.0, 12.0, 8.0]
        );
        assert_eq!(
            p.covered_rect(16, 8, ImageMode::Resize),
            [0.0, 0.0, 16.0, 8.0]
        );
        assert_eq!(
            p.covered_rect(16, 8, ImageMode::Pad),
            [0.0, -4.0, 16.0, 12.0]
        );
    }

    #[test]
    fn expand_to_square_centres() {
        let img = RgbImage::from_pixel(4, 2, image::Rgb([9, 9, 9]));
        let sq = expand_to_square(&img, [1, 2, 3]);
        assert_eq!(sq.dimensions(), (4, 4));
        assert_eq!(sq.get_pixel(0, 0).0, [1, 2, 3]);
        assert_eq!(sq.get_pixel(0, 1).0, [9, 9, 9]);
        assert_eq!(sq.get_pixel(3, 3).0, [1, 2, 3]);
    }
}
