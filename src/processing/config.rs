//! `preprocessor_config.json`, with the defaults of the transformers image processor it names.
//!
//! Two processors are known, both built on the same steps (convert to RGB, resize with a
//! Pillow filter, optional centre crop, rescale, normalise): `CLIPImageProcessor` (shortest
//! edge 224, centre crop 224, OpenAI CLIP mean/std) and `SiglipImageProcessor` (resize to
//! exactly `size {height, width}`, default 224×224, no crop, mean and std 0.5). A file naming
//! no type, or another one, takes CLIP's defaults.

use serde_json::Value;

use super::error::ProcessingError;
use super::resample::Filter;

/// OpenAI CLIP's per-channel mean, transformers' default `image_mean`.
pub const CLIP_MEAN: [f64; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's per-channel standard deviation, transformers' default `image_std`.
pub const CLIP_STD: [f64; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// The standard mean and std SigLIP normalises with (transformers' IMAGENET_STANDARD_*).
pub const SIGLIP_MEAN_STD: [f64; 3] = [0.5, 0.5, 0.5];

const WHAT: &str = "preprocessor_config.json";

/// Which transformers image processor `image_processor_type` names; it decides the defaults
/// of every field the file leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProcessorKind {
    /// `CLIPImageProcessor` (also used when the file names no type or another one).
    #[default]
    Clip,
    /// `SiglipImageProcessor` (and its `Fast` / `Pil` variants).
    Siglip,
    /// `LlavaOnevisionImageProcessor`: exact 384×384, no crop, OpenAI CLIP mean/std.
    LlavaOnevision,
}

impl ProcessorKind {
    /// The kind named by an `image_processor_type` value.
    pub fn from_type_name(name: &str) -> Self {
        if name.starts_with("SiglipImageProcessor") {
            ProcessorKind::Siglip
        } else if name.starts_with("LlavaOnevisionImageProcessor") {
            ProcessorKind::LlavaOnevision
        } else {
            ProcessorKind::Clip
        }
    }

    /// The processor's defaults, as its transformers class sets them.
    pub fn defaults(self) -> PreprocessorConfig {
        match self {
            ProcessorKind::Clip => PreprocessorConfig::default(),
            ProcessorKind::Siglip => PreprocessorConfig {
                kind: ProcessorKind::Siglip,
                size: ResizeTarget::Exact {
                    height: 224,
                    width: 224,
                },
                do_center_crop: false,
                image_mean: SIGLIP_MEAN_STD,
                image_std: SIGLIP_MEAN_STD,
                ..PreprocessorConfig::default()
            },
            ProcessorKind::LlavaOnevision => PreprocessorConfig {
                kind: ProcessorKind::LlavaOnevision,
                size: ResizeTarget::Exact {
                    height: 384,
                    width: 384,
                },
                do_center_crop: false,
                ..PreprocessorConfig::default()
            },
        }
    }
}

/// How `size` asks the image to be resized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTarget {
    /// Scale so the shorter side is `shortest` (keeping the aspect ratio); with `longest`,
    /// the longer side is kept at most that long (transformers' `get_size_with_aspect_ratio`).
    ShortestEdge {
        /// Target length of the shorter side.
        shortest: usize,
        /// Optional cap on the longer side.
        longest: Option<usize>,
    },
    /// Scale to exactly this size, ignoring the aspect ratio.
    Exact {
        /// Target height.
        height: usize,
        /// Target width.
        width: usize,
    },
}

/// The image processor settings, every missing field defaulted as the transformers class
/// named by `image_processor_type` defaults it (the field docs give CLIP's defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessorConfig {
    /// The processor the file names (`image_processor_type`).
    pub kind: ProcessorKind,
    /// Resize at all (`do_resize`, default true).
    pub do_resize: bool,
    /// Resize target (`size`, default shortest edge 224).
    pub size: ResizeTarget,
    /// Resampling filter (`resample`, default 3 = bicubic).
    pub resample: Filter,
    /// Centre crop after resizing (`do_center_crop`, default true).
    pub do_center_crop: bool,
    /// Crop size as (height, width) (`crop_size`, default 224×224).
    pub crop_size: (usize, usize),
    /// Multiply by `rescale_factor` (`do_rescale`, default true).
    pub do_rescale: bool,
    /// Rescale factor (default 1/255).
    pub rescale_factor: f64,
    /// Normalise with mean and std (`do_normalize`, default true).
    pub do_normalize: bool,
    /// Per-channel mean (`image_mean`, default OpenAI CLIP's).
    pub image_mean: [f64; 3],
    /// Per-channel std (`image_std`, default OpenAI CLIP's).
    pub image_std: [f64; 3],
    /// Convert to RGB, compositing transparency on white (`do_convert_rgb`, default true).
    pub do_convert_rgb: bool,
}

impl Default for PreprocessorConfig {
    fn default() -> Self {
        PreprocessorConfig {
            kind: ProcessorKind::Clip,
            do_resize: true,
            size: ResizeTarget::ShortestEdge {
                shortest: 224,
                longest: None,
            },
            resample: Filter::Bicubic,
            do_center_crop: true,
            crop_size: (224, 224),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
            do_convert_rgb: true,
        }
    }
}

fn positive(v: &Value, field: &str) -> Result<usize, ProcessingError> {
    match v.as_u64() {
        Some(n) if n > 0 && n <= 1 << 20 => Ok(n as usize),
        _ => Err(ProcessingError::config(
            WHAT,
            format!("`{field}` must be a positive integer, found {v}"),
        )),
    }
}

fn flag(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    default: bool,
) -> Result<bool, ProcessingError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(ProcessingError::config(
            WHAT,
            format!("`{key}` must be true or false, found {v}"),
        )),
    }
}

fn channels(v: &Value, key: &str, nonzero: bool) -> Result<[f64; 3], ProcessingError> {
    let bad = || {
        ProcessingError::config(
            WHAT,
            format!("`{key}` must be a number or 3 numbers, found {v}"),
        )
    };
    let out = match v {
        Value::Number(n) => {
            let x = n.as_f64().ok_or_else(bad)?;
            [x; 3]
        }
        Value::Array(a) if a.len() == 3 => {
            let mut out = [0f64; 3];
            for (o, x) in out.iter_mut().zip(a) {
                *o = x.as_f64().ok_or_else(bad)?;
            }
            out
        }
        _ => return Err(bad()),
    };
    if out.iter().any(|x| !x.is_finite() || (nonzero && *x == 0.0)) {
        return Err(ProcessingError::config(
            WHAT,
            format!("`{key}` holds a zero or non-finite value: {v}"),
        ));
    }
    Ok(out)
}

fn height_width(v: &Value, key: &str) -> Result<Option<(usize, usize)>, ProcessingError> {
    match (v.get("height"), v.get("width")) {
        (Some(h), Some(w)) => Ok(Some((
            positive(h, &format!("{key}.height"))?,
            positive(w, &format!("{key}.width"))?,
        ))),
        _ => Ok(None),
    }
}

fn parse_size(v: &Value) -> Result<ResizeTarget, ProcessingError> {
    if v.is_number() {
        // A bare integer with `default_to_square = False` (CLIP) means the shortest edge.
        return Ok(ResizeTarget::ShortestEdge {
            shortest: positive(v, "size")?,
            longest: None,
        });
    }
    if let Some(s) = v.get("shortest_edge") {
        let longest = match v.get("longest_edge") {
            None | Some(Value::Null) => None,
            Some(l) => Some(positive(l, "size.longest_edge")?),
        };
        return Ok(ResizeTarget::ShortestEdge {
            shortest: positive(s, "size.shortest_edge")?,
            longest,
        });
    }
    if let Some((height, width)) = height_width(v, "size")? {
        return Ok(ResizeTarget::Exact { height, width });
    }
    Err(ProcessingError::config(
        WHAT,
        format!("`size` must be an integer, {{\"shortest_edge\": n}} or {{\"height\": h, \"width\": w}}, found {v}"),
    ))
}

fn parse_crop(v: &Value) -> Result<(usize, usize), ProcessingError> {
    if v.is_number() {
        let n = positive(v, "crop_size")?;
        return Ok((n, n));
    }
    if let Some(hw) = height_width(v, "crop_size")? {
        return Ok(hw);
    }
    if let Some(s) = v.get("shortest_edge") {
        let n = positive(s, "crop_size.shortest_edge")?;
        return Ok((n, n));
    }
    Err(ProcessingError::config(
        WHAT,
        format!("`crop_size` must be an integer or {{\"height\": h, \"width\": w}}, found {v}"),
    ))
}

impl PreprocessorConfig {
    /// Parses the JSON text of a `preprocessor_config.json`.
    pub fn from_json(text: &str) -> Result<Self, ProcessingError> {
        let root: Value =
            serde_json::from_str(text).map_err(|e| ProcessingError::config(WHAT, e))?;
        let obj = root
            .as_object()
            .ok_or_else(|| ProcessingError::config(WHAT, "the file is not a JSON object"))?;
        let present = |k: &str| obj.get(k).filter(|v| !v.is_null());
        let kind = match present("image_processor_type") {
            None => ProcessorKind::Clip,
            Some(v) => ProcessorKind::from_type_name(v.as_str().ok_or_else(|| {
                ProcessingError::config(
                    WHAT,
                    format!("`image_processor_type` must be a string, found {v}"),
                )
            })?),
        };
        let d = kind.defaults();
        let resample = match present("resample") {
            None => d.resample,
            Some(v) => v.as_i64().and_then(Filter::from_pil).ok_or_else(|| {
                ProcessingError::config(
                    WHAT,
                    format!("`resample` must be a Pillow filter code 0-5, found {v}"),
                )
            })?,
        };
        let rescale_factor = match present("rescale_factor") {
            None => d.rescale_factor,
            Some(v) => v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
                ProcessingError::config(
                    WHAT,
                    format!("`rescale_factor` must be a number, found {v}"),
                )
            })?,
        };
        Ok(PreprocessorConfig {
            kind,
            do_resize: flag(obj, "do_resize", d.do_resize)?,
            size: present("size")
                .map(parse_size)
                .transpose()?
                .unwrap_or(d.size),
            resample,
            do_center_crop: flag(obj, "do_center_crop", d.do_center_crop)?,
            crop_size: present("crop_size")
                .map(parse_crop)
                .transpose()?
                .unwrap_or(d.crop_size),
            do_rescale: flag(obj, "do_rescale", d.do_rescale)?,
            rescale_factor,
            do_normalize: flag(obj, "do_normalize", d.do_normalize)?,
            image_mean: present("image_mean")
                .map(|v| channels(v, "image_mean", false))
                .transpose()?
                .unwrap_or(d.image_mean),
            image_std: present("image_std")
                .map(|v| channels(v, "image_std", true))
                .transpose()?
                .unwrap_or(d.image_std),
            do_convert_rgb: flag(obj, "do_convert_rgb", d.do_convert_rgb)?,
        })
    }

    /// The (height, width) transformers' resize step produces for an image of `height`×`width`
    /// (each side at least 1: an extreme aspect ratio under a `longest_edge` cap could
    /// otherwise round a side to 0).
    pub fn resized_size(&self, height: usize, width: usize) -> (usize, usize) {
        let (h, w) = self.raw_resized_size(height, width);
        (h.max(1), w.max(1))
    }

    fn raw_resized_size(&self, height: usize, width: usize) -> (usize, usize) {
        match self.size {
            ResizeTarget::Exact { height, width } => (height, width),
            ResizeTarget::ShortestEdge {
                shortest,
                longest: None,
            } => {
                // get_resize_output_image_size(default_to_square=False): int truncation.
                let (short, long) = if width <= height {
                    (width, height)
                } else {
                    (height, width)
                };
                let new_long = (shortest as f64 * long as f64 / short as f64) as usize;
                if width <= height {
                    (new_long, shortest)
                } else {
                    (shortest, new_long)
                }
            }
            ResizeTarget::ShortestEdge {
                shortest,
                longest: Some(max),
            } => size_with_aspect_ratio(height, width, shortest, max),
        }
    }
}

/// transformers' `get_size_with_aspect_ratio` (shortest edge with a cap on the longest).
fn size_with_aspect_ratio(
    height: usize,
    width: usize,
    size: usize,
    max_size: usize,
) -> (usize, usize) {
    let (h, w) = (height as f64, width as f64);
    let (min_o, max_o) = (h.min(w), h.max(w));
    let mut size = size;
    let mut raw: Option<f64> = None;
    if max_o / min_o * size as f64 > max_size as f64 {
        let r = max_size as f64 * min_o / max_o;
        raw = Some(r);
        size = r.round_ties_even() as usize;
    }
    if (height <= width && height == size) || (width <= height && width == size) {
        (height, width)
    } else if width < height {
        let oh = match raw {
            Some(r) => (r * h / w) as usize,
            None => (size as f64 * h / w) as usize,
        };
        (oh, size)
    } else {
        let ow = match raw {
            Some(r) => (r * w / h) as usize,
            None => (size as f64 * w / h) as usize,
        };
        (size, ow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llava_config_parses() {
        let c = PreprocessorConfig::from_json(
            r#"{"crop_size": {"height": 336, "width": 336}, "do_center_crop": true,
                "size": {"shortest_edge": 336}, "resample": 3, "rescale_factor": 0.00392156862745098}"#,
        )
        .unwrap();
        assert_eq!(c.crop_size, (336, 336));
        assert_eq!(
            c.size,
            ResizeTarget::ShortestEdge {
                shortest: 336,
                longest: None
            }
        );
        assert_eq!(c.image_mean, CLIP_MEAN);
    }

    #[test]
    fn legacy_int_sizes_parse() {
        let c = PreprocessorConfig::from_json(r#"{"size": 224, "crop_size": 224}"#).unwrap();
        assert_eq!(c.crop_size, (224, 224));
        assert_eq!(
            c.size,
            ResizeTarget::ShortestEdge {
                shortest: 224,
                longest: None
            }
        );
    }

    #[test]
    fn bad_values_are_errors() {
        for bad in [
            r#"{"size": "big"}"#,
            r#"{"resample": 9}"#,
            r#"{"image_std": [0, 1, 1]}"#,
            "[1]",
            "{",
        ] {
            assert!(PreprocessorConfig::from_json(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shortest_edge_truncates() {
        let c = PreprocessorConfig::from_json(r#"{"size": {"shortest_edge": 336}}"#).unwrap();
        // 640x480 (w x h): short 480 -> 336, long int(336*640/480) = 448.
        assert_eq!(c.resized_size(480, 640), (336, 448));
        // 333 x 500 (h x w): int(336 * 500 / 333) = 504.
        assert_eq!(c.resized_size(333, 500), (336, 504));
        assert_eq!(c.resized_size(700, 300), (784, 336));
    }

    #[test]
    fn longest_edge_caps_and_never_reaches_zero() {
        let c = PreprocessorConfig::from_json(
            r#"{"size": {"shortest_edge": 100, "longest_edge": 200}}"#,
        )
        .unwrap();
        // 50 x 400 (h x w): 100 * 8 > 200, raw = 200 * 50 / 400 = 25 -> (25, 200).
        assert_eq!(c.resized_size(50, 400), (25, 200));
        assert_eq!(c.resized_size(1, 10_000), (1, 200));
    }
}
